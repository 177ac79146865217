"""`launcher wait` and `launcher smoke`: is the server ready, and is it right."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from launcher.errors import NotReadyError, ProfileError
from launcher.live.readiness import DEFAULT_TIMEOUT_S, DEFAULT_URL, Progress, printable
from launcher.numbers import MAX_SECONDS, Finite

API_KEY_ENV_DEFAULT = "VLLM_API_KEY"  # what vLLM itself reads when started without --api-key


def api_key_from_env(var: str | None) -> str | None:
    """The key in `var`; an explicitly named variable must be set, the default may be absent."""
    if var is None:
        return os.environ.get(API_KEY_ENV_DEFAULT) or None
    value = os.environ.get(var)
    if not value:
        raise ProfileError(f"--api-key-env: environment variable {var} is not set")
    return value


def _url_option(fn: Any) -> Any:
    return click.option(
        "--url", default=DEFAULT_URL, show_default=True, envvar="LAUNCHER_URL", show_envvar=True,
        help="Base URL of the vLLM server, http:// or https:// (a trailing /v1 is accepted; redirects are not followed).",
    )(fn)


def _api_key_option(fn: Any) -> Any:
    return click.option(
        "--api-key-env", metavar="VAR", default=None,
        help=f"Environment variable holding the server's API key (default: {API_KEY_ENV_DEFAULT} when set).",
    )(fn)


def _echo_progress(p: Progress) -> None:
    if p.stage == "ready":
        return  # the command prints its own ready line
    click.echo(f"launcher: waiting ({p.elapsed_s:.0f} s): {p.detail}", err=True)


@click.command()
@_url_option
@click.option("--timeout", type=Finite(min=0, max=MAX_SECONDS), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to wait in all, the server's answers included.")
@click.option("--model", default=None, help="Model id that must be listed (default: any).")
@click.option("--interval", type=Finite(min=0.1, max=MAX_SECONDS), default=2.0, show_default=True, help="Seconds between looks.")
@_api_key_option
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def wait(url: str, timeout: float, model: str | None, interval: float, api_key_env: str | None, quiet: bool) -> None:
    """Wait until a server lists its model: /health answers, then /v1/models lists it.

    Exit 0 when ready, 5 on timeout (the message names what was seen last).
    """
    from launcher.live.readiness import wait_ready

    info = wait_ready(
        url, timeout, model=model, progress=None if quiet else _echo_progress,
        api_key=api_key_from_env(api_key_env), interval=interval,
    )
    max_len = f", max_model_len {info.max_model_len}" if info.max_model_len else ""
    click.echo(f"ready: {info.shown_url} serves '{printable(info.model, 200)}'{max_len} (waited {info.elapsed_s:.1f} s)")


@click.command()
@_url_option
@click.option("--model", default=None, help="Model id to test (default: the first one listed).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_api_key_option
@click.option("--random-weights/--real-weights", "random_weights", default=None,
              help="Judge output or not. Default: detect the marker tools/make_tiny_model.py writes next to the weights.")
@click.option("--expect-mtp/--no-expect-mtp", "expect_mtp", default=None,
              help="Speculative decoding must (or must not) run. Default: n/a when /metrics has no spec-decode counters.")
@click.option("--check", "only", multiple=True, metavar="NAME", help="Run only this check (repeatable).")
@click.option("--request-timeout", type=Finite(min=1, max=MAX_SECONDS), default=300.0, show_default=True,
              help="Seconds per request, whole answer included (a trickling answer is cut there).")
@click.option("--verbose", "-v", is_flag=True, help="Show the evidence of every check, not only of warnings and failures.")
def smoke(
    url: str, model: str | None, as_json: bool, api_key_env: str | None, random_weights: bool | None,
    expect_mtp: bool | None, only: tuple[str, ...], request_timeout: float, verbose: bool,
) -> None:
    """Run the post-start smoke battery against a server.

    \b
    Checks: chat, reasoning, tool_call, tool_call_stream, tool_call_required,
    concurrency, spec_decode. Each passes, warns, fails or is n/a, with evidence.
    Exit 0 when nothing failed, 5 otherwise.
    """
    from launcher.live.smoke import CHECKS, run_smoke

    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise click.BadParameter(f"unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}", param_hint="--check")
    report = run_smoke(
        url, model, api_key_from_env(api_key_env),
        random_weights=random_weights, expect_spec_decode=expect_mtp, checks=only or None,
        request_timeout=request_timeout,
        on_check=None if as_json else _echo_check,
    )
    if as_json:
        # ASCII only: the server's text arrives escaped (\\u001b), never as a live terminal sequence.
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=True).replace("\x7f", "\\u007f"))
    else:
        click.echo(report.format_text(verbose))
    if not report.ok:
        raise NotReadyError(f"smoke failed: {', '.join(report.failed())}")


def _echo_check(check: Any) -> None:
    click.echo(f"launcher: smoke: {check.name}: {check.status} ({check.duration_s:.1f} s)", err=True)
