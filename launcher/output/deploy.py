"""Deployments beyond one box: the topology and each node's own command. Pure: no I/O.

Every node's command comes from `launcher.output.validate.command` (rendered, translated and checked for
the target vLLM, the per-node flags included), so a node runs what `render` prints. The
multi-node facts (flags, per-node environment, start order) are docs/multi-node.md#rendering and
vLLM 0.33's `ParallelConfig` / `vllm serve --headless`; what two real nodes on one machine showed
(start order, ports, what a rank does without its head) is docs/multi-node.md#what-the-runs-showed.
The TP8 advice is docs/memory-model.md#tensor-and-pipeline-parallel and docs/multi-node.md#which-layout.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Optional

from launcher.defaults import DEFAULT_PORT
from launcher.errors import ProfileError
from launcher.output.render import Arg, Rendered, comment_safe, format_env, format_shell, format_yaml, split_secrets
from launcher.profile.schema import Deployment, Profile
from launcher.profile.topology import Topology, deployment_of, topology

# Flags this module adds to a node's argv; a profile's extra_args must not set them too.
MULTINODE_FLAGS = ("--nnodes", "-n", "--node-rank", "-r", "--master-addr", "--master-port", "--headless")
RAY_FLAG = "--distributed-executor-backend"
# The api_server module runs one API server and nothing else: it accepts --headless and ignores it
# (vLLM 0.32: only `vllm serve`'s own entry point starts a headless rank), so node R > 0 would start
# a second engine instead of joining node 0.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def is_distributed(profile: Profile) -> bool:
    """True when rendering needs more than the one command `render()` gives (nodes or replicas)."""
    return topology(profile).kind != "single"


# ---------------------------------------------------------------------------- per-node commands


@dataclass(frozen=True)
class NodeCommand:
    """What one machine runs: commands before vLLM (Ray), then its own `vllm serve` (None on Ray workers)."""

    rank: int
    role: str  # "head", "worker" (multi-node) or "replica" (every replica runs it)
    host: Optional[str]
    env: dict[str, str]  # everything this node sets: the profile's env plus the per-node variables
    prelude: tuple[tuple[str, ...], ...]  # run first, in order (ray start ...)
    rendered: Optional[Rendered]  # this node's vllm serve, env included; None when it runs no vLLM
    serves_http: bool
    env_from: dict[str, str] = field(default_factory=dict)  # secrets by reference: variable -> where it is read from

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node_rank": self.rank, "role": self.role, "host": self.host}
        if self.prelude:
            out["prelude"] = [list(c) for c in self.prelude]
        out["argv"] = list(self.rendered.argv) if self.rendered else []
        out["env"] = dict(self.env)
        env_from = self.rendered.env_from if self.rendered else self.env_from
        if env_from:
            out["env_from"] = dict(env_from)
        return out


@dataclass(frozen=True)
class Plan:
    """Every node's command for one copy of the engine, with the start order and the notes."""

    topology: Topology
    nodes: tuple[NodeCommand, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"topology": self.topology.to_json(), "nodes": [n.to_json() for n in self.nodes], "notes": list(self.notes)}


def _head_address(d: Deployment) -> str:
    addr = d.head_address
    if not addr or not d.hosts:
        raise ProfileError(
            "deployment.hosts: each node's command needs its address (VLLM_HOST_IP) and the head's; "
            "give one entry per node (ip, optional nccl_socket_ifname/gloo_socket_ifname), head first. "
            "For Kubernetes, render --format k8s instead"
        )
    return addr


def _check_extra_args(profile: Profile, flags: tuple[str, ...]) -> None:
    for token in profile.extra_args:
        name = token.split("=", 1)[0]
        if name in flags:
            raise ProfileError(
                f"extra_args: {name} is set per node by launcher for a multi-node engine; remove it and use the deployment block"
            )


def multinode_args(nodes: int, rank: str, master_addr: str, master_port: int, headless: bool) -> list[Arg]:
    """vLLM's native multi-node flags for one node (`rank` may be a placeholder such as $(LWS_WORKER_INDEX))."""
    args = [Arg("--headless", None, "deployment.nodes")] if headless else []
    args += [
        Arg("--nnodes", nodes, "deployment.nodes"),
        Arg("--node-rank", int(rank) if rank.isdigit() else rank, "deployment.hosts"),
        Arg("--master-addr", master_addr, "deployment.master_addr"),
        Arg("--master-port", master_port, "deployment.master_port"),
    ]
    return args


def join_endpoint(profile: Profile, rank: int) -> Optional[tuple[str, int]]:
    """(host, port) node `rank` must reach on the head before it starts; None for the head and one-machine engines.

    mp: the head's --master-addr/--master-port (node 0's torch.distributed store); ray: the Ray head's port.
    """
    topo = topology(profile)
    if not topo.multi_node or rank == 0:
        return None
    d = deployment_of(profile)
    return (_head_address(d), d.ray_port if d.backend == "ray" else d.master_port)


def _check_headless_entrypoint(profile: Profile) -> None:
    if API_SERVER_MODULE in profile.vllm.command:
        raise ProfileError(
            f"vllm.command: {' '.join(profile.vllm.command)} ignores --headless, so the nodes after node 0 would "
            "each start their own engine instead of joining it; use vLLM's CLI entry point: [vllm, serve], or "
            "[python, -m, vllm.entrypoints.cli.main, serve] with vllm.model_arg: positional"
        )


def node_env(profile: Profile, rank: int) -> dict[str, str]:
    """The profile's environment plus node `rank`'s VLLM_HOST_IP and socket interfaces."""
    d = deployment_of(profile)
    env, _, _ = split_secrets(profile.env)  # secret-looking variables go by reference (Rendered.env_from)
    if not d.hosts:
        return dict(sorted(env.items()))
    host = d.hosts[rank]
    env["VLLM_HOST_IP"] = host.ip
    nccl = host.nccl_socket_ifname or d.nccl_socket_ifname
    gloo = host.gloo_socket_ifname or d.gloo_socket_ifname
    if nccl:
        env["NCCL_SOCKET_IFNAME"] = nccl
    if gloo:
        env["GLOO_SOCKET_IFNAME"] = gloo
    return dict(sorted(env.items()))


def node_command(profile: Profile, rank: int, source: str = "the profile") -> NodeCommand:
    """Node `rank`'s own command and environment; never one command with the rank left to fill in.

    Each vLLM command is `validate.command` of the profile plus the node's flags and environment,
    checked for the profile's vLLM version (`source` names the profile file in errors).
    """
    from launcher.output.validate import command

    topo = topology(profile)
    base = command(profile, source)
    if not topo.multi_node:
        if rank != 0:
            raise ProfileError(
                f"--node-rank {rank}: this profile runs on one machine per engine"
                + (f" ({topo.replicas} independent replicas run the same command)" if topo.replicas > 1 else "")
                + "; --node-rank applies to deployment.nodes > 1"
            )
        role = "replica" if topo.replicas > 1 else "head"
        return NodeCommand(0, role, None, dict(base.env), (), base, True, dict(base.env_from))
    if not 0 <= rank < topo.nodes:
        raise ProfileError(f"--node-rank {rank}: the profile has {topo.nodes} nodes (ranks 0..{topo.nodes - 1})")
    d = deployment_of(profile)
    head = _head_address(d)
    ip = d.hosts[rank].ip
    env = node_env(profile, rank)
    if d.backend == "ray":
        _check_extra_args(profile, (RAY_FLAG,) + MULTINODE_FLAGS)
        if rank == 0:
            prelude = (("ray", "start", "--head", "--port", str(d.ray_port), "--node-ip-address", ip),)
            extra = [] if RAY_FLAG in base.argv else [Arg(RAY_FLAG, "ray", "deployment.backend")]
            return NodeCommand(0, "head", ip, env, prelude, command(profile, source, more=extra, env=env), True, dict(base.env_from))
        prelude = (("ray", "start", "--address", f"{head}:{d.ray_port}", "--node-ip-address", ip, "--block"),)
        return NodeCommand(rank, "worker", ip, env, prelude, None, False, dict(base.env_from))
    _check_extra_args(profile, MULTINODE_FLAGS)
    _check_headless_entrypoint(profile)
    args = multinode_args(topo.nodes, str(rank), head, d.master_port, headless=rank > 0)
    return NodeCommand(rank, "head" if rank == 0 else "worker", ip, env, (), command(profile, source, more=args, env=env), rank == 0,
                       dict(base.env_from))


def plan(profile: Profile, source: str = "the profile") -> Plan:
    """Every node's command for one engine (one entry for a one-machine engine), with start order and notes."""
    topo = topology(profile)
    d = deployment_of(profile)
    port = profile.server.port or DEFAULT_PORT
    notes: list[str] = [topo.describe()]
    if topo.multi_node:
        nodes = tuple(node_command(profile, r, source) for r in range(topo.nodes))
        others = "node 1" if topo.nodes == 2 else f"nodes 1..{topo.nodes - 1}"
        if topo.backend == "ray":
            notes.append(
                f"start order: node 0 `ray start --head`, then `ray start` on {others}; when `ray status` "
                f"shows {topo.nodes} nodes and {topo.engine_gpus} GPUs, run vllm serve on node 0 (only node 0 serves HTTP, port {port})"
            )
            notes.append("Ray traffic is unencrypted and can execute code: keep the nodes on a private network")
        else:
            head = f"{_head_address(d)}:{d.master_port}"
            notes.append(
                f"start order: any; node 0 alone serves HTTP (port {port}) once every node has joined at {head}. "
                f"`launcher serve --node-rank R` on {others} (--headless) waits for {head} to answer before it starts "
                "vLLM (exit 4 if it does not within --head-timeout) and stops vLLM when the head stops answering"
            )
            notes.append(
                f"network: every node reaches {head} (TCP) and each other node's VLLM_HOST_IP on ephemeral ports "
                "(vLLM's cross-node message queues and the gloo/NCCL connections); a bare headless `vllm serve` "
                "whose head is absent waits silently (torch's 30-minute default) and outlives its head"
            )
        notes.append("every node needs the same vLLM version, the same model path and the weights already downloaded")
        if topo.replicas > 1:
            notes.append(
                f"this is one of {topo.replicas} replica groups: render each group with its own deployment.hosts "
                "and spread requests over the groups' node 0"
            )
    else:
        nodes = (node_command(profile, 0, source),)
        if topo.replicas > 1:
            notes.append(f"run this same command on each of the {topo.replicas} replicas' machines (each its own GPUs)")
    if topo.replicas > 1:
        notes.append("load balancer: " + (d.load_balancer or "put a router in front of the replicas (e.g. LiteLLM, nginx, vLLM production-stack router)"))
    return Plan(topo, nodes, tuple(notes))


# ----------------------------------------------------------------------------------- formats


def _prelude_lines(node: NodeCommand) -> list[str]:
    words = [f"{k}={shlex.quote(v)}" for k, v in node.env.items()] + [f'{k}="${{{s}}}"' for k, s in node.env_from.items()]
    env = " ".join(words)
    return [(env + " " if env else "") + shlex.join(cmd) for cmd in node.prelude]


def _header(node: NodeCommand, nodes: int) -> str:
    where = f", {node.host}" if node.host else ""
    what = "serves HTTP" if node.serves_http else ("headless" if node.rendered else "Ray worker, no vllm serve")
    return comment_safe(f"# --- node {node.rank} of {nodes}: {node.role}{where} ({what}) ---")


def format_node(node: NodeCommand, fmt: str) -> str:
    """One node in one of render's formats (shell, json, yaml, env)."""
    if fmt == "json":
        return json.dumps(node.to_json(), indent=2) + "\n"
    if node.rendered is None:
        if fmt == "shell":
            return "\n".join(_prelude_lines(node)) + "\n"
        if fmt == "env":
            return format_env(replace_env(node))
        raise ProfileError(f"--format {fmt}: node {node.rank} runs no vllm serve (a Ray worker); use --format shell or json")
    text = {"shell": format_shell, "yaml": format_yaml, "env": format_env}[fmt](node.rendered)
    if fmt == "shell" and node.prelude:
        text = "\n".join(_prelude_lines(node)) + "\n" + text
    return text


def replace_env(node: NodeCommand) -> Rendered:
    """A Rendered carrying only `node`'s environment (for --format env on a node that runs no vLLM)."""
    return Rendered((), dict(node.env), dict(node.env_from), (), "", 0, ())


def format_plan(p: Plan, fmt: str) -> str:
    """Every node of a plan: shell (one block per node, headed) or json; other formats need --node-rank."""
    if fmt == "json":
        return json.dumps(p.to_json(), indent=2) + "\n"
    if fmt != "shell":
        raise ProfileError(f"--format {fmt}: each node has its own {fmt}; pick one with --node-rank R")
    blocks = [comment_safe(f"# launcher: {p.topology.describe()}")]
    multi = p.topology.multi_node
    for node in p.nodes:
        body = format_node(node, "shell")
        blocks.append((_header(node, p.topology.nodes) + "\n" if multi else "") + body.rstrip("\n"))
    return "\n\n".join(blocks) + "\n"
