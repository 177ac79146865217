"""`launcher bench`: run vLLM's own load generator against a server and report its speed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from launcher.commands._common import PROFILE_HELP
from launcher.commands.wait import API_KEY_ENV_DEFAULT, api_key_from_env
from launcher.engine.mtp import PLANNING_ACCEPTANCE
from launcher.errors import NotReadyError, ProfileError
from launcher.live import bench as analysis
from launcher.live.readiness import DEFAULT_URL, base_url
from launcher.numbers import MAX_SECONDS, Finite
from launcher.text import printable, redact_url

if TYPE_CHECKING:
    from launcher.live.readiness import ReadyInfo
    from launcher.live.runtime import Runtime
    from launcher.profile.load import Resolved

INSTALL_HINT = ("install vLLM where launcher runs (pip install 'vllm[bench]', or pip install 'launcher[vllm]'), "
                "or pass --vllm PATH (a `vllm` executable, or a python that has vllm)")
DEFAULT_LEVEL_TIMEOUT_S = 3600.0

# `vllm bench serve` without the `vllm` console script (the CPU build's is broken): vLLM's own
# parser and entry point, imported from the interpreter that has vLLM.
BENCH_SHIM = """\
import sys
from vllm.benchmarks.serve import add_cli_args, main
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
parser = FlexibleArgumentParser(prog="vllm bench serve")
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


@dataclass(frozen=True)
class LiveOptions:
    url: str
    model: str | None
    tokenizer: str | None
    concurrency: tuple[int, ...]
    input_len: int
    output_len: int
    num_prompts: int | None
    gpu: str | None
    label: str | None
    timeout: float
    api_key: str | None
    warmup: bool = True


# ------------------------------------------------------------------------------ vLLM's CLI


def _is_python(path: str) -> bool:
    return Path(path).name.startswith("python")


def _python_has_vllm(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bench_command(vllm: str | None, resolved: "Resolved | None") -> list[str]:
    """The program that runs `vllm bench serve`: `--vllm`, else the way the profile starts vLLM, else `vllm`.

    A profile whose vLLM is started as `python -m ...` (the CPU build) gets that python with the
    bench entry point imported directly.
    """
    if vllm:
        found = shutil.which(vllm)
        if found is None:
            raise ProfileError(f"--vllm {vllm}: not found or not executable; {INSTALL_HINT}")
        if not _is_python(found):
            return [found, "bench", "serve"]
        python = found
    elif resolved is not None and _is_python(resolved.profile.vllm.command[0]):
        program = resolved.profile.vllm.command[0]
        python = shutil.which(program) or ""
        if not python:
            raise ProfileError(f"profile {resolved.name} starts vLLM with `{program}`, which is not on PATH; {INSTALL_HINT}")
    else:
        found = shutil.which("vllm")
        if found is None:
            raise ProfileError(f"launcher bench runs `vllm bench serve`, and there is no `vllm` on PATH; {INSTALL_HINT}")
        return [found, "bench", "serve"]
    if not _python_has_vllm(python):
        raise ProfileError(f"{python} has no vllm module; {INSTALL_HINT}")
    return [python, "-c", BENCH_SHIM]


def display_command(program: list[str], args: list[str]) -> str:
    """The command as printed: the entry point shortened, the URL's credentials redacted."""
    shown = program if program[1:2] != ["-c"] else [program[0], "-c", "<vllm bench serve entry point>"]
    shown_args = [redact_url(a) if i and args[i - 1] == "--base-url" else a for i, a in enumerate(args)]
    return printable(shlex.join(shown + shown_args))


# ------------------------------------------------------------------------------- the server


def _server(url: str, model: str | None, api_key: str | None) -> tuple["ReadyInfo", str]:
    """The model the server lists, and its /metrics text; exit 5 when either is missing."""
    from launcher.live.readiness import http_get, probe

    seen = probe(url, model, api_key, request_timeout=10.0)
    if seen.info is None:
        raise NotReadyError(f"server at {redact_url(base_url(url))} is not ready to benchmark: {seen.detail}")
    try:
        status, body = http_get(seen.info.url + "/metrics", 10.0)
    except OSError as exc:
        raise NotReadyError(f"server at {seen.info.shown_url}: /metrics unreachable ({printable(exc, 200)}); "
                            "launcher bench reads the MTP counters there") from None
    text = body.decode("utf-8", "replace")
    if status != 200 or "vllm:" not in text:
        what = f"answered {status}" if status != 200 else "has no vllm: metrics"
        raise NotReadyError(f"server at {seen.info.shown_url}: /metrics {what}; launcher bench needs a vLLM server's /metrics (MTP counters)")
    return seen.info, text


def _metrics(url: str) -> str:
    from launcher.live.readiness import http_get

    try:
        status, body = http_get(url + "/metrics", 30.0)
    except OSError as exc:
        raise NotReadyError(f"server at {redact_url(url)}: /metrics unreachable during the benchmark ({printable(exc, 200)})") from None
    if status != 200:
        raise NotReadyError(f"server at {redact_url(url)}: /metrics answered {status} during the benchmark")
    return body.decode("utf-8", "replace")


def _server_version(url: str) -> str | None:
    from launcher.live.readiness import http_get

    try:
        status, body = http_get(url + "/version", 10.0)
        version = json.loads(body).get("version") if status == 200 else None
    except (OSError, ValueError, AttributeError):
        return None
    return str(version) if version else None


def _local_gpu(url: str, runtime: "Runtime") -> str | None:
    """The first GPU's NVML name, when the server is on this machine and NVML answers."""
    from urllib.parse import urlparse

    if (urlparse(url).hostname or "") not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        inventory = runtime.probe()
    except Exception:  # no NVML, no GPU: the roofline says so
        return None
    return inventory.gpus[0].name if inventory.gpus else None


# ---------------------------------------------------------------------------- the live run


LOG_TAIL_BYTES = 1 << 20  # the end of vllm bench serve's log, where its error is


def last_error(log: Path) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            text = fh.read(LOG_TAIL_BYTES).decode("utf-8", "replace")
    except OSError:
        return "(no output)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if any(w in line for w in ("Error", "error:", "Exception", "No module named")):
            return printable(line, 300)
    return printable(lines[-1], 300) if lines else "(no output)"


def run_live(opts: LiveOptions, resolved: "Resolved | None", program: list[str], directory: Path,
             runtime: "Runtime", echo: Callable[[str], None]) -> None:
    """Benchmark every level into `directory` (the layout launcher.live.bench reads)."""
    info, _ = _server(opts.url, opts.model, opts.api_key)
    root = info.root or info.model
    tokenizer = opts.tokenizer or root
    profile = resolved.profile if resolved is not None else None
    meta = {
        "url": info.shown_url,  # saved without credentials
        "model": info.model,
        "profile": resolved.name if resolved is not None else None,
        "gpu": opts.gpu or (_local_gpu(info.url, runtime) if profile is not None and profile.hardware.device != "cpu" else None),
        "tensor_parallel_size": (profile.parallel.tensor_parallel_size or 1) if profile is not None else None,
        "mtp_k": (profile.speculative.num_speculative_tokens if profile.mtp_enabled and profile.speculative else 0)
        if profile is not None else None,
        "input_len": opts.input_len,
        "output_len": opts.output_len,
        "num_prompts": opts.num_prompts,
        "vllm_version": _server_version(info.url),
        "label": opts.label,
    }
    warmed = _warm_up(opts, info, profile, echo) if opts.warmup else None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if warmed is not None:
        (directory / "warmup.json").write_text(json.dumps(warmed, indent=2) + "\n", encoding="utf-8")
    env = dict(os.environ)
    if profile is not None:
        env.update(profile.env)  # e.g. HF_HUB_OFFLINE for the tokenizer on an offline machine
    if opts.api_key:
        env["OPENAI_API_KEY"] = opts.api_key  # vllm bench serve sends it as the bearer token
    for c in opts.concurrency:
        prompts = opts.num_prompts or analysis.default_num_prompts(c)
        args = analysis.bench_serve_args(url=info.url, model=root, served_model_name=info.model, tokenizer=tokenizer,
                                         input_len=opts.input_len, output_len=opts.output_len, num_prompts=prompts,
                                         concurrency=c, result_dir=str(directory))
        result, before, after = analysis.level_paths(directory, c)
        log = directory / f"c{c}.log"
        echo(f"launcher: bench: concurrency {c}, {prompts} prompts: {display_command(program, args)}")
        before.write_text(_metrics(info.url), encoding="utf-8")
        started = time.monotonic()
        try:
            with log.open("wb") as out:
                proc = subprocess.run(program + args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      timeout=opts.timeout)
        except subprocess.TimeoutExpired:
            raise NotReadyError(f"vllm bench serve at concurrency {c} did not finish within {opts.timeout:g} s (log: {log})") from None
        except OSError as exc:
            raise ProfileError(f"cannot run {program[0]}: {exc.strerror or exc}; {INSTALL_HINT}") from None
        after.write_text(_metrics(info.url), encoding="utf-8")
        if proc.returncode != 0 or not result.is_file():
            why = last_error(log)
            hint = f"; {INSTALL_HINT}" if "No module named" in why else ""
            raise NotReadyError(f"vllm bench serve failed at concurrency {c} (exit {proc.returncode}): {why}{hint}")
        echo(f"launcher: bench: concurrency {c} done in {time.monotonic() - started:.1f} s")


def _warm_up(opts: LiveOptions, info: "ReadyInfo", profile: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    """launcher.live.warmup before the first level, so no level pays a kernel compile; before its /metrics snapshot,
    so the warm-up's requests are in no level's numbers. Its record goes to DIR/warmup.json."""
    from launcher.live.warmup import DEFAULT_BATCHED_TOKENS, warm_up

    engine = profile.engine if profile is not None else None
    batched = (engine.max_num_batched_tokens if engine is not None else None) or max(DEFAULT_BATCHED_TOKENS, opts.input_len)
    echo("launcher: bench: warming up (not counted; --no-warmup skips)")
    result = warm_up(info.url, info.model, max_num_batched_tokens=batched, max_num_seqs=max(opts.concurrency),
                     mtp=bool(profile is not None and profile.mtp_enabled), timeout_s=opts.timeout, api_key=opts.api_key,
                     max_model_len=info.max_model_len)
    echo(f"launcher: bench: {result.summary()}")
    return result.to_json()


# ------------------------------------------------------------------------------- reporting


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def _profile_for(name: str | None, dirs: tuple[str, ...], sets: tuple[str, ...], notes: list[str]) -> "Resolved | None":
    """The profile meta.json names, by name only: a run directory is someone else's file, and must not make
    launcher read any path it chooses (`"profile": "/etc/shadow"`)."""
    from launcher.errors import LauncherError
    from launcher.profile.load import resolve

    if not name:
        return None
    if not _PROFILE_NAME.fullmatch(name) or name.endswith((".yaml", ".yml")):
        notes.append(f"profile {printable(repr(name), 80)} in meta.json is not a profile name (a path is not read from a run "
                     "directory); pass --profile for the roofline")
        return None
    try:
        return resolve(name, profiles_dirs=dirs, sets=sets)
    except LauncherError as exc:
        notes.append(f"profile {name!r} from meta.json not loaded ({printable(exc, 200)}); pass --profile for the roofline")
        return None


def report_run(directory: Path, resolved: "Resolved | None", gpu: str | None,
               dirs: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run directory -> its report; the profile and GPU override meta.json's."""
    meta = analysis.read_meta(directory)
    levels = analysis.read_levels(directory, meta.get("model"))
    notes: list[str] = []
    if resolved is None:
        resolved = _profile_for(meta.get("profile"), dirs, sets, notes)
    roof = analysis.roofline(gpu or meta.get("gpu"), resolved.profile if resolved else None, levels)
    report = analysis.run_report(meta, levels, roof, str(directory))
    report["notes"] += notes
    return report


def _write_outputs(reports: list[dict[str, Any]], json_out: str | None, chart: str | None, chart_term: bool,
                   echo: Callable[[str], None], acceptance: float | None = None, run_dirs: tuple[Path, ...] = ()) -> None:
    from launcher.live import bench_chart

    doc: dict[str, Any] = {"format": analysis.FORMAT, "runs": reports}
    offs = [analysis.mtp_worth(r, o, acceptance) for r in reports for o in reports if o["meta"].get("mtp_k") == 0 and r is not o]
    if any(w is not None for w in offs):
        doc["mtp_worth"] = [w.to_json() for w in offs if w is not None]
    if json_out and json_out != "-":
        _may_write(Path(json_out), "--json", run_dirs)
    if chart:
        _may_write(Path(chart), "--chart", run_dirs)
    if json_out == "-":
        click.echo(json.dumps(doc, indent=2))
    else:
        echo("\n\n".join(analysis.format_table(r) for r in reports))
        worth = analysis.mtp_worth_lines(reports, acceptance)
        if worth:
            echo("\n".join(["", "What MTP is worth (step = ITL p50 at C=1; tokens per step 1 + a + ... + a^k):", *worth]))
        if json_out:
            _write(Path(json_out), json.dumps(doc, indent=2) + "\n", "--json")
    if chart_term:
        echo(bench_chart.terminal_chart(reports))
    if chart:
        path = Path(chart)
        if path.suffix.lower() == ".png":
            bench_chart.png_chart(reports, path)
        else:
            _write(path, bench_chart.svg_chart(reports), "--chart")
        click.echo(f"launcher: bench: chart written to {path}", err=True)


# How a file launcher bench wrote begins: its JSON report, its SVG chart, a PNG (matplotlib's, written by --chart).
_OURS = {"--json": (b"{\n  \"format\": \"" + analysis.FORMAT.encode() + b"\"",), "--chart": (b"<svg ", b"\x89PNG\r\n")}


def _may_write(path: Path, option: str, run_dirs: tuple[Path, ...]) -> None:
    """Refuse, before anything is written, a path whose file launcher did not write, or a name of a run directory's
    own files: nothing the user made is overwritten (a run's c1.json, a profile, a device); a report or chart of
    an earlier bench is replaced."""
    try:
        where = path.resolve().parent
    except (OSError, RuntimeError):
        raise ProfileError(f"{option} {printable(path)}: cannot resolve the path") from None
    for d in run_dirs:
        try:
            inside = where == d.resolve()
        except (OSError, RuntimeError):
            inside = False
        if inside and (path.name in ("meta.json", CLAIM) or re.fullmatch(r"c[0-9]+\..*", path.name)):
            raise ProfileError(f"{option} {printable(path)}: a name of the run's own files in {printable(d)}; name another file")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise ProfileError(f"{option} {printable(path)}: exists and is not a plain file; name a new file")
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise ProfileError(f"{option} {printable(path)}: cannot read what is there: {exc.strerror or exc}") from None
    if not any(head.startswith(sig) for sig in _OURS[option]):
        raise ProfileError(f"{option} {printable(path)}: already exists and is not a launcher bench "
                           f"{'report' if option == '--json' else 'chart'}; name a new file (nothing was overwritten)")


def _write(path: Path, text: str, option: str) -> None:
    """Written whole or not at all: a temporary file beside it, renamed over it."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ProfileError(f"{option} {printable(path)}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _check_failures(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        bad = analysis.failed_levels(report)
        if bad:
            raise NotReadyError(f"bench: requests failed at concurrency {', '.join(map(str, bad))} ({analysis.run_title(report)}); see the report")


# ------------------------------------------------------------------------------------ CLI


def _concurrency(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated whole numbers, e.g. 1,4,16") from None
    if not levels or any(c < 1 for c in levels):
        raise click.BadParameter(f"{value!r}: each level must be 1 or more")
    return tuple(dict.fromkeys(levels))


def _chart_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and Path(value).suffix.lower() not in (".svg", ".png"):
        raise click.BadParameter(f"{value!r}: the chart is written as .svg (built in) or .png (needs matplotlib)")
    return value


@click.command()
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="LAUNCHER_URL", show_envvar=True,
              help="Base URL of the running vLLM server (a trailing /v1 is accepted).")
@click.option("--profile", "-p", "profile_name", default=None, help=PROFILE_HELP + " Gives TP, MTP k and weight bytes for the roofline.")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Directory of your own profiles, searched before the shipped ones (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one profile value (repeatable).")
@click.option("--concurrency", "-c", default=",".join(map(str, analysis.DEFAULT_CONCURRENCY)), show_default=True,
              callback=_concurrency, help="Concurrency levels (requests in flight), comma-separated; one run each.")
@click.option("--input-len", type=click.IntRange(min=1), default=analysis.DEFAULT_INPUT_LEN, show_default=True,
              help="Prompt tokens per request (random tokens).")
@click.option("--output-len", type=click.IntRange(min=1), default=analysis.DEFAULT_OUTPUT_LEN, show_default=True,
              help="Output tokens per request (EOS ignored, so exactly this many).")
@click.option("--num-prompts", "-n", type=click.IntRange(min=1), default=None,
              help="Requests per level [default: max(8, 4 x concurrency)].")
@click.option("--model", default=None, help="Served model id to benchmark (default: the first one the server lists).")
@click.option("--tokenizer", default=None, help="Tokenizer for the random prompts (default: the checkpoint the server loaded, its `root`).")
@click.option("--gpu", default=None, metavar="NAME",
              help="GPU model for the roofline, e.g. 'RTX 3090' (default: NVML of this machine when the server is local).")
@click.option("--label", default=None, help="Name of this run in the report and the chart (default: the profile).")
@click.option("--vllm", "vllm_path", default=None, metavar="PATH",
              help="The `vllm` executable, or a python that has vllm (default: as the profile starts vLLM, else `vllm` on PATH).")
@click.option("--api-key-env", metavar="VAR", default=None,
              help=f"Environment variable holding the server's API key (default: {API_KEY_ENV_DEFAULT} when set).")
@click.option("--timeout", type=Finite(min=1, max=MAX_SECONDS), default=DEFAULT_LEVEL_TIMEOUT_S, show_default=True,
              help="Seconds one level may take.")
@click.option("--no-warmup", "no_warmup", is_flag=True,
              help="Skip the warm-up that runs before the first level (a long prefill, a decode at the highest concurrency, "
              "a first request; not counted): without it the first level may include kernel compiles.")
@click.option("--keep", "keep_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Keep the run's files in DIR (meta.json, warmup.json, c<C>.json, c<C>.metrics-before/after.txt, c<C>.log).")
@click.option("--replay", "replay_dirs", multiple=True, type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="Report from a kept or hand-recorded run directory instead of benchmarking (repeatable: one table each, one chart).")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Write the report as JSON to FILE ('-': stdout, instead of the table).")
@click.option("--chart", default=None, metavar="FILE", callback=_chart_path,
              help="Draw throughput and latency across the levels: FILE.svg (built in) or FILE.png (needs matplotlib).")
@click.option("--chart-term", is_flag=True, help="Draw the chart in the terminal, after the table.")
@click.option("--acceptance", type=click.FloatRange(0, 1), default=None, metavar="A",
              help="MTP per-position acceptance for 'what MTP is worth' (default: the run's measured one, "
                   f"else the planning value {PLANNING_ACCEPTANCE}); needs an MTP run and an MTP-off run.")
@click.pass_context
def bench(ctx: click.Context, **params: Any) -> None:
    """Measure a running server: throughput, latency and MTP acceptance per concurrency level.

    \b
    Needs vLLM's load generator `vllm bench serve` where launcher runs (the
    `vllm` package; --vllm PATH to name it) and a vLLM server with /metrics.
    For each level it snapshots /metrics, runs `vllm bench serve` (random
    prompts, --ignore-eos, greedy, --max-concurrency C) and snapshots /metrics
    again. Reports output tokens/s, requests/s, TTFT, TPOT, ITL and end-to-end
    latency (p50/p90/p99), the MTP acceptance rate and mean acceptance length
    (from the /metrics counter deltas), and with --profile and a known GPU the
    memory-bandwidth roofline of single-stream decode and the fraction of it
    measured at concurrency 1 (meaningful with MTP off).
    --replay DIR reports from saved files without a server.
    Exit 2: bad option or vLLM missing; 5: server not ready, no /metrics, or
    requests failed.
    """
    from launcher.live.runtime import runtime_of

    run_bench(params, runtime_of(ctx), echo=click.echo)


def run_bench(params: dict[str, Any], runtime: "Runtime", echo: Callable[[str], None],
              resolved: "Resolved | None" = None) -> list[dict[str, Any]]:
    """The command's body; `serve --bench` calls it with the served profile already resolved."""
    dirs, sets = tuple(params["profiles_dirs"]), tuple(params["sets"])
    if resolved is None and params["profile_name"]:
        from launcher.commands._common import load_profile

        resolved = load_profile(params["profile_name"], dirs, sets)
    if params["replay_dirs"]:
        run_dirs = tuple(Path(d) for d in params["replay_dirs"])
        reports = [report_run(d, resolved, params["gpu"], dirs, sets) for d in run_dirs]
    else:
        opts = LiveOptions(
            url=params["url"], model=params["model"], tokenizer=params["tokenizer"], concurrency=params["concurrency"],
            input_len=params["input_len"], output_len=params["output_len"], num_prompts=params["num_prompts"],
            gpu=params["gpu"], label=params["label"], timeout=params["timeout"], api_key=params.get("api_key")
            or api_key_from_env(params["api_key_env"]), warmup=not params.get("no_warmup", False),
        )
        program = bench_command(params["vllm_path"], resolved)
        if params["keep_dir"]:
            directory = Path(params["keep_dir"])
            run_dirs = (directory,)
            _claim(directory)
            run_live(opts, resolved, program, directory, runtime, lambda s: click.echo(s, err=True))
            reports = [report_run(directory, resolved, opts.gpu)]
        else:
            run_dirs = ()
            with tempfile.TemporaryDirectory(prefix="launcher-bench-") as tmp:
                run_live(opts, resolved, program, Path(tmp), runtime, lambda s: click.echo(s, err=True))
                reports = [report_run(Path(tmp), resolved, opts.gpu)]
                reports[0]["directory"] = None
    _write_outputs(reports, params["json_out"], params["chart"], params["chart_term"], echo, params.get("acceptance"), run_dirs)
    _check_failures(reports)
    return reports


CLAIM = ".launcher-bench"  # created exclusively in a --keep directory: one bench writes there, ever


def _claim(directory: Path) -> None:
    """Make `directory` this run's alone: refused when it holds a run, or another bench claimed it (even now)."""
    old = sorted(directory.glob("c*.json")) + sorted(directory.glob("meta.json")) if directory.is_dir() else []
    if old:
        raise ProfileError(f"--keep {printable(directory)}: already holds a run ({printable(old[0].name)}); name a new directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ProfileError(f"--keep {printable(directory)}: another launcher bench writes into it (or did: {CLAIM} is there); "
                           "name a new directory") from None
    except OSError as exc:
        raise ProfileError(f"--keep {printable(directory)}: cannot use it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(f"pid {os.getpid()}\n")


def serve_hook(resolved: "Resolved", args_text: str, api_key: str | None, runtime: "Runtime") -> Callable[["ReadyInfo"], None]:
    """For `serve --bench`: once the server is ready, benchmark it with `launcher bench ARGS` options.

    The URL, model and profile are the served ones; the report goes to stderr (stdout carries vLLM's output).
    """
    try:
        ctx = bench.make_context("launcher serve --bench-args", shlex.split(args_text))
    except click.ClickException as exc:
        raise ProfileError(f"--bench-args: {exc.format_message()}") from None
    except ValueError as exc:
        raise ProfileError(f"--bench-args: {exc}") from None
    params = dict(ctx.params)
    for forbidden in ("replay_dirs", "profile_name"):
        if params[forbidden]:
            raise ProfileError(f"--bench-args: --{forbidden.split('_')[0]} does not apply to the server being started")
    if params["json_out"] == "-":
        raise ProfileError("--bench-args: --json - would mix with vLLM's output on stdout; use --json FILE")
    bench_command(params["vllm_path"], resolved)  # vLLM's load generator is there, before a long start

    def after_ready(info: "ReadyInfo") -> None:
        run_bench(dict(params, url=info.url, model=info.model, api_key=api_key), runtime,
                  echo=lambda s: click.echo(s, err=True), resolved=resolved)
        sys.stderr.flush()

    return after_ready
