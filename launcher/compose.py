"""Docker Compose: a rendered profile in, one Compose service out. Pure: no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.errors import ProfileError
from launcher.render import Rendered, comment_safe, option_pairs, option_tokens, yaml_dump
from launcher.schema import DEFAULT_VLLM_VERSION

if TYPE_CHECKING:
    from launcher.schema import Profile

SERVICE_NAME = "vllm"
DEFAULT_PORT = 8000  # vLLM's own default for --port
# The image built from this repository's Dockerfile; the tag names the vLLM it carries.
IMAGE_ENV = "LAUNCHER_IMAGE"
# Inside the image (vllm/vllm-openai runs as root): the Hugging Face cache and vLLM's compile/JIT cache.
HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
VLLM_CACHE_IN_CONTAINER = "/root/.cache/vllm"
HOST_HF_CACHE = "${HF_HOME:-~/.cache/huggingface}"
HOST_VLLM_CACHE = "${VLLM_CACHE_ROOT:-~/.cache/vllm}"
# A 27B checkpoint takes minutes to load, compile and capture CUDA graphs: failures before this
# do not count (docker keeps probing every START_INTERVAL meanwhile, so "healthy" comes early).
HEALTH = {"interval": "30s", "timeout": "15s", "retries": 3, "start_period": "20m", "start_interval": "10s"}
STOP_GRACE = "60s"

# vLLM accepts `_` and `-` alike in flag names and these short aliases.
_PARALLEL_FLAGS = {
    "--tensor-parallel-size": "tp",
    "-tp": "tp",
    "--pipeline-parallel-size": "pp",
    "-pp": "pp",
    "--data-parallel-size": "dp",
    "-dp": "dp",
}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_image(profile: "Profile | None" = None) -> str:
    """`${LAUNCHER_IMAGE:-launcher:vllm-X}`: the operator's image, or the tag the runbook builds."""
    version = profile.vllm.version if profile is not None else DEFAULT_VLLM_VERSION
    return f"${{{IMAGE_ENV}:-launcher:vllm-{version}}}"


def _options(rendered: Rendered) -> dict[str, str | None]:
    """Flag -> value as vLLM will see it: the last occurrence wins (argparse), `_` == `-`."""
    out: dict[str, str | None] = {}
    for flag, value in option_pairs(option_tokens(rendered)):
        out[flag.replace("_", "-") if flag.startswith("--") else flag] = value
    return out


def gpus_needed(rendered: Rendered) -> int:
    """Tensor x pipeline x data parallel, read from the argv that will actually run."""
    sizes = {"tp": 1, "pp": 1, "dp": 1}
    for flag, value in _options(rendered).items():
        which = _PARALLEL_FLAGS.get(flag)
        if which is None:
            continue
        try:
            sizes[which] = int(value or "")
        except ValueError:
            raise ProfileError(f"{flag}: expected a whole number, got {value!r}") from None
        if sizes[which] < 1:
            raise ProfileError(f"{flag}: must be at least 1, got {value}")
    return sizes["tp"] * sizes["pp"] * sizes["dp"]


def server_port(rendered: Rendered) -> int:
    value = _options(rendered).get("--port")
    if value is None:
        return DEFAULT_PORT
    try:
        return int(value)
    except ValueError:
        raise ProfileError(f"--port: expected a number, got {value!r}") from None


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


def _single_host(rendered: Rendered, profile: "Profile | None") -> None:
    """One Compose service is one machine: an engine spanning nodes needs one command per node."""
    nodes = getattr(getattr(profile, "deployment", None), "nodes", 1) or 1
    spanning = nodes > 1 or any(flag in ("--nnodes", "--node-rank", "--headless") for flag in _options(rendered))
    if spanning:
        raise ProfileError(
            "deployment.nodes: a Compose service runs on one machine, but this engine spans nodes; "
            "render each node's command (launcher render --node-rank R) or use --format k8s"
        )


def _escape(text: str) -> str:
    """Compose interpolates `$VAR` everywhere; a literal dollar is written `$$`."""
    return text.replace("$", "$$")


def compose_service(
    rendered: Rendered,
    profile: "Profile | None" = None,
    *,
    image: str | None = None,
    shm_size: str | None = None,
    restart: str = "unless-stopped",
    hf_cache: str = HOST_HF_CACHE,
    vllm_cache: str | None = HOST_VLLM_CACHE,
) -> dict[str, Any]:
    """One Compose service that runs exactly `rendered.argv` in the launcher image.

    GPUs: exactly `gpus_needed(rendered)`; by id when the profile pins CUDA_VISIBLE_DEVICES (the
    container then sees only those, renumbered from 0, so the variable is not passed on), else by
    count. IPC: `ipc: host` for NCCL/PyTorch shared memory and CUDA IPC, or `shm_size` when given.
    Secrets are references resolved by Compose from the caller's environment, never values.
    """
    _single_host(rendered, profile)
    needed = gpus_needed(rendered)
    ids = _device_ids(rendered, needed)
    device: dict[str, Any] = {"driver": "nvidia"}
    if ids is None:
        device["count"] = needed
    else:
        device["device_ids"] = ids
    device["capabilities"] = ["gpu"]

    port = server_port(rendered)
    environment: dict[str, Any] = {k: _escape(v) for k, v in rendered.env.items() if not (ids and k == "CUDA_VISIBLE_DEVICES")}
    for target, source in rendered.env_from.items():
        environment[target] = f"${{{source}:?{source} is not set (it holds {target} for vLLM)}}"
    # Passed through from the shell running `docker compose` when set there; never written here.
    environment.setdefault("HF_TOKEN", None)
    environment.setdefault("HF_HUB_OFFLINE", "${HF_HUB_OFFLINE:-0}")

    volumes = [f"{hf_cache}:{HF_CACHE_IN_CONTAINER}"]
    if vllm_cache:
        volumes.append(f"{vllm_cache}:{VLLM_CACHE_IN_CONTAINER}")
    if rendered.model.startswith("/"):
        volumes.append(f"{_escape(rendered.model)}:{_escape(rendered.model)}:ro")

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


def compose_file(rendered: Rendered, profile: "Profile | None" = None, *, service_name: str = SERVICE_NAME, **kwargs: Any) -> dict[str, Any]:
    """A whole Compose file with the one service."""
    return {"services": {service_name: compose_service(rendered, profile, **kwargs)}}


def compose_notes(rendered: Rendered) -> list[str]:
    """What the operator must know about this file, as comment lines."""
    notes = [
        "Docker Compose service rendered by launcher (`launcher render --format compose`).",
        "Run: docker compose up -d; then: launcher wait --url http://127.0.0.1:PORT && launcher smoke --url ...",
        f"Image: build it from launcher's Dockerfile, or set {IMAGE_ENV}.",
        "Secrets come from the shell running `docker compose` (HF_TOKEN, the API key variable); none is stored here.",
        "Offline: HF_HUB_OFFLINE=1 docker compose up -d (the model must already be in the mounted cache).",
    ]
    port = server_port(rendered)
    notes[1] = notes[1].replace("PORT", str(port))
    if rendered.env.get("CUDA_VISIBLE_DEVICES"):
        notes.append(
            "GPUs are reserved by id from the profile's CUDA_VISIBLE_DEVICES; inside the container they are "
            "numbered from 0, so CUDA_VISIBLE_DEVICES is not passed on."
        )
    host = _options(rendered).get("--host")
    if host in _LOOPBACK:
        notes.append(f"WARNING: --host {host} listens inside the container only; the published port will not answer.")
    notes += [f"note: {n}" for n in rendered.notes]
    return notes


def format_compose(rendered: Rendered, profile: "Profile | None" = None) -> str:
    """`launcher render --format compose`: a Compose file (YAML) for the rendered profile.

    With the profile too, the image tag follows its `vllm.version` and a multi-node deployment is refused.
    """
    header = "".join(f"# {comment_safe(line)}\n" for line in compose_notes(rendered))
    body = yaml_dump(compose_file(rendered, profile))
    return header + body
