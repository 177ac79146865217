"""The decode path vLLM will run, per version, as data: attention backend, CUDA-graph mode, captured graphs.

Read from `launcher/engines/behaviour-<version>.json` ("decode_path"), each rule naming the vLLM source
function it was read from:
- each attention metadata builder's CUDA-graph support per compute capability
  (`<builder>.get_cudagraph_support`), and the Gated DeltaNet builder's, which bounds it (the minimum
  over every KV-cache group decides: V1 `gpu_model_runner.py::_check_and_update_cudagraph_mode`,
  V2 `v1/worker/gpu/attn_utils.py::init_attn_backend`);
- how the requested cudagraph mode is resolved, and downgraded with speculative decoding
  (`config/compilation.py::CompilationConfig.resolve_cudagraph_mode_and_sizes`);
- the capture sizes (`config/vllm.py::VllmConfig._set_cudagraph_sizes`, V1 rounding in
  `CompilationConfig.adjust_cudagraph_sizes_for_spec_decode`) and which of them get PIECEWISE and FULL graphs
  (V1 `v1/cudagraph_dispatcher.py::CudagraphDispatcher.initialize_cudagraph_keys`, V2
  `v1/worker/gpu/cudagraph_utils.py::CudaGraphManager._init_candidates`).
Pure: reads package data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from launcher.engine import behaviour as _behaviour
from launcher.engine.mtp import break_even

MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
SUPPORT = {"NEVER": 0, "UNIFORM_SINGLE_TOKEN_DECODE": 1, "UNIFORM_BATCH": 2, "ALWAYS": 3}  # v1/attention/backend.py::AttentionCGSupport

# config/compilation.py::CUDAGraphMode: (decode part, mixed part) of each mode.
_DECODE = {"NONE": "NONE", "PIECEWISE": "PIECEWISE", "FULL": "FULL", "FULL_DECODE_ONLY": "FULL", "FULL_AND_PIECEWISE": "FULL"}
_MIXED = {"NONE": "NONE", "PIECEWISE": "PIECEWISE", "FULL": "FULL", "FULL_DECODE_ONLY": "NONE", "FULL_AND_PIECEWISE": "PIECEWISE"}
_SEPARATE = {"FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"}  # CUDAGraphMode.separate_routine()


@dataclass(frozen=True)
class DecodePath:
    """What vLLM decodes on: the attention backend, the resolved CUDA-graph mode and the graphs it captures."""

    version: str  # the version asked for
    rules_of: str  # the version whose tables answered
    compute_capability: tuple[int, int]
    backend: Optional[str]  # the attention backend (None: none serves this KV dtype here)
    requested_mode: str  # the mode asked for (vLLM's default FULL_AND_PIECEWISE unless set)
    mode: str  # the resolved cudagraph mode: FULL_AND_PIECEWISE / PIECEWISE / FULL / FULL_DECODE_ONLY / NONE
    downgraded: bool  # FULL decode graphs were asked for and vLLM dropped them
    reason: str  # vLLM's own warning text when it changes the mode, else why the mode is what it is
    capture_sizes: tuple[int, ...]
    piecewise_graphs: int
    full_graphs: int
    support: str  # the minimum AttentionCGSupport over the KV-cache groups
    support_backend: str  # vLLM's class name of the backend that set the minimum
    num_speculative_tokens: int
    runner: str  # "V1" or "V2" (vLLM's model runner for this model)
    source: str  # the vLLM source functions the answer came from
    notes: tuple[str, ...] = field(default=())

    @property
    def graphs(self) -> int:
        return self.piecewise_graphs + self.full_graphs

    @property
    def largest(self) -> int:
        return max(self.capture_sizes) if self.capture_sizes else 0

    @property
    def keeps_full_graphs(self) -> bool:
        return _DECODE.get(self.mode) == "FULL"

    def line(self) -> str:
        """`decode path: FLASH_ATTN, FULL_AND_PIECEWISE, 27 graphs (largest 96)`."""
        backend = self.backend or "no attention backend"
        if self.mode == "NONE":
            return f"decode path: {backend}, NONE, no CUDA graphs (eager)"
        tail = " (downgraded)" if self.downgraded else ""
        return f"decode path: {backend}, {self.mode}{tail}, {self.graphs} graphs (largest {self.largest})"

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line(),
            "version": self.version,
            "rules_of": self.rules_of,
            "compute_capability": list(self.compute_capability),
            "backend": self.backend,
            "requested_mode": self.requested_mode,
            "mode": self.mode,
            "downgraded": self.downgraded,
            "reason": self.reason,
            "capture_sizes": list(self.capture_sizes),
            "piecewise_graphs": self.piecewise_graphs,
            "full_graphs": self.full_graphs,
            "support": self.support,
            "support_backend": self.support_backend,
            "num_speculative_tokens": self.num_speculative_tokens,
            "runner": self.runner,
            "source": self.source,
            "notes": list(self.notes),
        }


def _table(version: str) -> tuple[_behaviour.Behaviour, dict[str, Any]]:
    b = _behaviour.behaviour(version)
    return b, b.data["decode_path"]


def _matches(rule: dict[str, Any], cc: tuple[int, int]) -> bool:
    keys = [k for k in ("cc", "cc_major", "cc_below") if k in rule]
    if not keys:
        return True
    text = f"{cc[0]}.{cc[1]}"
    return (text in rule.get("cc", ())) or (cc[0] in rule.get("cc_major", ())) or (
        "cc_below" in rule and cc < _behaviour._cc(rule["cc_below"]))


def backend_support(version: str, cc: Sequence[int], backend: str, trtllm_cubins: Optional[bool] = None) -> tuple[str, str]:
    """(AttentionCGSupport name, why) of one attention backend's metadata builder on this compute capability."""
    _, t = _table(version)
    cap = (int(cc[0]), int(cc[1]))
    spec = t["backends"].get(backend.upper())
    if spec is None:
        return "UNKNOWN", f"{backend} is not in launcher's CUDA-graph table"
    cubins = t["trtllm_cubins"]["assumed"] if trtllm_cubins is None else trtllm_cubins
    for rule in spec["rules"]:
        if not _matches(rule, cap):
            continue
        if rule.get("needs_trtllm_cubins") and not cubins:
            continue  # without FlashInfer's TRT-LLM/XQA cubins the next rule applies
        return str(rule["support"]), str(rule.get("why", ""))
    return "NEVER", "no rule"


def capture_sizes(version: str, cc: Sequence[int], num_speculative_tokens: int, max_num_seqs: int,
                  max_num_batched_tokens: int, performance_mode: str = "balanced",
                  max_capture_size: int | None = None, sizes_given: Sequence[int] | None = None) -> list[int]:
    """vLLM's cudagraph capture sizes (config/vllm.py::VllmConfig._set_cudagraph_sizes), before any
    spec-decode rounding; `max_capture_size` / `sizes_given` are the compilation config's
    max_cudagraph_capture_size / cudagraph_capture_sizes when the user set them."""
    _, t = _table(version)
    rule = t["capture_sizes"]
    q = 1 + num_speculative_tokens
    S, B = max_num_seqs, max_num_batched_tokens
    if sizes_given:
        return sorted({int(s) for s in sizes_given if int(s) <= B})
    ceiling = int(rule["ceiling_cc_major"].get(str(int(cc[0])), rule["ceiling"]))
    max_cg = min(S * q * 2, ceiling) if max_capture_size is None else int(max_capture_size)
    uniform: list[int] = []
    if rule["uniform_decode_sizes"] and max_capture_size is None:
        if q > 1:
            m = min(S, ceiling)
            counts = sorted({n for n in (1, 2, 4) if n <= m} | set(range(8, min(m + 1, 256), 8)) | set(range(256, m + 1, 16)) | {m})
            uniform = sorted({n * q for n in counts if n * q <= max_cg})
        elif S <= max_cg:
            uniform = [S]
    max_cg = min(B, max_cg)
    if performance_mode == "interactivity":
        sizes = list(range(1, min(max_cg, 32) + 1))
    else:
        sizes = [i for i in (1, 2, 4) if i <= max_cg]
    if max_cg >= 8:
        sizes += list(range(8, min(max_cg + 1, 256), 8))
    if max_cg >= 256:
        sizes += list(range(256, max_cg + 1, 16))
    if B <= max_cg and B not in sizes:
        sizes.append(B)
    sizes += [s for s in uniform if s <= B]
    return sorted(set(sizes))


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


def _class(t: dict[str, Any], backend: str) -> str:
    spec = t["backends"].get(backend.upper())
    return str(spec["class"]) if spec else backend


def _min_support(t: dict[str, Any], version: str, cap: tuple[int, int], name: Optional[str], trtllm_cubins: Optional[bool],
                 sources: list[str], notes: list[str]) -> tuple[str, str]:
    """The minimum AttentionCGSupport over the KV-cache groups (the attention backend's and the GDN builder's) and
    vLLM's class name of the backend that set it."""
    gdn = t["linear_attention"]
    support, support_backend = gdn["support"], gdn["class"]
    sources.insert(0, gdn["source"])
    if name is None:
        return support, support_backend
    att, why = backend_support(version, cap, name, trtllm_cubins)
    if att == "UNKNOWN":
        notes.append(why)
        return support, support_backend
    sources.insert(0, t["backends"][name]["source"])
    if why:
        notes.append(f"{name} on {cap[0]}.{cap[1]}: {att} ({why})")
    if SUPPORT[att] <= SUPPORT[support]:
        return att, _class(t, name)
    return support, support_backend


def _resolve(t: dict[str, Any], requested: str, support: str, support_backend: str, q: int) -> tuple[str, bool, str]:
    """(mode, downgraded, vLLM's message) by config/compilation.py::CompilationConfig.resolve_cudagraph_mode_and_sizes."""
    mode, reason, downgraded = requested, "", False
    fmt = dict(backend=support_backend, support=support)
    if _MIXED[mode] == "FULL" and support != "ALWAYS":
        if support == "NEVER":
            return "NONE", True, f"vLLM raises: CUDAGraphMode.{mode} is not supported with {support_backend} backend"
        reason = t["resolve"]["full_downgrade_message"].format(mode=mode, **fmt)
        mode = "FULL_AND_PIECEWISE"
    if _DECODE[mode] == "FULL" and support == "NEVER":
        reason = (f"CUDAGraphMode.{mode} is not supported with {support_backend} backend (support: AttentionCGSupport.NEVER); "
                  "setting cudagraph_mode=PIECEWISE because attention is compiled piecewise")
        mode, downgraded = "PIECEWISE", True
    if _DECODE[mode] == "FULL" and q > 1 and SUPPORT[support] < SUPPORT["UNIFORM_BATCH"]:
        reason = t["resolve"]["spec_decode_message"].format(mode=mode, **fmt)
        mode, downgraded = "PIECEWISE", True
    if not reason:
        reason = f"{mode} kept: minimum CUDA-graph support {support} ({support_backend})" + (f" with MTP k={q - 1}" if q > 1 else "")
    return mode, downgraded, reason


def _graphs(t: dict[str, Any], runner: str, mode: str, sizes: list[int], q: int, S: int) -> tuple[list[int], int, int]:
    """(capture sizes after V1's spec-decode rounding, PIECEWISE graphs, FULL graphs) of the target model."""
    if runner == "V1" and t["capture_sizes"]["spec_decode_rounding"] and _DECODE[mode] == "FULL" and q > 1 and sizes:
        top = sizes[-1]  # CompilationConfig.adjust_cudagraph_sizes_for_spec_decode
        rounded = sorted({_round_up(s, q) for s in sizes if _round_up(s, q) <= top})
        sizes = rounded or ([q] if q <= top else [])
    mixed = _MIXED[mode]
    pw = len(sizes) if mixed == "PIECEWISE" else 0
    full = len(sizes) if mixed == "FULL" else 0
    if _DECODE[mode] == "FULL" and mode in _SEPARATE and sizes:
        if runner == "V1":  # CudagraphDispatcher.initialize_cudagraph_keys
            full += len([x for x in sizes if q <= x <= q * S])
        else:  # CudaGraphManager._init_candidates
            top = sizes[-1]
            full += len({_round_up(x, q) for x in sizes if _round_up(x, q) <= min(q * S, top) and _round_up(x, q) // q <= S})
    return sizes, pw, full


def decode_path(version: str, cc: tuple[int, int], backend: str | None, kv_cache_dtype: str, num_speculative_tokens: int,
                max_num_seqs: int, max_num_batched_tokens: int, enforce_eager: bool = False, cudagraph_mode: str | None = None,
                *, trtllm_cubins: bool | None = None, performance_mode: str = "balanced",
                max_capture_size: int | None = None, sizes_given: Sequence[int] | None = None) -> DecodePath:
    """The decode path of this configuration: `backend` None is vLLM's own choice (behaviour.attention_route),
    `num_speculative_tokens` 0 is MTP off, `cudagraph_mode` None is vLLM's default (FULL_AND_PIECEWISE).

    Raises:
        ValueError: a cudagraph_mode vLLM does not know.
    """
    b, t = _table(version)
    cap = (int(cc[0]), int(cc[1]))
    k = max(0, int(num_speculative_tokens))
    q = 1 + k
    route = _behaviour.attention_route(cap, backend, kv_cache_dtype, version)
    name = route.backend.upper() if route.backend else None
    runner = str(t["model_runner"]["runner"])
    sources = [t["model_runner"]["source"], t["resolve"]["source"], t["capture_sizes"]["source"], t["graphs"]["source"]]
    notes: list[str] = [b.fallback_note] if b.fallback_note else []
    requested = (cudagraph_mode or t["modes"]["default"]).upper()
    if requested not in MODES:
        raise ValueError(f"cudagraph_mode {cudagraph_mode!r} is not one of {', '.join(MODES)}")
    support, support_backend = _min_support(t, version, cap, name, trtllm_cubins, sources, notes)

    def result(mode: str, downgraded: bool, reason: str, sizes: Sequence[int], pw: int, full: int) -> DecodePath:
        return DecodePath(version, b.rules_of, cap, name, requested, mode, downgraded, reason, tuple(sizes), pw, full,
                          support, support_backend, k, runner, "; ".join(sources), tuple(notes))

    if enforce_eager or requested == "NONE":
        why = "--enforce-eager: no torch.compile and no CUDA graphs" if enforce_eager else "cudagraph_mode NONE asked for"
        return result("NONE", False, why, (), 0, 0)
    mode, downgraded, reason = _resolve(t, requested, support, support_backend, q)
    if mode == "NONE":
        return result(mode, downgraded, reason, (), 0, 0)
    sizes = capture_sizes(version, cap, k, int(max_num_seqs), int(max_num_batched_tokens), performance_mode, max_capture_size, sizes_given)
    sizes, pw, full = _graphs(t, runner, mode, sizes, q, int(max_num_seqs))
    return result(mode, downgraded, reason, sizes, pw, full)


def full_graph_backends(version: str, cc: tuple[int, int], kv_cache_dtype: str, num_speculative_tokens: int,
                        *, trtllm_cubins: bool | None = None) -> list[str]:
    """Attention backends that serve this KV dtype on this GPU AND keep FULL decode graphs with this MTP setting,
    in vLLM's priority order for the compute capability."""
    b = _behaviour.behaviour(version)
    att = b.data["attention"]
    cap = (int(cc[0]), int(cc[1]))
    order = next(p["order"] for p in att["priority"] if p["cc_major"] in (None, cap[0]))
    out = []
    for name in order:
        if name not in att["backends"] or not _behaviour.attention_route(cap, name, kv_cache_dtype, version).ok:
            continue
        path = decode_path(version, cap, name, kv_cache_dtype, num_speculative_tokens, 16, 4096, trtllm_cubins=trtllm_cubins)
        if path.keeps_full_graphs:
            out.append(name)
    return out


# ------------------------------------------------------------------------ measured cost


@dataclass(frozen=True)
class MeasuredCost:
    """One measured comparison (launcher/engines/measured-decode.json): the downgraded path's step, the full-graph
    path's step with the same MTP setting, and the step without MTP, at concurrency 1."""

    source: str
    gpu: str
    vllm_version: str
    k: int
    downgraded_backend: str
    downgraded_ms: float
    full_backend: Optional[str]
    full_ms: Optional[float]
    off_ms: float

    def text(self) -> str:
        be = break_even(self.downgraded_ms / self.off_ms, self.k)
        parts = [f"measured ({self.source}): one decode step {self.downgraded_ms:.1f} ms on {self.downgraded_backend} "
                 f"with PIECEWISE graphs and MTP k={self.k}"]
        if self.full_backend and self.full_ms:
            parts.append(f"{self.full_ms:.1f} ms on {self.full_backend} with full graphs")
        parts.append(f"{self.off_ms:.1f} ms without MTP")
        tail = f"MTP k={self.k} pays off on the downgraded path only above acceptance {be:.2f}" if be is not None else (
            f"MTP k={self.k} can never pay off on the downgraded path")
        if self.full_ms:
            full_be = break_even(self.full_ms / self.off_ms, self.k)
            if full_be is not None:
                tail += f" (above {full_be:.2f} with full graphs)"
        return ", ".join(parts[:-1]) + f" vs {parts[-1]}: {tail}"


def _measured() -> dict[str, Any]:
    import json
    from importlib import resources

    data: dict[str, Any] = json.loads(resources.files("launcher.engines").joinpath("measured-decode.json").read_text())
    return data


def measured_cost(cc: Sequence[int]) -> Optional[MeasuredCost]:
    """The measured cost of a downgraded MTP path: a run on GPUs of this compute-capability major first, then the
    others (the source names the GPU it ran on), TP1 before more GPUs."""
    runs = sorted(_measured()["runs"], key=lambda r: (int(r["compute_capability"][0]) != int(cc[0]), r["tensor_parallel_size"]))
    for run in runs:
        paths = run["paths"]
        down = next((p for p in paths if p["mode"] == "PIECEWISE" and p["num_speculative_tokens"] > 0), None)
        off = next((p for p in paths if p["num_speculative_tokens"] == 0), None)
        if down is None or off is None:
            continue
        full = next((p for p in paths if p["num_speculative_tokens"] == down["num_speculative_tokens"]
                     and _DECODE.get(p["mode"]) == "FULL"), None)
        return MeasuredCost(str(run["source"]), str(run["gpu"]), str(run["vllm_version"]), int(down["num_speculative_tokens"]),
                            str(down["backend"]), float(down["itl_p50_ms"]["1"]), str(full["backend"]) if full else None,
                            float(full["itl_p50_ms"]["1"]) if full else None, float(off["itl_p50_ms"]["1"]))
    return None
