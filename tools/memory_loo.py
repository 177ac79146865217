#!/usr/bin/env python3
"""Leave-one-out over every measured start of the real 27B shape: does the memory estimate hold on a start it
was not fitted to?

A start is a directory with a vLLM `serve.log` (VLLM_LOGGING_LEVEL=DEBUG: "Available KV cache memory", "GPU KV cache
size", the "Memory profiling takes" split and the per-mode "Estimated ... CUDA graph memory" lines), plus the profile
and `--set` overrides that started it and the GPU it ran on. Where those come from, first match wins:
- `start.json` in the directory: {"profile": NAME or PATH, "set": [...], "inventory": PATH, "gpu": TABLE NAME,
  "source": TEXT};
- `result.json` of a `launcher tune` candidate: its "argv" (`--profile X --set a=b ...`);
- `state.json` of tools/gpu_e2e/run_fullshape.sh: its "profile".
Profiles are looked up in the directory's and its parents' `profiles/` folders, then
tests/fixtures/gpu-fullshape/profiles; the GPU is the nearest `inventory*.json` at or above the directory (or
"gpu" of start.json / of the parent's `inventory.json` name). Starts without a log are data files
(tests/fixtures/memory-starts/*.json) with the figures their source states, marked as having no committed log.

For each start, the constants that vLLM's source leaves open (launcher.fit.estimate.Calibration) are fitted on all
the others (`fit_calibration`), and the start is predicted with them: available KV ± the estimate's own stated error
against what vLLM logged, and the KV tokens' error. The markdown table goes into docs/memory-model.md between the
markers (`--write`); `--check` fails when the committed table differs; `--constants` prints the fit on all starts
(what launcher ships as V1_CALIBRATION).

    python tools/memory_loo.py [--write | --check | --constants] [ROOT ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from launcher.errors import LauncherError  # noqa: E402
from launcher.fit.calibrate import StartLog, parse_log  # noqa: E402
from launcher.fit.estimate import GIB, FitResult, Observed, WeightSizes, estimate, fit_calibration  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
ROOTS = (FIXTURES / "gpu-fullshape", FIXTURES / "gpu-tune", FIXTURES / "memory-starts")
PROFILE_DIRS = (FIXTURES / "gpu-fullshape" / "profiles",)
DOC = REPO / "docs" / "memory-model.md"
BEGIN = "<!-- memory-loo:begin (tools/memory_loo.py --write) -->"
END = "<!-- memory-loo:end -->"


@dataclass(frozen=True)
class Start:
    """One measured start: the estimator's input, what vLLM logged, and where it came from."""

    name: str
    source: str
    observed: Observed
    available_kv_gib: float
    kv_tokens: Optional[int]  # vLLM's "GPU KV cache size"; None where the start stopped before it
    tokens_derived: bool  # True: computed from the logged K with the exact geometry (no token line)
    committed_log: bool
    describe: str = ""


def full_shape_weights() -> WeightSizes:
    """The weightless full-shape directory's index (tools/make_full_shape_model.py), as `launcher fit` reads it."""
    import importlib.util

    path = REPO / "tools" / "make_full_shape_model.py"
    module = sys.modules.get("make_full_shape_model")
    if module is None:
        spec = importlib.util.spec_from_file_location("make_full_shape_model", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_full_shape_model"] = module
        spec.loader.exec_module(module)
    _, parts = module.index()
    return WeightSizes(main_bytes=parts["language"] + parts["vision"], vision_bytes=parts["vision"], mtp_bytes=parts["mtp"],
                       source="tools/make_full_shape_model.py index", from_local_index=True)


def _profile_dirs(directory: Path) -> list[Path]:
    out = [p / "profiles" for p in [directory, *directory.parents] if (p / "profiles").is_dir() and p != REPO]
    return out + [d for d in PROFILE_DIRS if d not in out]


def _inventory_file(directory: Path) -> Optional[Path]:
    for p in [directory, *directory.parents]:
        found = sorted(p.glob("inventory*.json"))
        if found:
            return found[0]
        if p == REPO:
            break
    return None


def _how_started(directory: Path) -> tuple[str, list[str], dict[str, Any]]:
    """(profile, --set overrides, start.json's other keys) of a start directory."""
    manifest = directory / "start.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return str(data["profile"]), [str(s) for s in data.get("set", [])], data
    result = directory / "result.json"
    if result.is_file():
        argv = [str(a) for a in json.loads(result.read_text(encoding="utf-8")).get("argv", [])]
        profile, sets = "", []
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag == "--profile":
                profile = value
            elif flag == "--set":
                sets.append(value)
        if profile:
            return profile, sets, {}
    state = directory / "state.json"
    if state.is_file():
        return str(json.loads(state.read_text(encoding="utf-8"))["profile"]), [], {}
    raise LauncherError(f"{directory}: a serve.log without start.json, result.json or state.json saying which profile started it")


def _fit_result(profile_name: str, sets: list[str], directory: Path, gpu: Optional[str], inventory: Optional[Path],
                calibration: Any = None) -> FitResult:
    from launcher.fit.fit_profile import fit_profile
    from launcher.hardware.catalog import lookup
    from launcher.hardware.inventory import load_inventory
    from launcher.profile.load import resolve

    profile = resolve(profile_name, profiles_dirs=[str(d) for d in _profile_dirs(directory)], sets=sets, environ={}).profile
    target: Any = lookup(gpu) if gpu else (load_inventory(inventory) if inventory else None)
    if target is None:
        raise LauncherError(f"{directory}: no inventory*.json at or above it and no \"gpu\" named")
    result = fit_profile(profile, target, weights=full_shape_weights(), environ={})
    if calibration is not None:
        result = estimate(dataclasses.replace(result.inputs, calibration=calibration))
    return result


def _graphs(log: StartLog) -> tuple[tuple[str, Optional[float], int, float, int], ...]:
    return tuple((g.mode, g.first_capture_mib, g.graphs, g.per_graph_mib, g.largest or 0) for g in log.graph_samples)


def _tokens_from(result: FitResult, kv_gib: float) -> int:
    """vLLM's "GPU KV cache size" for a K it logged: whole blocks, requests of max_model_len (exact geometry)."""
    blocks = int(kv_gib * GIB // result.bytes_per_block)
    return int(blocks / result.blocks_per_request * result.inputs.max_model_len)


def load_log_start(directory: Path, name: str) -> Optional[Start]:
    """A start directory with a serve.log; None when vLLM never sized its KV cache there (a failed start)."""
    log = parse_log((directory / "serve.log").read_text(encoding="utf-8", errors="replace"))
    if not log.available_kv_gib:
        return None
    profile, sets, extra = _how_started(directory)
    inventory = Path(extra["inventory"]) if extra.get("inventory") else _inventory_file(directory)
    if inventory is not None and not inventory.is_absolute():
        inventory = (directory / inventory).resolve()
    result = _fit_result(profile, sets, directory, extra.get("gpu"), inventory)
    kv = min(s.value for s in log.available_kv_gib)
    tokens = int(log.kv_cache_tokens.value) if log.kv_cache_tokens is not None else None
    observed = Observed(name, result.inputs, log.torch_peak_gib.value if log.torch_peak_gib else None,
                        log.non_torch_gib.value if log.non_torch_gib else None, _graphs(log))
    source = str(extra.get("source") or f"{directory.relative_to(REPO) if directory.is_relative_to(REPO) else directory}/serve.log")
    return Start(name, source, observed, kv, tokens, False, True, " ".join(sets))


def load_data_starts(path: Path) -> list[Start]:
    """Starts whose figures are data (no committed log): tests/fixtures/memory-starts/*.json."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for s in data["starts"]:
        sets = [str(x) for x in s.get("set", [])]
        result = _fit_result(data["profile"], sets, path.parent, data.get("gpu"), None)
        graphs = tuple((g[0], g[1], int(g[2]), float(g[3]), int(g[4])) for g in s.get("graphs", []))
        observed = Observed(s["name"], result.inputs, s.get("torch_peak_gib"), s.get("non_torch_gib"), graphs)
        kv = float(s["available_kv_gib"])
        tokens = s.get("kv_cache_tokens")
        derived = tokens is None
        out.append(Start(s["name"], str(data["source"]), observed, kv, int(tokens) if tokens else _tokens_from(result, kv),
                         derived, bool(data.get("committed_log", False)), s.get("describe", "")))
    return out


def load_starts(roots: tuple[Path, ...] = ROOTS) -> list[Start]:
    """Every start under the roots: directories holding a serve.log (named by their path below the root's runs/ or
    the root) and data files; sorted by name."""
    starts: list[Start] = []
    for root in roots:
        if not root.exists():
            continue
        if root.is_file():
            starts += load_data_starts(root)
            continue
        for log in sorted(root.rglob("serve.log")):
            d = log.parent
            rel = d.relative_to(root)
            name = "/".join(rel.parts[1:] if rel.parts[:1] == ("runs",) else rel.parts)
            if root.name != "gpu-fullshape":
                name = f"{root.name}/{name}"
            start = load_log_start(d, name)
            if start is not None:
                starts.append(start)
        for data in sorted(root.glob("*.json")):
            if data.parent.name == "memory-starts":
                starts += load_data_starts(data)
    return sorted(starts, key=lambda s: s.name)


@dataclass(frozen=True)
class Row:
    name: str
    describe: str
    source: str
    predicted_gib: float
    stated_gib: float
    logged_gib: float
    tokens_predicted: int
    tokens_logged: Optional[int]
    tokens_derived: bool
    committed_log: bool

    @property
    def within(self) -> bool:
        return abs(self.predicted_gib - self.logged_gib) <= self.stated_gib + 0.005  # the log rounds to 0.01 GiB

    @property
    def tokens_error_pct(self) -> Optional[float]:
        if not self.tokens_logged:
            return None
        return 100.0 * (self.tokens_predicted - self.tokens_logged) / self.tokens_logged


def leave_one_out(starts: list[Start]) -> list[Row]:
    """Each start predicted with the constants fitted on all the others."""
    rows = []
    for s in starts:
        others = [o.observed for o in starts if o is not s]
        cal = fit_calibration(others)
        r = estimate(dataclasses.replace(s.observed.inputs, calibration=cal))
        rows.append(Row(s.name, s.describe, s.source, r.kv_available.bytes / GIB, r.uncertainty_bytes / GIB, s.available_kv_gib,
                        r.kv_cache_tokens, s.kv_tokens, s.tokens_derived, s.committed_log))
    return rows


def table(rows: list[Row]) -> str:
    head = ["| start | predicted KV (GiB) ± stated error | vLLM logged | KV tokens predicted / logged | KV tokens error | "
            "within stated error? | evidence |", "|---|---|---|---|---|---|---|"]
    out = list(head)
    for r in rows:
        err = r.tokens_error_pct
        logged_tokens = f"{r.tokens_logged:,}" + (" (from K)" if r.tokens_derived else "") if r.tokens_logged else "did not start"
        evidence = r.source + ("" if r.committed_log else " (no committed log)")
        out.append(f"| {r.name} | {r.predicted_gib:.2f} ± {r.stated_gib:.2f} | {r.logged_gib:.2f} | "
                   f"{r.tokens_predicted:,} / {logged_tokens} | {f'{err:+.1f} %' if err is not None else '-'} | "
                   f"{'yes' if r.within else 'NO'} | {evidence} |")
    worst = max((abs(r.tokens_error_pct or 0.0) for r in rows), default=0.0)
    inside = sum(r.within for r in rows)
    out.append("")
    out.append(f"{inside} of {len(rows)} held-out starts within their stated error; largest KV-token error {worst:.1f} %.")
    return "\n".join(out)


def render(roots: tuple[Path, ...] = ROOTS) -> str:
    return table(leave_one_out(load_starts(roots)))


def _with_table(doc: str, text: str) -> str:
    if BEGIN not in doc or END not in doc:
        raise LauncherError(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{text}\n{END}{tail}"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write the table into docs/memory-model.md")
    group.add_argument("--check", action="store_true", help="exit 1 when docs/memory-model.md's table differs")
    group.add_argument("--constants", action="store_true", help="print the constants fitted on every start")
    ap.add_argument("roots", nargs="*", type=Path, help="start directories or data files (default: the fixtures)")
    args = ap.parse_args(argv)
    roots = tuple(p.resolve() for p in args.roots) or ROOTS
    try:
        if args.constants:
            print(fit_calibration([s.observed for s in load_starts(roots)]))
            return 0
        text = render(roots)
        if args.write or args.check:
            doc = DOC.read_text(encoding="utf-8")
            new = _with_table(doc, text)
            if args.check:
                if new != doc:
                    print(f"{DOC.relative_to(REPO)}: the leave-one-out table is stale; run python tools/memory_loo.py --write",
                          file=sys.stderr)
                    return 1
                return 0
            DOC.write_text(new, encoding="utf-8")
            return 0
        print(text)
        return 0
    except (LauncherError, OSError, ValueError, KeyError) as exc:
        print(f"memory_loo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
