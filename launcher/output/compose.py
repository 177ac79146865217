"""Docker Compose: a rendered profile in, one Compose service out. Pure: no I/O."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from launcher.defaults import DEFAULT_PORT, DEFAULT_VLLM_VERSION
from launcher.errors import ProfileError
from launcher.output.compile_cache import CONTAINER_ROOT, for_container
from launcher.output.render import Rendered, comment_safe, yaml_dump
from launcher.profile.topology import topology

if TYPE_CHECKING:
    from launcher.profile.schema import Profile

SERVICE_NAME = "vllm"
# The image built from this repository's Dockerfile; the tag names the vLLM it carries.
IMAGE_ENV = "LAUNCHER_IMAGE"
# Inside the image (vllm/vllm-openai runs as root): the Hugging Face cache and vLLM's compile/JIT cache.
HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
VLLM_CACHE_IN_CONTAINER = CONTAINER_ROOT  # the compile cache root (launcher.output.compile_cache)
HOST_HF_CACHE = "${HF_HOME:-~/.cache/huggingface}"
HOST_VLLM_CACHE = "${VLLM_CACHE_ROOT:-~/.cache/vllm}"
# A 27B checkpoint takes minutes to load, compile and capture CUDA graphs: failures before this
# do not count (docker keeps probing every START_INTERVAL meanwhile, so "healthy" comes early).
HEALTH = {"interval": "30s", "timeout": "15s", "retries": 3, "start_period": "20m", "start_interval": "10s"}
STOP_GRACE = "60s"

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_image(profile: "Profile | None" = None) -> str:
    """`${LAUNCHER_IMAGE:-launcher:vllm-X}`: the operator's image, or the tag the runbook builds."""
    version = profile.vllm.version if profile is not None else DEFAULT_VLLM_VERSION
    return f"${{{IMAGE_ENV}:-launcher:vllm-{version}}}"


def gpus_needed(profile: "Profile") -> int:
    """Tensor x pipeline x data parallel: the engine's GPUs, from the profile's one topology."""
    return topology(profile).engine_gpus


def server_port(profile: "Profile") -> int:
    return profile.server.port or DEFAULT_PORT


def _device_ids(rendered: Rendered, needed: int) -> list[str] | None:
    """The profile's CUDA_VISIBLE_DEVICES, cut to the GPUs it needs; None when it names none."""
    raw = rendered.env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids or any(i.startswith("-") for i in ids):
        raise ProfileError(f"env.CUDA_VISIBLE_DEVICES: {raw!r} hides every GPU, but the profile needs {needed}")
    if len(ids) < needed:
        raise ProfileError(
            f"env.CUDA_VISIBLE_DEVICES: lists {len(ids)} GPU(s) ({raw}) but the profile needs {needed} "
            "(tensor x pipeline x data parallel)"
        )
    return ids[:needed]  # vLLM itself would use the first `needed` of them


def _single_host(profile: "Profile") -> None:
    """One Compose service is one machine: an engine spanning nodes needs one command per node."""
    spanning_args = any(t.split("=", 1)[0] in ("--nnodes", "--node-rank", "--headless") for t in profile.extra_args)
    if topology(profile).multi_node or spanning_args:
        raise ProfileError(
            "deployment.nodes: a Compose service runs on one machine, but this engine spans nodes; "
            "render each node's command (launcher render --node-rank R) or use --format k8s"
        )


def _escape(text: str) -> str:
    """Compose interpolates `$VAR` everywhere; a literal dollar is written `$$`."""
    return text.replace("$", "$$")


def _volume(source: str, target: str, read_only: bool = False) -> str | dict[str, Any]:
    """A bind mount: `SOURCE:TARGET[:ro]`, or Compose's long syntax when a path holds a `:` (or a `,`) that
    the short form would split on (a model at /models/a:b). `${VAR:-default}` interpolations do not count."""
    plain = re.sub(r"\$\{[^}]*\}", "", source + target)
    if ":" not in plain and "," not in plain:
        return f"{source}:{target}:ro" if read_only else f"{source}:{target}"
    long: dict[str, Any] = {"type": "bind", "source": source, "target": target}
    if read_only:
        long["read_only"] = True
    return long


def compose_service(
    rendered: Rendered,
    profile: "Profile",
    *,
    image: str | None = None,
    shm_size: str | None = None,
    restart: str = "unless-stopped",
    hf_cache: str = HOST_HF_CACHE,
    vllm_cache: str | None = HOST_VLLM_CACHE,
) -> dict[str, Any]:
    """One Compose service that runs exactly `rendered.argv` in the launcher image.

    GPUs: exactly `gpus_needed(profile)`; by id when the profile pins CUDA_VISIBLE_DEVICES (the
    container then sees only those, renumbered from 0, so the variable is not passed on), else by
    count. IPC: `ipc: host` for NCCL/PyTorch shared memory and CUDA IPC, or `shm_size` when given.
    Secrets are references resolved by Compose from the caller's environment, never values.
    """
    _single_host(profile)
    needed = gpus_needed(profile)
    ids = _device_ids(rendered, needed)
    device: dict[str, Any] = {"driver": "nvidia"}
    if ids is None:
        device["count"] = needed
    else:
        device["device_ids"] = ids
    device["capabilities"] = ["gpu"]

    port = server_port(profile)
    cache_dir = profile.vllm.cache_dir
    env = for_container(rendered.env, cache_dir, VLLM_CACHE_IN_CONTAINER)  # the compile cache is the volume below
    environment: dict[str, Any] = {k: _escape(v) for k, v in env.items() if not (ids and k == "CUDA_VISIBLE_DEVICES")}
    for target, source in rendered.env_from.items():
        environment[target] = f"${{{source}:?{source} is not set (it holds {target} for vLLM)}}"
    # Passed through from the shell running `docker compose` when set there; never written here.
    environment.setdefault("HF_TOKEN", None)
    environment.setdefault("HF_HUB_OFFLINE", "${HF_HUB_OFFLINE:-0}")

    volumes = [_volume(hf_cache, HF_CACHE_IN_CONTAINER)]
    if vllm_cache == HOST_VLLM_CACHE and cache_dir:
        vllm_cache = _escape(cache_dir)  # the profile's root on this host (vllm.cache_dir, or vLLM's default rule)
    if vllm_cache:
        volumes.append(_volume(vllm_cache, VLLM_CACHE_IN_CONTAINER))
    if rendered.model.startswith("/"):
        volumes.append(_volume(_escape(rendered.model), _escape(rendered.model), read_only=True))

    service: dict[str, Any] = {
        "image": image or default_image(profile),
        # The exact rendered command; the image's `launcher serve` entrypoint is bypassed so that
        # what this file shows is what runs (vLLM is PID 1 under `init`).
        "entrypoint": [_escape(rendered.argv[0])],
        "command": [_escape(a) for a in rendered.argv[1:]],
        "environment": environment,
        "volumes": volumes,
        "ports": [f"{port}:{port}"],
        "deploy": {"resources": {"reservations": {"devices": [device]}}},
    }
    if shm_size:
        service["shm_size"] = shm_size
    else:
        service["ipc"] = "host"
    service.update(
        {
            "init": True,
            "stop_signal": "SIGTERM",
            "stop_grace_period": STOP_GRACE,
            "restart": restart,
            "healthcheck": {
                "test": ["CMD", "launcher", "wait", "--url", f"http://127.0.0.1:{port}", "--timeout", "5", "--quiet"],
                **HEALTH,
            },
        }
    )
    return service


def compose_file(rendered: Rendered, profile: "Profile", *, service_name: str = SERVICE_NAME, **kwargs: Any) -> dict[str, Any]:
    """A whole Compose file with the one service."""
    return {"services": {service_name: compose_service(rendered, profile, **kwargs)}}


def compose_notes(rendered: Rendered, profile: "Profile") -> list[str]:
    """What the operator must know about this file, as comment lines."""
    notes = [
        "Docker Compose service rendered by launcher (`launcher render --format compose`).",
        "Run: docker compose up -d; then: launcher wait --url http://127.0.0.1:PORT && launcher smoke --url ...",
        f"Image: build it from launcher's Dockerfile, or set {IMAGE_ENV}.",
        "Secrets come from the shell running `docker compose` (HF_TOKEN, the API key variable); none is stored here.",
        "Offline: HF_HUB_OFFLINE=1 docker compose up -d (the model must already be in the mounted cache).",
    ]
    port = server_port(profile)
    notes[1] = notes[1].replace("PORT", str(port))
    if rendered.env.get("CUDA_VISIBLE_DEVICES"):
        notes.append(
            "GPUs are reserved by id from the profile's CUDA_VISIBLE_DEVICES; inside the container they are "
            "numbered from 0, so CUDA_VISIBLE_DEVICES is not passed on."
        )
    host = profile.server.host
    if host in _LOOPBACK:
        notes.append(f"WARNING: --host {host} listens inside the container only; the published port will not answer.")
    notes += [f"note: {n}" for n in rendered.notes]
    return notes


def format_compose(rendered: Rendered, profile: "Profile") -> str:
    """`launcher render --format compose`: a Compose file (YAML) for the checked command of `profile`.

    The image tag follows its `vllm.version`; a multi-node deployment is refused.
    """
    header = "".join(f"# {comment_safe(line)}\n" for line in compose_notes(rendered, profile))
    body = yaml_dump(compose_file(rendered, profile))
    return header + body
