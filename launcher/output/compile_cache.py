"""The compile cache: one root for everything vLLM and its kernels compile, as environment for vLLM.

Under the root (`vllm.cache_dir`; default vLLM's own VLLM_CACHE_ROOT rule, see
launcher.profile.load.default_cache_dir):

- VLLM_CACHE_ROOT=ROOT: vLLM's own cache (envs.py). torch.compile artifacts go to ROOT/torch_compile_cache
  (compilation/backends.py), the AOT ones to torch_compile_cache/torch_aot_compile (compilation/decorators.py,
  which also points Inductor's cache there); DeepGEMM, model info.
- TRITON_CACHE_DIR=ROOT/triton: Triton's JIT, the kernels vLLM launches directly (GDN, conv1d, the MTP
  helpers); vLLM keeps a caller's value (compilation/compiler_interface.py::InductorAdaptor.initialize_cache).
- FLASHINFER_WORKSPACE_BASE=ROOT/flashinfer: FlashInfer's JIT ops go to BASE/.cache/flashinfer
  (flashinfer/jit/env.py).
- CUDA_CACHE_PATH=ROOT/nv: the CUDA driver's PTX JIT cache (default ~/.nv/ComputeCache).

A variable the profile's own `env` sets is left as the profile says. In a container the root is
CONTAINER_ROOT, a volume (Compose, Kubernetes); systemd keeps it with `CacheDirectory=`.
"""

from __future__ import annotations

import posixpath
from typing import Mapping

# Inside the launcher image (vllm/vllm-openai runs as root): vLLM's default root there.
CONTAINER_ROOT = "/root/.cache/vllm"
CACHE_ENV = ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE", "CUDA_CACHE_PATH")
_SUBDIRS = {"VLLM_CACHE_ROOT": "", "TRITON_CACHE_DIR": "triton", "FLASHINFER_WORKSPACE_BASE": "flashinfer", "CUDA_CACHE_PATH": "nv"}


def cache_env(root: str) -> dict[str, str]:
    """The four variables for a cache root."""
    return {name: posixpath.join(root, sub) if sub else root for name, sub in _SUBDIRS.items()}


def with_cache_env(env: Mapping[str, str], root: str | None) -> dict[str, str]:
    """`env` with the cache variables added (the profile's own values win), sorted by name as render sorts."""
    if root is None:
        return dict(env)
    merged = {**cache_env(root), **env}
    return dict(sorted(merged.items()))


def for_container(env: Mapping[str, str], root: str | None, container_root: str = CONTAINER_ROOT) -> dict[str, str]:
    """`env` with the cache variables launcher set for the host's `root` moved to `container_root` (the volume)."""
    if root is None:
        return dict(env)
    host, inside = cache_env(root), cache_env(container_root)
    return {k: (inside[k] if k in host and v == host[k] else v) for k, v in env.items()}
