"""The layout of a profile's engine: parallel sizes, nodes, GPUs per node, replicas. One object, pure.

`fit`, `check`, compose, k8s and the multi-node plan all read the layout from here (never from argv).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.profile.schema import Deployment, Profile, node_gpu_counts


@dataclass(frozen=True)
class Topology:
    """How one profile lays the engine out: parallel sizes, nodes, replicas."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    nodes: int
    node_gpus: tuple[int, ...]  # GPUs each node of one engine gives, rank order
    replicas: int
    backend: str  # "mp" or "ray" (multi-node only)

    @property
    def engine_gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @property
    def total_gpus(self) -> int:
        return self.engine_gpus * self.replicas

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def kind(self) -> str:
        """"multi-node" (one engine over nodes), "replicas" (independent servers) or "single"."""
        if self.multi_node:
            return "multi-node"
        return "replicas" if self.replicas > 1 else "single"

    def describe(self) -> str:
        parts = [f"tensor parallel {self.tensor_parallel_size}"]
        if self.pipeline_parallel_size > 1:
            parts.append(f"pipeline parallel {self.pipeline_parallel_size}")
        if self.data_parallel_size > 1:
            parts.append(f"data parallel {self.data_parallel_size}")
        engine = " x ".join(parts)
        if self.multi_node:
            where = f"{self.nodes} nodes x {self.node_gpus[0]} GPUs, backend {self.backend}"
        else:
            where = f"{self.engine_gpus} GPU{'s' if self.engine_gpus > 1 else ''} on one machine"
        copies = f"{self.replicas} independent replicas of " if self.replicas > 1 else ""
        return f"{copies}one engine ({engine}) on {where}; {self.total_gpus} GPUs in all"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "nodes": self.nodes,
            "node_gpus": list(self.node_gpus),
            "replicas": self.replicas,
            "backend": self.backend,
            "engine_gpus": self.engine_gpus,
            "total_gpus": self.total_gpus,
        }


def deployment_of(profile: Profile) -> Deployment:
    """The profile's deployment block, or the one-machine default."""
    return profile.deployment if profile.deployment is not None else Deployment()


def topology(profile: Profile) -> Topology:
    """The validated profile's layout (the schema's rules have already checked it)."""
    d = deployment_of(profile)
    par = profile.parallel
    return Topology(
        tensor_parallel_size=par.tp,
        pipeline_parallel_size=par.pp,
        data_parallel_size=par.dp,
        nodes=d.nodes,
        node_gpus=node_gpu_counts(profile),
        replicas=d.replicas,
        backend=d.backend,
    )


def local_gpus(profile: Profile) -> int:
    """GPUs one machine gives the engine (node 0's share of a multi-node engine)."""
    return topology(profile).node_gpus[0]
