"""The `launcher` command line: a lazy click group and the single error boundary."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from launcher import __version__
from launcher.errors import EXIT_INTERNAL, EXIT_USAGE, LauncherError
from launcher.text import printable

# Command name -> "module:attribute". Modules are imported only when their command runs,
# so `launcher render` never pays for NVML, HTTP clients or the engine schemas.
COMMANDS: dict[str, str] = {
    "profiles": "launcher.commands.profiles:profiles",
    "show": "launcher.commands.inspect:show",
    "explain": "launcher.commands.inspect:explain",
    "schema": "launcher.commands.inspect:schema",
    "render": "launcher.commands.render:render",
    "diff": "launcher.commands.render:diff",
    "serve": "launcher.commands.serve:serve",
    "gpus": "launcher.commands.gpus:gpus",
    "check": "launcher.commands.check:check",
    "fit": "launcher.commands.fit:fit",
    "calibrate": "launcher.commands.fit:calibrate",
    "engines": "launcher.commands.engines:engines",
    "wait": "launcher.commands.wait:wait",
    "tune": "launcher.commands.tune:tune",
    "smoke": "launcher.commands.wait:smoke",
    "bench": "launcher.commands.bench:bench",
}

SHORT_HELP: dict[str, str] = {
    "profiles": "List profiles (name, GPUs, TP, memory, context, MTP, what for).",
    "show": "Print a profile after layering, as YAML.",
    "explain": "Show every resolved value and which layer set it.",
    "schema": "Print the JSON Schema of a profile file.",
    "render": "Render as shell, json, yaml, env, compose, k8s or systemd.",
    "diff": "Show what differs between two rendered profiles.",
    "serve": "Check, print and exec vllm serve for a profile.",
    "gpus": "Read the GPUs through NVML (the inventory).",
    "check": "Preflight a profile against the GPUs or an inventory file.",
    "fit": "Estimate GPU memory and KV cache for a profile.",
    "calibrate": "Compare the estimate with a real vLLM start log.",
    "engines": "List known vLLM versions, the installed one, what differs; learn new ones.",
    "wait": "Wait until a server lists its model.",
    "smoke": "Run the post-start smoke battery against a server.",
    "bench": "Measure a server: tokens/s, latency, MTP acceptance, roofline.",
    "tune": "Find the fastest configuration that fits, by starting and measuring each.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            # click turns EPIPE into a silent exit 1 (its "internal error" code here); a reader that
            # went away is not an error: carry it past click to main(), which ends quietly.
            if _stdout_gone():
                raise StdoutClosed() from exc
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib

            name = args[0] if args else ""
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            if close and "No such command" in str(exc):
                raise click.UsageError(f"No such command '{name}'. Did you mean '{close[0]}'?") from None
            raise


class StdoutClosed(Exception):
    """Our stdout's reader closed the pipe (`launcher fit ... | head -1`)."""


def _stdout_gone() -> bool:
    """True when stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):
        return True  # no descriptor to ask: the write itself said EPIPE
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _available(name: str) -> bool:
    module_name = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="launcher")
def cli() -> None:
    """Serve havenoammo/Qwen3.6-27B-INT8-MTP with vLLM from a validated hardware profile.

    \b
    Exit codes: 0 ok, 1 internal error, 2 usage/profile error,
    3 hardware check failed, 4 engine could not start, 5 readiness/smoke failed.
    Set LAUNCHER_DEBUG=1 to see a traceback for any error.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every failure into one line and an exit code."""
    debug = os.environ.get("LAUNCHER_DEBUG", "") not in ("", "0")
    try:
        rc = cli.main(args=argv, prog_name="launcher", standalone_mode=False)
        sys.stdout.flush()  # a reader that went away shows here, inside the boundary
    except (BrokenPipeError, StdoutClosed):
        _quiet_stdout()
        sys.exit(0)
    except LauncherError as exc:
        if debug:
            raise
        click.echo(f"launcher: error: {printable(exc)}", err=True)  # paths and values from files: one line, no escape sequence
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("launcher: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the one place that hides tracebacks
        if debug:
            raise
        click.echo(
            f"launcher: internal error: {type(exc).__name__}: {printable(exc, 500)} "
            "(this is a bug; rerun with LAUNCHER_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc if isinstance(rc, int) else 0)


def _quiet_stdout() -> None:
    """The reader of our stdout is gone (`launcher profiles | head -1`): end quietly, as other CLIs do.

    Python flushes stdout again at exit; pointing the descriptor at /dev/null keeps that flush from
    printing "Exception ignored ... BrokenPipeError" (the recipe of the Python docs, signal module).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
