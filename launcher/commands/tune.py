"""`launcher tune`: start vLLM once per candidate on the live GPUs, bench each, report and write the winner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import click

from launcher.commands._common import profile_options
from launcher.errors import LauncherError, ProfileError
from launcher.live import tune as plan_mod
from launcher.numbers import MAX_SECONDS, Finite

if TYPE_CHECKING:
    from launcher.hardware.inventory import Gpu, Inventory
    from launcher.live.runtime import Runtime
    from launcher.profile.load import Resolved

READY_MARK = "launcher: serving in the foreground"  # live/supervise.py prints it once vLLM serves
STOP_GRACE_S = 120.0
# Exit codes of `launcher serve --wait` (errors.py) -> the stage a failed candidate stopped in.
STAGES = {2: "profile", 3: "preflight", 4: "engine start", 5: "readiness"}


# ------------------------------------------------------------------------------ candidates


def _backends(resolved: "Resolved", gpu: Optional["Gpu"], wanted: Optional[str]) -> list[Optional[str]]:
    """The attention backends that serve the profile's KV dtype on this GPU (engine.behaviour's table)."""
    from launcher.engine.behaviour import attention_route, behaviour

    p = resolved.profile
    if p.hardware.device == "cpu" or gpu is None:
        return [None]  # the CPU build has one attention path; no GPU: vLLM's choice only
    version = p.vllm.version
    if wanted:
        names = [b.strip().upper() for b in wanted.split(",") if b.strip()]
    else:
        names = list(behaviour(version).data["attention"]["backends"])
    return [b for b in names if attention_route(gpu.compute_capability, b, p.kv_cache.dtype, version).ok] or [None]


def _judge(resolved: "Resolved", c: plan_mod.Candidate, inventory: Optional["Inventory"], base_sets: Sequence[str],
           dirs: Sequence[str]) -> plan_mod.Candidate:
    """The preflight's verdict (memory fit included) and the tables' decode path, for one candidate."""
    import dataclasses

    from launcher.preflight.choice import run_preflight

    sets = [*base_sets, *c.sets]
    path = str(resolved.path)
    if resolved.profile.hardware.device == "cpu" or inventory is None:
        from launcher.profile.load import resolve

        try:
            resolve(path, profiles_dirs=dirs, sets=sets)
        except LauncherError as exc:
            return dataclasses.replace(c, excluded=str(exc).splitlines()[0])
        return c
    try:
        cand, report = run_preflight(path, dirs, sets, (), inventory_source=inventory)
    except LauncherError as exc:
        return dataclasses.replace(c, excluded=str(exc).splitlines()[0])
    decode = _decode_line(cand, inventory)
    kv = report.result("kv-fit")
    predicted = {k: kv.data[k] for k in ("kv_cache_tokens", "concurrency_at_max_len") if kv is not None and k in kv.data}
    if report.failures:
        first = report.failures[0]
        return dataclasses.replace(c, excluded=f"{first.id}: {first.message}", decode_path=decode, predicted=predicted)
    return dataclasses.replace(c, decode_path=decode, predicted=predicted)


def _decode_line(resolved: "Resolved", inventory: "Inventory") -> Optional[str]:
    from launcher.fit.fit_profile import decode_path_for

    gpu = inventory.gpus[0] if inventory.gpus else None
    if gpu is None:
        return None
    return decode_path_for(resolved.profile, gpu).line()


def build_plan(resolved: "Resolved", inventory: Optional["Inventory"], opts: dict[str, Any], base_sets: Sequence[str],
               dirs: Sequence[str]) -> dict[str, Any]:
    p = resolved.profile
    gpu = inventory.gpus[0] if inventory is not None and inventory.gpus else None
    mtp = plan_mod.parse_list(opts["mtp"], "--mtp", allow_off=True)
    if any(k > 3 for k in mtp):
        raise ProfileError("--mtp: k from 1 to 3 (above 4 the GDN path crashes, vllm#37035; 4 is allowed by serve, not tuned)")
    seqs: list[Optional[int]] = list(plan_mod.parse_list(opts["max_num_seqs"], "--max-num-seqs")) if opts["max_num_seqs"] \
        else [p.engine.max_num_seqs]
    batched: list[Optional[int]] = list(plan_mod.parse_list(opts["max_num_batched_tokens"], "--max-num-batched-tokens")) \
        if opts["max_num_batched_tokens"] else [p.engine.max_num_batched_tokens]
    objective = plan_mod.Objective(opts["objective"], opts["at"], opts["max_tpot"], opts["max_ttft"])
    raw = plan_mod.grid(_backends(resolved, gpu, opts["backends"]), mtp, seqs, batched)
    judged = [_judge(resolved, c, inventory, base_sets, dirs) for c in raw]
    return {
        "format": plan_mod.FORMAT,
        "profile": str(resolved.path),
        "profile_name": resolved.name,
        "sets": list(base_sets),
        "profiles_dirs": list(dirs),
        "gpu": gpu.name if gpu is not None else ("cpu" if p.hardware.device == "cpu" else None),
        "objective": objective.to_json(),
        "candidates": [c.to_json() for c in judged],
    }


# ------------------------------------------------------------------------------ one candidate


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to `launcher serve` (it forwards to vLLM), then SIGKILL to its group after the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return proc.wait()


def _grep(path: Path, needles: Sequence[str]) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln.strip()[:400] for ln in text.splitlines() if any(n in ln for n in needles)]


def run_candidate(plan: dict[str, Any], c: plan_mod.Candidate, directory: Path, opts: dict[str, Any], runtime: "Runtime",
                  echo: Callable[[str], None]) -> dict[str, Any]:
    """Start, bench (warm-up first, excluded), stop; the result as stored in DIR/<id>/result.json."""
    from launcher.commands.bench import LiveOptions, bench_command, last_error, report_run, run_live
    from launcher.live import bench as analysis
    from launcher.live.readiness import base_url
    from launcher.profile.load import resolve

    d = directory / c.id
    d.mkdir(parents=True, exist_ok=True)
    log = d / "serve.log"
    sets = [*plan["sets"], *c.sets]
    resolved = resolve(plan["profile"], profiles_dirs=plan["profiles_dirs"], sets=sets)
    argv = [sys.executable, "-m", "launcher", "serve", "--profile", plan["profile"], "--wait",
            "--wait-timeout", str(opts["wait_timeout"])]
    for dd in plan["profiles_dirs"]:
        argv += ["--profiles-dir", dd]
    for s in sets:
        argv += ["--set", s]
    started = time.monotonic()
    result: dict[str, Any] = {"candidate": c.to_json(), "argv": argv[1:], "started_at": _now()}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = started + opts["wait_timeout"] + 60
        while proc.poll() is None and time.monotonic() < deadline and not _grep(log, [READY_MARK]):
            time.sleep(1)
        if proc.poll() is not None or not _grep(log, [READY_MARK]):
            rc = _stop(proc)
            return {**result, "status": "failed", "stage": STAGES.get(rc, f"exit {rc}"), "exit": rc, "error": last_error(log),
                    "elapsed_s": round(time.monotonic() - started, 1)}
        result["ready_s"] = round(time.monotonic() - started, 1)
        levels = plan_mod.Objective(**_obj(plan)).levels
        echo(f"launcher: tune: {c.id}: serving after {result['ready_s']:.0f} s; benchmarking at C={','.join(map(str, levels))}")
        p = resolved.profile
        url = base_url(f"http://{p.server.host or '127.0.0.1'}:{p.server.port or 8000}")
        program = bench_command(opts["vllm_path"], resolved)
        common = dict(url=url, model=None, tokenizer=None, input_len=opts["input_len"], gpu=None, label=c.id,
                      timeout=opts["level_timeout"], api_key=None)
        warm = LiveOptions(concurrency=(max(levels),), output_len=16, num_prompts=max(levels), **common)
        t = time.monotonic()
        run_live(warm, resolved, program, d / "warmup", runtime, lambda s: None)
        result["warmup_s"] = round(time.monotonic() - t, 1)
        live = LiveOptions(concurrency=levels, output_len=opts["output_len"], num_prompts=opts["num_prompts"], **common)
        run_live(live, resolved, program, d / "bench", runtime, lambda s: echo("  " + s))
        report = report_run(d / "bench", resolved, None)
        result.update(status="ok", summary=plan_mod.result_summary(report, c.mtp_k),
                      acceptance=analysis.measured_acceptance(report), step_ms=analysis.step_ms(report))
    except LauncherError as exc:
        result.update(status="failed", stage="bench", error=str(exc).splitlines()[0])
    finally:
        rc = _stop(proc)
        result["exit"] = rc
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        says = _grep(log, ["setting cudagraph_mode", "GPU KV cache size", "Available KV cache memory", "Estimated CUDA graph memory",
                           "launcher: ready after", "launcher: time to ready by stage"])
        result["vllm_says"] = says[:40]  # vLLM's (and serve's) own lines on the decode path, the KV cache and readiness
    return result


def _obj(plan: dict[str, Any]) -> dict[str, Any]:
    o = plan["objective"]
    return {"kind": o["kind"], "at": o["at"], "max_tpot_ms": o["max_tpot_ms"], "max_ttft_ms": o["max_ttft_ms"]}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------ report


def _scored(plan: dict[str, Any], directory: Path, acceptance: Optional[float]) -> list[plan_mod.Scored]:
    objective = plan_mod.Objective(**_obj(plan))
    out = []
    for data in plan["candidates"]:
        c = plan_mod.Candidate.from_json(data)
        out.append(plan_mod.score(c, None if c.excluded else plan_mod.read_result(directory, c), objective, acceptance))
    return plan_mod.rank(out, objective)


def mtp_worth_lines(plan: dict[str, Any], directory: Path, acceptance: Optional[float]) -> list[str]:
    """Each MTP candidate against the MTP-off candidate of the same backend, seqs and batch (fit.mtp)."""
    from launcher.engine.mtp import MtpWorth, choose_acceptance

    results: list[tuple[plan_mod.Candidate, dict[str, Any]]] = []
    for data in plan["candidates"]:
        c = plan_mod.Candidate.from_json(data)
        r = plan_mod.read_result(directory, c)
        if r and r.get("status") == "ok" and r.get("step_ms"):
            results.append((c, r))
    lines = []
    for c, r in results:
        if not c.mtp_k:
            continue
        off = next((r2 for c2, r2 in results if not c2.mtp_k and (c2.backend, c2.max_num_seqs, c2.max_num_batched_tokens)
                    == (c.backend, c.max_num_seqs, c.max_num_batched_tokens)), None)
        off = off or next((r2 for c2, r2 in results if not c2.mtp_k), None)
        if off is None:
            continue
        a, src = choose_acceptance(r.get("acceptance"), acceptance)  # as the ranking chose it (live/tune.py::score)
        worth = MtpWorth(c.mtp_k, float(r["step_ms"]), float(off["step_ms"]), float(a), src)
        lines.append(f"{c.id} vs {off['candidate']['id']}: {worth.line()}")
    return lines


def format_report(plan: dict[str, Any], directory: Path, acceptance: Optional[float]) -> str:
    ranked = _scored(plan, directory, acceptance)
    lines = [f"launcher tune: {plan['profile_name']} on {plan['gpu'] or 'unknown GPU'}; objective: {plan['objective']['description']}",
             f"  {'#':>2}  {'candidate':<34} {'status':<9} {'decode path (tables)':<52} result"]
    for i, s in enumerate(ranked, 1):
        rank = str(i) if s.status == "ok" and s.feasible else "-"
        lines.append(f"  {rank:>2}  {s.candidate.id:<34} {s.status:<9} {(s.candidate.decode_path or '-').removeprefix('decode path: '):<52} {s.detail}")
    worth = mtp_worth_lines(plan, directory, acceptance)
    if worth:
        lines += ["", "What MTP is worth (step = ITL p50 at C=1; tokens per step 1 + a + ... + a^k):", *("  " + w for w in worth)]
    best = ranked[0] if ranked and ranked[0].status == "ok" and ranked[0].feasible else None
    lines.append("")
    lines.append(f"winner: {best.candidate.id} ({best.candidate.describe()}): {best.detail}" if best else "winner: none measured yet")
    return "\n".join(lines)


def report_json(plan: dict[str, Any], directory: Path, acceptance: Optional[float]) -> dict[str, Any]:
    ranked = _scored(plan, directory, acceptance)
    return {
        "format": plan_mod.FORMAT, "profile": plan["profile_name"], "gpu": plan["gpu"], "objective": plan["objective"],
        "ranking": [{"id": s.candidate.id, "status": s.status, "feasible": s.feasible, "value": s.value, "detail": s.detail,
                     "acceptance": s.acceptance, "acceptance_source": s.acceptance_source,
                     "decode_path": s.candidate.decode_path, "result": plan_mod.read_result(directory, s.candidate)}
                    for s in ranked],
        "mtp_worth": mtp_worth_lines(plan, directory, acceptance),
    }


def _chart(plan: dict[str, Any], directory: Path, path: Path) -> None:
    from launcher.commands.bench import report_run
    from launcher.live import bench_chart

    reports = []
    for data in plan["candidates"]:
        c = plan_mod.Candidate.from_json(data)
        r = plan_mod.read_result(directory, c)
        if r and r.get("status") == "ok":
            reports.append(report_run(directory / c.id / "bench", None, None))
    if reports:
        path.write_text(bench_chart.svg_chart(reports), encoding="utf-8")


# ------------------------------------------------------------------------------ CLI


def _inventory(runtime: "Runtime", resolved: "Resolved", inventory_file: Optional[str]) -> Optional["Inventory"]:
    from launcher.preflight.run import get_inventory

    if resolved.profile.hardware.device == "cpu":
        return None
    return get_inventory(inventory_file, runtime.probe)


def _new_file(path: Optional[str], option: str) -> Optional[Path]:
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        raise ProfileError(f"{option} {p}: already exists; launcher does not overwrite a file (name a new one)")
    if not p.parent.is_dir():
        raise ProfileError(f"{option} {p}: the directory {p.parent} does not exist")
    return p


@click.command()
@profile_options()
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: lowest TPOT at concurrency 1; throughput: most output tokens/s at --at N (limits: --max-tpot, --max-ttft).")
@click.option("--at", type=click.IntRange(min=1, max=4096), default=8, show_default=True, help="Concurrency of the throughput objective.")
@click.option("--max-tpot", type=Finite(min=0.001, max=MAX_SECONDS * 1000), default=None, metavar="MS",
              help="Throughput only among candidates with TPOT p50 at N within MS.")
@click.option("--max-ttft", type=Finite(min=0.001, max=MAX_SECONDS * 1000), default=None, metavar="MS",
              help="Throughput only among candidates with TTFT p50 at N within MS.")
@click.option("--mtp", default="off,1,2,3", show_default=True, help="MTP settings to try: off and/or k values (1-3).")
@click.option("--backends", default=None, metavar="A,B",
              help="Attention backends to try [default: every one that serves the profile's KV dtype on this GPU, by launcher's tables].")
@click.option("--max-num-seqs", "max_num_seqs", default=None, metavar="N,M", help="max_num_seqs values to try [default: the profile's].")
@click.option("--max-num-batched-tokens", "max_num_batched_tokens", default=None, metavar="N,M",
              help="max_num_batched_tokens values to try [default: the profile's].")
@click.option("--acceptance", type=click.FloatRange(0, 1), default=None, metavar="A",
              help="MTP acceptance to rank MTP candidates at when the run measured none (dummy weights) [default: the planning value 0.5].")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Where results are kept; an existing tune there resumes [default: ./launcher-tune-<profile>].")
@click.option("--budget", type=Finite(min=0.1, max=MAX_SECONDS / 60), default=None, metavar="MINUTES",
              help="Stop starting candidates once this many minutes have passed (a later run resumes).")
@click.option("--dry-run", is_flag=True, help="Print the candidates with the preflight's verdict and the decode path; start nothing.")
@click.option("--out", "out_file", default=None, metavar="FILE", help="Write the winner as a profile that extends this one (never overwrites).")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Write the report as JSON (never overwrites; '-': stdout).")
@click.option("--chart", default=None, metavar="FILE.svg", help="Throughput and latency of the measured candidates (never overwrites).")
@click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), default=None,
              help="Judge the candidates against this inventory file instead of the live GPUs (with --dry-run).")
@click.option("--input-len", type=click.IntRange(min=1), default=1024, show_default=True, help="Prompt tokens per benchmark request.")
@click.option("--output-len", type=click.IntRange(min=1), default=256, show_default=True, help="Output tokens per benchmark request.")
@click.option("--num-prompts", "-n", type=click.IntRange(min=1), default=None, help="Requests per level [default: max(8, 4 x concurrency)].")
@click.option("--wait-timeout", type=click.FloatRange(min=10), default=900, show_default=True, metavar="S",
              help="Seconds one candidate may take to serve.")
@click.option("--level-timeout", type=click.FloatRange(min=10), default=1800, show_default=True, metavar="S", help="Seconds one bench level may take.")
@click.option("--vllm", "vllm_path", default=None, metavar="PATH", help="The `vllm` (or python with vllm) that runs `vllm bench serve`.")
@click.pass_context
def tune(ctx: click.Context, profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...], **opts: Any) -> None:
    """Find the fastest configuration of a profile that fits these GPUs, by measuring it.

    \b
    Starts vLLM once per candidate (`launcher serve --wait`), benchmarks it
    with `launcher bench` (vLLM's load generator; a warm-up first, excluded),
    stops it, and ranks the candidates by the objective. Candidates: MTP off
    and k = 1..3, the attention backends that serve the profile's KV dtype on
    this GPU, and the max_num_seqs / max_num_batched_tokens given; only those
    the preflight (memory fit included) passes are started. Each candidate's
    decode path (attention backend, CUDA-graph mode, graphs) is predicted by
    launcher's tables and checked against vLLM's log. Results live in --dir:
    run again to resume, or to re-report. MTP candidates on dummy weights
    accept nothing; they are ranked at --acceptance (or the planning value)
    and the break-even acceptance is printed.
    Exit 2: bad options; 3: no GPU to tune on; 5: no candidate could be measured.
    """
    from launcher.commands._common import load_profile
    from launcher.live.runtime import runtime_of

    runtime = runtime_of(ctx)
    resolved = load_profile(profile_name, profiles_dirs, sets)
    out_file = _new_file(opts["out_file"], "--out")
    json_file = _new_file(None if opts["json_out"] == "-" else opts["json_out"], "--json")
    chart_file = _new_file(opts["chart"], "--chart")
    directory = Path(opts["directory"] or f"launcher-tune-{resolved.name}")
    inventory = _inventory(runtime, resolved, opts["inventory_file"])
    plan = build_plan(resolved, inventory, opts, sets, profiles_dirs)
    old = plan_mod.read_plan(directory)
    if old is not None:
        why = plan_mod.same_plan(old, plan)
        if why:
            raise ProfileError(f"--dir {directory}: holds another tune ({why}); name a new directory")
        plan = old  # resume: the candidates as first judged
    err = lambda s: click.echo(s, err=True)  # noqa: E731
    if opts["dry_run"]:
        click.echo(_dry_run(plan))
        return
    directory.mkdir(parents=True, exist_ok=True)
    plan_mod.write_json(directory / plan_mod.PLAN, plan)
    _run_all(plan, directory, opts, runtime, err)
    acceptance = opts["acceptance"]
    click.echo(format_report(plan, directory, acceptance))
    if json_file is not None or opts["json_out"] == "-":
        import json

        text = json.dumps(report_json(plan, directory, acceptance), indent=2) + "\n"
        click.echo(text) if json_file is None else json_file.write_text(text, encoding="utf-8")
    if chart_file is not None:
        _chart(plan, directory, chart_file)
    ranked = _scored(plan, directory, acceptance)
    best = ranked[0] if ranked and ranked[0].status == "ok" and ranked[0].feasible else None
    if best is None:
        from launcher.errors import NotReadyError

        raise NotReadyError(f"tune: no candidate was measured cleanly (results in {directory})")
    if out_file is not None:
        out_file.write_text(plan_mod.winner_yaml(plan["profile_name"], best, plan_mod.Objective(**_obj(plan)), plan["gpu"] or "?", _now()),
                            encoding="utf-8")
        err(f"launcher: tune: the winner written to {out_file} (extends {plan['profile_name']})")


def _dry_run(plan: dict[str, Any]) -> str:
    lines = [f"launcher tune --dry-run: {plan['profile_name']} on {plan['gpu'] or 'no GPU'}; objective: {plan['objective']['description']}"]
    for data in plan["candidates"]:
        c = plan_mod.Candidate.from_json(data)
        verdict = f"excluded: {c.excluded}" if c.excluded else "would start"
        pred = c.predicted
        fit = f"; fit: {pred['kv_cache_tokens']:,} KV tokens" if "kv_cache_tokens" in pred else ""
        lines.append(f"  {c.id:<34} {verdict}{fit}")
        if c.decode_path:
            lines.append(f"  {'':<34} {c.decode_path}")
        lines.append(f"  {'':<34} --set " + " --set ".join(c.sets))
    return "\n".join(lines)


def _run_all(plan: dict[str, Any], directory: Path, opts: dict[str, Any], runtime: "Runtime", err: Callable[[str], None]) -> None:
    todo = [plan_mod.Candidate.from_json(d) for d in plan["candidates"]]
    todo = [c for c in todo if not c.excluded]
    started = time.monotonic()
    took: list[float] = []
    for i, c in enumerate(todo, 1):
        if plan_mod.read_result(directory, c) is not None:
            err(f"launcher: tune: [{i}/{len(todo)}] {c.id}: done before (kept)")
            continue
        elapsed = (time.monotonic() - started) / 60
        if opts["budget"] is not None:
            expect = (sum(took) / len(took)) / 60 if took else 0.0
            if elapsed + expect > opts["budget"]:
                err(f"launcher: tune: budget of {opts['budget']:g} min reached after {elapsed:.1f} min "
                    f"({len(todo) - i + 1} candidates left; run again to resume)")
                return
        err(f"launcher: tune: [{i}/{len(todo)}] {c.id}: {c.describe()} (elapsed {elapsed:.1f} min)")
        t = time.monotonic()
        result = run_candidate(plan, c, directory, opts, runtime, err)
        took.append(time.monotonic() - t)
        plan_mod.write_json(directory / c.id / plan_mod.RESULT, result)
        status = "ok" if result["status"] == "ok" else f"failed at {result.get('stage')}: {result.get('error', '')}"
        err(f"launcher: tune: [{i}/{len(todo)}] {c.id}: {status} ({took[-1]:.0f} s)")
