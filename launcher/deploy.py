"""Deployments beyond one box: the topology, each node's own command, and scale-out advice. Pure: no I/O.

Every node's command comes from `launcher.validate.command` (rendered, translated and checked for
the target vLLM, the per-node flags included), so a node runs what `render` prints. The
multi-node facts (flags, per-node environment, start order) are docs/multi-node.md#rendering and
vLLM 0.33's `ParallelConfig` / `vllm serve --headless`; what two real nodes on one machine showed
(start order, ports, what a rank does without its head) is docs/multi-node.md#what-the-runs-showed.
The TP8 advice is docs/memory-model.md#tensor-and-pipeline-parallel and docs/multi-node.md#which-layout.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Protocol

from launcher.defaults import DEFAULT_PORT
from launcher.errors import ProfileError
from launcher.render import Arg, Rendered, comment_safe, format_env, format_shell, format_yaml, split_secrets
from launcher.schema import Deployment, Profile
from launcher.topology import Topology, deployment_of, topology

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
    from launcher.validate import command

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


# ------------------------------------------------------------------------------ scale-out advice


class FitLike(Protocol):
    """What the advice reads from a fit estimate (launcher.fit.FitResult has these)."""

    @property
    def concurrency_at_max_len(self) -> float: ...

    @property
    def kv_cache_tokens(self) -> int: ...

    @property
    def verdict(self) -> str: ...


@dataclass(frozen=True)
class Option:
    """One way to use the GPUs: `engines` copies of a TP x PP engine, with its fit."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    engines: int  # data parallel ranks (independent for this dense model)
    concurrency_per_engine: float  # full-length requests one engine holds
    kv_tokens_per_engine: int
    verdict: str

    @property
    def gpus_per_engine(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpus(self) -> int:
        return self.gpus_per_engine * self.engines

    @property
    def concurrency(self) -> float:
        return self.concurrency_per_engine * self.engines

    @property
    def label(self) -> str:
        engine = f"TP{self.tensor_parallel_size}" + (f" x PP{self.pipeline_parallel_size}" if self.pipeline_parallel_size > 1 else "")
        return f"{self.engines} x {engine}" if self.engines > 1 else engine

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "engines": self.engines,
            "gpus": self.gpus,
            "concurrency_per_engine": round(self.concurrency_per_engine, 2),
            "concurrency": round(self.concurrency, 2),
            "kv_tokens_per_engine": self.kv_tokens_per_engine,
            "kv_tokens": self.kv_tokens_per_engine * self.engines,
            "verdict": self.verdict,
        }


# (tensor parallel, data parallel) -> the shipped profile that is exactly that layout of this model.
SHIPPED_ALTERNATIVES = {(4, 2): "tp4x2"}


@dataclass(frozen=True)
class Advice:
    """TP above the KV-head count replicates KV heads; the same GPUs as smaller-TP engines hold more."""

    kv_heads: int
    kv_head_copies: int  # how many times each KV head is stored at the current TP
    max_model_len: int
    current: Option
    alternative: Option  # same GPUs, TP = KV heads, more engines
    profile: Optional[str]  # shipped profile with the alternative's layout
    overrides: tuple[str, ...]  # --set values that turn the current profile into the alternative

    @property
    def gain(self) -> float:
        return self.alternative.concurrency / self.current.concurrency if self.current.concurrency > 0 else float("inf")

    @property
    def message(self) -> str:
        c, a = self.current, self.alternative
        one = replace(a, engines=1)
        use = f"profile {self.profile}, or " if self.profile else ""
        sets = " ".join(f"--set {o}" for o in self.overrides)
        return (
            f"TP{c.tensor_parallel_size} stores each of this model's {self.kv_heads} KV heads {self._times()} "
            f"(KV heads are replicated above TP{self.kv_heads}), so a GPU holds no more KV per token than at TP{a.tensor_parallel_size}: "
            f"{c.label} on {c.gpus} GPUs holds about {c.concurrency:.1f} full-length ({self.max_model_len}-token) requests, "
            f"{one.label} holds about {one.concurrency:.1f} on {one.gpus} GPUs. "
            f"On the same {c.gpus} GPUs, {a.label} (data parallel; {use}{sets}) holds about {a.concurrency:.1f} "
            f"({self.gain:.1f}x)."
        )

    def _times(self) -> str:
        return {2: "twice", 3: "three times"}.get(self.kv_head_copies, f"{self.kv_head_copies} times")

    def to_json(self) -> dict[str, Any]:
        return {
            "kv_heads": self.kv_heads,
            "kv_head_copies": self.kv_head_copies,
            "max_model_len": self.max_model_len,
            "current": self.current.to_json(),
            "alternative": self.alternative.to_json(),
            "profile": self.profile,
            "overrides": list(self.overrides),
            "gain": round(self.gain, 3),
            "message": self.message,
        }


def engine_variant(profile: Profile, tensor_parallel_size: int, data_parallel_size: int = 1) -> Profile:
    """The profile with another TP/DP on one machine (validated again; deployment dropped)."""
    data = profile.model_dump(mode="python")
    pp = profile.parallel.pp
    data["parallel"] = {
        **data["parallel"],
        "tensor_parallel_size": tensor_parallel_size,
        "data_parallel_size": data_parallel_size if data_parallel_size > 1 else None,
    }
    data["hardware"] = {**data["hardware"], "gpu_count": tensor_parallel_size * pp * data_parallel_size}
    data["deployment"] = None
    return Profile.model_validate(data)


def _option(profile: Profile, tp: int, engines: int, fit_fn: Callable[[Profile], FitLike]) -> Option:
    result = fit_fn(engine_variant(profile, tp))
    return Option(
        tensor_parallel_size=tp,
        pipeline_parallel_size=profile.parallel.pp,
        engines=engines,
        concurrency_per_engine=float(result.concurrency_at_max_len),
        kv_tokens_per_engine=int(result.kv_cache_tokens),
        verdict=str(result.verdict),
    )


def scale_out_advice(profile: Profile, fit_fn: Callable[[Profile], FitLike]) -> Optional[Advice]:
    """Advice when the profile's TP replicates KV heads (TP8 on this model), else None.

    `fit_fn` estimates ONE engine of the profile it is given on the GPUs being checked (e.g.
    `lambda p: fit.estimate(fit_input_for(p, gpu))`); it is called for the current TP and for the
    alternative (TP = the KV-head count), each with data parallel 1. None as well when the profile
    spans nodes (data parallel across nodes is not rendered) or when the alternative would not start
    on these GPUs (then the large TP is what makes the model fit).
    """
    from launcher.model_facts import facts_for

    facts = facts_for(profile.facts_key)
    topo = topology(profile)
    tp = topo.tensor_parallel_size
    kv_heads = facts.num_key_value_heads
    if tp <= kv_heads or topo.multi_node:
        return None
    candidates = [t for t in facts.valid_tensor_parallel_sizes if t <= kv_heads and tp % t == 0]
    if not candidates:
        return None
    alt_tp = max(candidates)
    factor = tp // alt_tp
    dp = topo.data_parallel_size
    current = _option(profile, tp, dp, fit_fn)
    alternative = _option(profile, alt_tp, dp * factor, fit_fn)
    if alternative.verdict == "does-not-fit":
        return None
    overrides = (f"parallel.tensor_parallel_size={alt_tp}", f"parallel.data_parallel_size={dp * factor}")
    return Advice(
        kv_heads=kv_heads,
        kv_head_copies=tp // kv_heads,
        max_model_len=_max_len(profile, facts.max_position_embeddings),
        current=current,
        alternative=alternative,
        profile=SHIPPED_ALTERNATIVES.get((alt_tp, dp * factor)),
        overrides=overrides,
    )


def _max_len(profile: Profile, limit: int) -> int:
    value = profile.engine.max_model_len
    return value if isinstance(value, int) else limit
