"""The served speed of a profile, from vLLM's own load generator and the server's /metrics.

`launcher bench` (launcher/commands/bench.py) runs `vllm bench serve` once per concurrency level
and snapshots `/metrics` before and after each; this module turns such a run directory into the
report. It reads files and computes; it sends no request and starts no process, so a run recorded
by hand on another machine (same layout) is reported exactly like a live one.

Run directory layout (a contract: recorded by hand on the GPU machine, read by `--replay`):

    DIR/meta.json                  {"url", "model", "profile", "gpu", "tensor_parallel_size", "mtp_k",
                                    "input_len", "output_len", "num_prompts", "vllm_version", "label"}
    DIR/warmup.json                launcher.live.warmup's record of the warm-up before the first level (optional;
                                   not in any level's numbers)
    DIR/c{C}.json                  `vllm bench serve --save-result` of concurrency level C
    DIR/c{C}.metrics-before.txt    GET /metrics just before that level
    DIR/c{C}.metrics-after.txt     GET /metrics just after it

Speculative decoding (MTP) is read from the counter deltas over each level
(vllm:spec_decode_num_drafts / _num_draft_tokens / _num_accepted_tokens, parsed by
launcher.live.smoke's parser): acceptance rate = accepted / draft tokens, mean acceptance length =
1 + accepted / drafts (tokens one target-model step produces; vLLM's own definition).

Roofline: at concurrency 1 a decode step is bound by memory bandwidth: every weight byte it uses is
read once per token on each GPU. Ceiling tokens/s = peak bandwidth (GPU table) / bytes read per
token per GPU, taken from the memory estimator's weights term with MTP off, less what a text
decode step does not read (the vision tower; the input embedding table, of which one row is
read). KV cache and recurrent-state traffic are left out, so the ceiling is an upper bound.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from launcher.errors import ProfileError
from launcher.files import MAX_JSON_BYTES, MAX_TEXT_BYTES, parse_json, read_text
from launcher.live.smoke import parse_metrics, spec_decode_counters
from launcher.text import printable, redact_url

if TYPE_CHECKING:
    from launcher.fit.estimate import WeightSizes
    from launcher.profile.schema import Profile

FORMAT = "launcher-bench/1"
META_KEYS = ("url", "model", "profile", "gpu", "tensor_parallel_size", "mtp_k", "input_len", "output_len",
             "num_prompts", "vllm_version", "label")
PERCENTILES = (50, 90, 99)
# report key -> vllm bench serve's metric name (its result keys are mean_X_ms, median_X_ms, pNN_X_ms)
LATENCY_METRICS = (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("itl_ms", "itl"), ("e2e_ms", "e2el"))
DEFAULT_CONCURRENCY = (1, 4, 16)
DEFAULT_INPUT_LEN = 1024
DEFAULT_OUTPUT_LEN = 256
REQUIRED_RESULT_KEYS = ("completed", "duration", "output_throughput", "request_throughput")
# meta.json's types: text or null, whole numbers (not booleans) or null. Anything else is refused (exit 2).
META_TEXT_KEYS = ("url", "model", "profile", "gpu", "vllm_version", "label")
META_INT_KEYS = ("tensor_parallel_size", "mtp_k", "input_len", "output_len", "num_prompts")
MAX_META_TEXT = 1000
_LEVEL_FILE = re.compile(r"^c([1-9][0-9]*)\.json$")


def default_num_prompts(concurrency: int) -> int:
    """Prompts per level when not given: four waves of requests, at least 8."""
    return max(8, 4 * concurrency)


def level_paths(directory: Path, concurrency: int) -> tuple[Path, Path, Path]:
    """(result, metrics before, metrics after) of one level in a run directory."""
    c = concurrency
    return directory / f"c{c}.json", directory / f"c{c}.metrics-before.txt", directory / f"c{c}.metrics-after.txt"


def bench_serve_args(
    *,
    url: str,
    model: str,
    served_model_name: str,
    tokenizer: str,
    input_len: int,
    output_len: int,
    num_prompts: int,
    concurrency: int,
    result_dir: str,
) -> list[str]:
    """The arguments after `vllm bench serve` for one level (the recorded-by-hand runs use the same).

    Random prompts of exactly `input_len` tokens, exactly `output_len` tokens out (EOS ignored),
    greedy, all requests queued at once and at most `concurrency` in flight.
    """
    return [
        "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
        "--model", model, "--served-model-name", served_model_name, "--tokenizer", tokenizer,
        "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--ignore-eos",
        "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--temperature", "0", "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", ",".join(str(p) for p in PERCENTILES),
        "--save-result", "--result-dir", result_dir, "--result-filename", f"c{concurrency}.json",
        "--disable-tqdm",
    ]


# ----------------------------------------------------------------------------- one level


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def latency(result: Mapping[str, Any], metric: str) -> dict[str, float | None]:
    """mean and p50/p90/p99 (ms) of one metric from a saved result (p50 falls back to the median)."""
    out: dict[str, float | None] = {"mean": _number(result.get(f"mean_{metric}_ms"))}
    for p in PERCENTILES:
        value = _number(result.get(f"p{p}_{metric}_ms"))
        if value is None and p == 50:
            value = _number(result.get(f"median_{metric}_ms"))
        out[f"p{p}"] = value
    return out


def spec_decode_delta(before_text: str, after_text: str, model: str | None) -> dict[str, Any] | None:
    """Speculative decoding over one level, from two /metrics texts; None when the server has no counters."""
    after = spec_decode_counters(parse_metrics(after_text), model)
    if after is None:
        return None
    before = spec_decode_counters(parse_metrics(before_text), model) or {
        "drafts": 0.0, "draft_tokens": 0.0, "accepted_tokens": 0.0, "accepted_per_position": {},
    }
    drafts = after["drafts"] - before["drafts"]
    draft_tokens = after["draft_tokens"] - before["draft_tokens"]
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    per_position = []
    if drafts > 0:
        for pos, value in after["accepted_per_position"].items():
            per_position.append((value - before["accepted_per_position"].get(pos, 0.0)) / drafts)
    return {
        "drafts": int(drafts),
        "draft_tokens": int(draft_tokens),
        "accepted_tokens": int(accepted),
        "num_speculative_tokens": round(draft_tokens / drafts) if drafts > 0 else None,
        "acceptance_rate": accepted / draft_tokens if draft_tokens > 0 else None,
        "mean_acceptance_length": 1.0 + accepted / drafts if drafts > 0 else None,
        "per_position_acceptance": per_position,
        "source": "/metrics counter deltas over the level",
    }


def _vllm_says(result: Mapping[str, Any], ours: dict[str, Any] | None) -> str | None:
    """A note when vLLM's own spec-decode summary (newer `vllm bench serve`) disagrees with ours."""
    rate = _number(result.get("spec_decode_acceptance_rate"))
    if rate is None or ours is None or ours["acceptance_rate"] is None:
        return None
    if abs(rate / 100.0 - ours["acceptance_rate"]) > 0.005:
        return (f"vllm bench serve reports acceptance {rate:.1f} %, the /metrics delta {100 * ours['acceptance_rate']:.1f} % "
                "(another client used the server during the level?)")
    return None


def level_report(concurrency: int, result: Mapping[str, Any], before_text: str, after_text: str,
                 model: str | None, source: str = "") -> dict[str, Any]:
    """One concurrency level: throughput, latency percentiles, speculative decoding."""
    missing = [k for k in REQUIRED_RESULT_KEYS if _number(result.get(k)) is None]
    if missing:
        raise ProfileError(f"{source or 'result'}: {missing[0]}: missing or not a number (not a `vllm bench serve --save-result` file?)")
    completed = int(result["completed"])
    failed = int(_number(result.get("failed")) or 0)
    report: dict[str, Any] = {
        "concurrency": concurrency,
        "max_concurrency": result.get("max_concurrency"),
        "num_prompts": result.get("num_prompts"),
        "completed": completed,
        "failed": failed,
        "duration_s": float(result["duration"]),
        "total_input_tokens": result.get("total_input_tokens"),
        "total_output_tokens": result.get("total_output_tokens"),
        "output_tokens_per_s": float(result["output_throughput"]),
        "requests_per_s": float(result["request_throughput"]),
        "total_tokens_per_s": _number(result.get("total_token_throughput")),
    }
    for key, metric in LATENCY_METRICS:
        report[key] = latency(result, metric)
    tpot = report["tpot_ms"]["mean"]
    report["decode_tokens_per_s_per_request"] = 1000.0 / tpot if tpot else None
    report["spec_decode"] = spec_decode_delta(before_text, after_text, model)
    notes = []
    if result.get("max_concurrency") not in (None, concurrency):
        notes.append(f"the result says max_concurrency {printable(result.get('max_concurrency'), 40)}, the file name c{concurrency}")
    if failed:
        notes.append(f"{failed} of {completed + failed} requests failed")
    disagreement = _vllm_says(result, report["spec_decode"])
    if disagreement:
        notes.append(disagreement)
    report["notes"] = notes
    return report


# ------------------------------------------------------------------------------- roofline


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes one decode token reads per GPU, from the estimator's weights term (MTP off)."""

    weight_bytes_per_gpu: int  # the estimator's W with k = 0
    read_bytes_per_token: int  # on the critical path of one token, per GPU
    not_read: dict[str, int]  # what W holds that decode does not read, per GPU
    source: str


def decode_bytes(profile: "Profile", gpu_name: str, weights: "WeightSizes | None" = None) -> DecodeBytes:
    """W (launcher.fit.estimate's weights term, MTP off) and the bytes a text decode step reads of it per GPU.

    With pipeline parallel one token passes the stages one after the other, so the critical path
    reads a stage's share `pp` times: language weights / tensor_parallel_size in all.
    """
    from launcher.fit.estimate import WEIGHT_OVERHEAD, estimate
    from launcher.fit.fit_profile import GpuSpec, fit_input, profile_weights
    from launcher.hardware.catalog import lookup
    from launcher.model.facts import facts_for

    facts = facts_for(profile.facts_key)
    sizes = weights or profile_weights(profile)
    inp = fit_input(profile, GpuSpec.from_model(lookup(gpu_name)), sizes, facts)
    inp = dataclasses.replace(inp, num_speculative_tokens=0)
    w = estimate(inp).weights.bytes
    t, pp = inp.tensor_parallel_size, inp.pipeline_parallel_size
    vision = sizes.vision_bytes // t if not inp.language_model_only else 0
    embed = facts.vocab_size * facts.hidden_size * 2 // t  # BF16 input embedding, vocab-parallel
    read = (w - WEIGHT_OVERHEAD - vision) * pp - embed
    not_read = {"overhead": WEIGHT_OVERHEAD, "vision_tower": vision, "input_embedding": embed}
    return DecodeBytes(w, read, not_read, f"launcher.fit weights term (MTP off), bytes from {sizes.source}")


ROOFLINE_KEYS = ("gpu", "gpu_model", "memory_bandwidth_gb_s", "bandwidth_source", "tensor_parallel_size",
                 "pipeline_parallel_size", "weight_bytes_per_gpu", "read_bytes_per_token_per_gpu", "not_read_bytes_per_gpu",
                 "weights_source", "ceiling_tokens_per_s", "measured_tokens_per_s", "measured_at", "fraction", "why")


def roofline(gpu_name: str | None, profile: "Profile | None", levels: Sequence[Mapping[str, Any]],
             weights: "WeightSizes | None" = None) -> dict[str, Any]:
    """The single-stream ceiling for this GPU and profile, and the measured fraction of it.

    Every key of ROOFLINE_KEYS is present; `why` says what could not be computed and why.
    """
    from launcher.hardware.catalog import BANDWIDTH_SOURCE, memory_bandwidth

    out: dict[str, Any] = dict.fromkeys(ROOFLINE_KEYS)
    out["gpu"] = gpu_name
    if profile is not None and profile.hardware.device == "cpu":
        out["why"] = "a CPU profile: no GPU memory-bandwidth roofline"
        return out
    if not gpu_name:
        out["why"] = "GPU unknown (pass --gpu NAME, or run on the machine that serves)"
        return out
    found = memory_bandwidth(gpu_name)
    if found is None:
        out["why"] = f"no memory bandwidth for GPU {gpu_name!r} in the GPU table"
        return out
    model, gbs = found
    out.update(gpu_model=model.key, memory_bandwidth_gb_s=gbs, bandwidth_source=BANDWIDTH_SOURCE)
    if profile is None:
        out["why"] = "profile unknown (pass --profile): weight bytes per GPU come from it"
        return out
    out["tensor_parallel_size"] = profile.parallel.tensor_parallel_size or 1
    out["pipeline_parallel_size"] = profile.parallel.pipeline_parallel_size or 1
    db = decode_bytes(profile, model.key, weights)
    if db.read_bytes_per_token <= 0:
        out["why"] = f"weights too small to bound decode ({db.weight_bytes_per_gpu} bytes per GPU)"
        return out
    ceiling = gbs * 1e9 / db.read_bytes_per_token
    out.update(weight_bytes_per_gpu=db.weight_bytes_per_gpu, read_bytes_per_token_per_gpu=db.read_bytes_per_token,
               not_read_bytes_per_gpu=db.not_read, weights_source=db.source, ceiling_tokens_per_s=ceiling)
    single = next((lv for lv in levels if lv["concurrency"] == 1), None)
    if single is None:
        out["why"] = "no concurrency-1 level to compare"
    elif single["spec_decode"] is not None and single["spec_decode"]["drafts"] > 0:
        out["why"] = "MTP was on at concurrency 1: the roofline compares plain decode (run with MTP off)"
    elif single["decode_tokens_per_s_per_request"] is None:
        out["why"] = "no TPOT in the concurrency-1 result"
    else:
        measured = single["decode_tokens_per_s_per_request"]
        out.update(measured_tokens_per_s=measured, fraction=measured / ceiling,
                   measured_at="concurrency 1, MTP off: 1000 / mean TPOT (ms)")
    return out


# --------------------------------------------------------------------------- a whole run


def _read_json(path: Path) -> Any:
    """A run's JSON file through the one bounded reader (regular file, size cap, nesting cap).

    NaN and Infinity are read (vllm bench serve writes NaN for statistics of no request); every number
    used is checked for being finite (`_number`)."""
    text = read_text(path, MAX_JSON_BYTES, "bench run file")
    return parse_json(text, str(path), allow_nan=True)


def _read_text(path: Path) -> str:
    if not path.exists() and not path.is_symlink():
        raise ProfileError(f"{path}: missing (every level needs its /metrics snapshots before and after)")
    return read_text(path, MAX_TEXT_BYTES, "/metrics snapshot", errors="replace")


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json, its keys all present and each of its type (ProfileError, exit 2, naming the key otherwise)."""
    where = directory / "meta.json"
    meta = _read_json(where)
    if not isinstance(meta, dict):
        raise ProfileError(f"{where}: not a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ProfileError(f"{where}: {missing[0]}: missing (keys: {', '.join(META_KEYS)}; null where unknown)")
    for key in META_TEXT_KEYS:
        value = meta[key]
        if value is not None and (not isinstance(value, str) or len(value) > MAX_META_TEXT):
            raise ProfileError(f"{where}: {key}: must be text (at most {MAX_META_TEXT} characters) or null, "
                               f"not {printable(repr(value), 60)}")
    for key in META_INT_KEYS:
        value = meta[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53):
            raise ProfileError(f"{where}: {key}: must be a whole number (0 or more) or null, not {printable(repr(value), 60)}")
    if meta["url"] is not None:
        meta["url"] = redact_url(meta["url"])  # a hand-written run may carry credentials: never shown or saved again
    return meta


def concurrency_levels(directory: Path) -> list[int]:
    """The levels a run directory holds (c1.json, c4.json, ...), in increasing order."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError as exc:
        raise ProfileError(f"{directory}: cannot list: {exc.strerror or exc}") from None
    levels = sorted(int(m.group(1)) for m in map(_LEVEL_FILE.match, names) if m)
    if not levels:
        raise ProfileError(f"{directory}: no c<CONCURRENCY>.json (vllm bench serve result) in it")
    return levels


def read_levels(directory: Path, model: str | None) -> list[dict[str, Any]]:
    out = []
    for c in concurrency_levels(directory):
        result_path, before, after = level_paths(directory, c)
        result = _read_json(result_path)
        if not isinstance(result, dict):
            raise ProfileError(f"{result_path}: not a JSON object")
        out.append(level_report(c, result, _read_text(before), _read_text(after), model, str(result_path)))
    return out


def mtp_k_of(meta: Mapping[str, Any], levels: Sequence[Mapping[str, Any]]) -> int | None:
    """k from meta.json, else what the counters show (draft tokens / drafts), else 0 when no level drafted."""
    if isinstance(meta.get("mtp_k"), int):
        return int(meta["mtp_k"])
    ks = [lv["spec_decode"]["num_speculative_tokens"] for lv in levels if lv["spec_decode"] and lv["spec_decode"]["drafts"]]
    if ks:
        return int(ks[0])
    return 0 if levels else None


def run_report(meta: Mapping[str, Any], levels: list[dict[str, Any]], roof: dict[str, Any], directory: str | None = None) -> dict[str, Any]:
    meta = dict(meta)
    notes = []
    k = mtp_k_of(meta, levels)
    drafted = any(lv["spec_decode"] and lv["spec_decode"]["drafts"] for lv in levels)
    if meta.get("mtp_k") == 0 and drafted:
        notes.append("meta.json says MTP off (mtp_k 0) but the server drafted: the counters win")
    if meta.get("mtp_k") is None:
        meta["mtp_k"] = k
    if roof["fraction"] is not None and roof["fraction"] > 1.05:
        notes.append("single-stream decode measured above the roofline: the GPU, the profile or its weights "
                     "do not match the server that ran (or the weights are not what the estimator assumes)")
    return {"format": FORMAT, "directory": directory, "meta": meta, "levels": levels, "roofline": roof, "notes": notes}


def failed_levels(report: Mapping[str, Any]) -> list[int]:
    """Levels where a request failed or none completed."""
    return [lv["concurrency"] for lv in report["levels"] if lv["failed"] or not lv["completed"]]


# --------------------------------------------------------------------------------- text


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with about `digits` significant digits, '-' for none."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def _triple(stats: Mapping[str, float | None], scale: float = 1.0) -> str:
    return "/".join(fmt(None if stats[f"p{p}"] is None else stats[f"p{p}"] * scale) for p in PERCENTILES)  # type: ignore[operator]


def run_title(report: Mapping[str, Any]) -> str:
    """The run's name in tables and charts (the label, profile or model: external text, made printable)."""
    m = report["meta"]
    label = printable(m.get("label") or m.get("profile") or m.get("model") or "run", 120)
    k = m.get("mtp_k")
    mtp = "MTP ?" if k is None else ("MTP off" if k == 0 else f"MTP k={printable(k, 20)}")
    return f"{label} ({mtp})" if "MTP" not in label else label


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal report of one run."""
    m = report["meta"]
    where = redact_url(m["url"]) if m.get("url") else printable(report.get("directory"), 200)
    head = [f"bench {run_title(report)}: model {printable(m.get('model'), 200)}, vLLM {printable(m.get('vllm_version') or '?', 60)}, "
            f"{printable(m.get('input_len'), 20)} tokens in / {printable(m.get('output_len'), 20)} out, {where}"]
    cols = ["conc", "done", "out tok/s", "req/s", "TTFT ms p50/90/99", "TPOT ms p50/90/99", "ITL ms p50/90/99",
            "E2E s p50/90/99", "accept", "acc.len"]
    rows = []
    for lv in report["levels"]:
        sd = lv["spec_decode"]
        accept = "-" if sd is None or sd["acceptance_rate"] is None else f"{100 * sd['acceptance_rate']:.1f}%"
        length = "-" if sd is None else fmt(sd["mean_acceptance_length"])
        done = f"{lv['completed']}" + (f"+{lv['failed']}F" if lv["failed"] else "")
        rows.append([str(lv["concurrency"]), done, fmt(lv["output_tokens_per_s"]), fmt(lv["requests_per_s"]),
                     _triple(lv["ttft_ms"]), _triple(lv["tpot_ms"]), _triple(lv["itl_ms"]), _triple(lv["e2e_ms"], 0.001),
                     accept, length])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = head + ["  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  " + "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("  " + format_roofline(report["roofline"]))
    for lv in report["levels"]:
        lines += [f"  note: concurrency {lv['concurrency']}: {printable(n)}" for n in lv["notes"]]
    lines += [f"  note: {printable(n)}" for n in report["notes"]]
    return "\n".join(lines)


def format_roofline(roof: Mapping[str, Any]) -> str:
    if roof["ceiling_tokens_per_s"] is None:
        return f"roofline: n/a: {roof['why']}"
    gb = roof["read_bytes_per_token_per_gpu"] / 1e9
    text = (f"roofline: {roof['gpu_model']} {fmt(roof['memory_bandwidth_gb_s'])} GB/s / {gb:.2f} GB read per token per GPU "
            f"(TP {roof['tensor_parallel_size']}) = {fmt(roof['ceiling_tokens_per_s'])} tok/s for one stream")
    if roof["fraction"] is not None:
        text += f"; measured {fmt(roof['measured_tokens_per_s'])} tok/s = {100 * roof['fraction']:.0f} % of it"
    else:
        text += f"; no measured fraction: {roof['why']}"
    return text


# ------------------------------------------------------------------------------ MTP worth


def step_ms(report: Mapping[str, Any]) -> float | None:
    """One decode step (ms): ITL p50 at concurrency 1, where each streamed chunk is one step (with MTP a
    chunk carries the verified token and the accepted drafts)."""
    level = next((lv for lv in report["levels"] if lv["concurrency"] == 1), None)
    return None if level is None else level["itl_ms"]["p50"]


def measured_acceptance(report: Mapping[str, Any]) -> float | None:
    """Per-position acceptance a over the run's levels (mean accepted drafts per step solved for a), or None."""
    from launcher.engine.mtp import acceptance_from_mean_accepted

    k = report["meta"].get("mtp_k")
    drafts = sum(lv["spec_decode"]["drafts"] for lv in report["levels"] if lv["spec_decode"])
    accepted = sum(lv["spec_decode"]["accepted_tokens"] for lv in report["levels"] if lv["spec_decode"])
    if not isinstance(k, int) or k < 1 or drafts <= 0:
        return None
    return acceptance_from_mean_accepted(accepted / drafts, k)


def mtp_worth(mtp_report: Mapping[str, Any], off_report: Mapping[str, Any], acceptance: float | None = None) -> Any:
    """`fit.mtp.MtpWorth` of an MTP run against an MTP-off run (both with a C=1 level), or None.

    The acceptance used: `acceptance` (the user's), else the MTP run's measured one when it is above 0,
    else the documented planning value (fit.mtp.PLANNING_ACCEPTANCE); the result names which.
    """
    from launcher.engine.mtp import MtpWorth, choose_acceptance

    k = mtp_report["meta"].get("mtp_k")
    step, step_off = step_ms(mtp_report), step_ms(off_report)
    if not isinstance(k, int) or k < 1 or not step or not step_off:
        return None
    a, source = choose_acceptance(measured_acceptance(mtp_report), acceptance, given_first=True)
    return MtpWorth(k, step, step_off, a, source)


def mtp_worth_lines(reports: Sequence[Mapping[str, Any]], acceptance: float | None = None) -> list[str]:
    """For `bench --replay A B ...`: each MTP run against the MTP-off run of the same GPU (first one found)."""
    lines = []
    offs = [r for r in reports if r["meta"].get("mtp_k") == 0 and step_ms(r)]
    for r in reports:
        k = r["meta"].get("mtp_k")
        if not isinstance(k, int) or k < 1:
            continue
        off = next((o for o in offs if o["meta"].get("gpu") == r["meta"].get("gpu")), None)
        if off is None:
            continue
        worth = mtp_worth(r, off, acceptance)
        if worth is not None:
            lines.append(f"{run_title(r)} vs {run_title(off)}: {worth.line()}")
    return lines
