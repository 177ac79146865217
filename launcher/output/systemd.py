"""A systemd service for one box: `render --format systemd`. Pure: the unit text from the profile and how to call launcher.

The unit runs `launcher serve` (the preflight, then launcher execs vLLM, which becomes the service's main
process), so a start that cannot succeed fails in seconds with exit 3 instead of minutes into vLLM:

- `After=`/`Wants=` the network and `nvidia-persistenced.service` (the NVIDIA driver's daemon that keeps
  the GPUs initialised; an ordering only, so a machine without it still starts the service);
- `Restart=always` (vLLM exits 0 after its engine core died) with a back-off: 30 s between tries (systemd 254+ grows it to 5 min over 5 tries
  with RestartSteps/RestartMaxDelaySec, which older systemd ignores with a warning), and at most 5 starts
  in 30 min (StartLimit*), so a broken host does not loop forever;
- secrets only from an `EnvironmentFile` (HF_TOKEN, the variable `server.api_key_env` names), never in
  the unit, which is world-readable;
- stop: SIGTERM to vLLM alone (`KillMode=mixed`: vLLM's API server stops its own engine processes, as
  with `docker stop`), SIGKILL to what is left only after `TimeoutStopSec`, which is vLLM's drain
  (`--shutdown-timeout`, 0 by default) plus 60 s for its workers to release the GPUs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from launcher.output.render import Rendered
    from launcher.profile.load import Resolved
    from launcher.profile.schema import Profile

ENV_DIR = "/etc/launcher"
RESTART_SEC = 30
RESTART_STEPS = 5
RESTART_MAX_DELAY = "5min"
START_LIMIT_INTERVAL = "30min"
START_LIMIT_BURST = 5
WATCHDOG_WAIT_S = 1800  # --watchdog: how long the supervised start may take (the unit's own start has no limit)
STOP_MARGIN_S = 60  # beyond vLLM's own drain: worker teardown (VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS is 5) and freeing the GPUs
DRIVER_UNIT = "nvidia-persistenced.service"
LASTING_EXIT = 6  # `launcher serve` exits with this (LAUNCHER_LASTING_FAILURE_EXIT) on a failed check no restart heals
_SAFE = re.compile(r"^[A-Za-z0-9_./:=@+,-]+$")


@dataclass(frozen=True)
class Unit:
    """The unit file, its name, the environment file it reads and what that file must hold."""

    name: str  # launcher-<profile>.service
    text: str
    env_file: str
    env_keys: tuple[str, ...]  # variables the environment file should define (secrets)
    notes: tuple[str, ...]


UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) less its NUL


def unit_name(profile_name: str) -> str:
    """launcher-<profile>.service, with characters systemd unit names do not allow replaced by '-' and, past
    systemd's length limit, cut and ended with a hash of the whole name (so two long names stay apart)."""
    stem = re.sub(r"[^A-Za-z0-9:_.-]+", "-", profile_name).strip("-") or "profile"
    room = UNIT_NAME_MAX - len("launcher-") - len(".service") - len(".env")  # the environment file is named after it
    if len(stem) > room:
        import hashlib

        stem = stem[: room - 9] + "-" + hashlib.sha256(profile_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return "launcher-" + stem + ".service"


# --------------------------------------------------------------------------- systemd's quoting
# Every value the unit carries goes through one of these (systemd.syntax(7), systemd.service(5) "Command
# lines", systemd.exec(5) Environment=): an ExecStart= word, an Environment= assignment, or free text
# (Description=, comments). What systemd cannot carry (NUL) is refused with exit 2 (ProfileError).


def _c_escape(text: str) -> str:
    """`text` inside a double-quoted word: backslash, quote, control and invisible characters as C escapes
    (systemd unquotes them with EXTRACT_CUNESCAPE), so no value can end the word or the line."""
    from launcher.errors import ProfileError

    out = []
    for c in text:
        o = ord(c)
        if c in '\\"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif o == 0 or 0xD800 <= o <= 0xDFFF:
            raise ProfileError(f"systemd: {_shown(text)}: contains a NUL or an invalid character, which a unit file cannot carry")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not c.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(c)
    return "".join(out)


def exec_word(arg: str) -> str:
    """One ExecStart= word: double-quoted with C escapes when needed; `%` and `$` doubled (specifiers, variables)."""
    text = arg if _SAFE.match(arg) else '"' + _c_escape(arg) + '"'
    return text.replace("%", "%%").replace("$", "$$")


quote = exec_word  # the earlier name


def env_assignment(name: str, value: str) -> str:
    """One Environment= assignment, quoted: C escapes, `%` doubled (specifiers expand there, `$` does not)."""
    return '"' + _c_escape(f"{name}={value}").replace("%", "%%") + '"'


def unit_text(text: object) -> str:
    """Free text on a unit line (Description=, comments): printable on one line, `%` doubled, and never
    ending in an odd run of backslashes (which would continue the line into the next directive)."""
    from launcher.text import printable

    shown = printable(text).replace("%", "%%")
    trailing = len(shown) - len(shown.rstrip("\\"))
    return shown + "\\" if trailing % 2 else shown


def _shown(text: str) -> str:
    from launcher.text import printable

    return printable(repr(text), 60)


def drain_seconds(argv: Sequence[str]) -> int:
    """vLLM's --shutdown-timeout in the rendered command (0, its default, when absent)."""
    for i, token in enumerate(argv):
        value = None
        if token.startswith("--shutdown-timeout="):
            value = token.split("=", 1)[1]
        elif token == "--shutdown-timeout" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            try:
                return max(0, int(float(value)))
            except (ValueError, OverflowError):
                return 0
    return 0


def unit(
    profile: "Profile",
    rendered: "Rendered",
    profile_name: str,
    serve_args: Sequence[str],
    launcher: Sequence[str],
    watchdog: float | None = None,
    environ: "Mapping[str, str] | None" = None,
) -> Unit:
    """The unit for `profile` (already rendered and checked as `rendered`).

    `serve_args` are the arguments `launcher serve` needs to resolve the same profile on this machine
    (--profile NAME-or-PATH, --profiles-dir, --set, then `--` and extra vLLM args); `launcher` is how to
    run launcher itself (its absolute path, or the Python interpreter and `-m launcher`). `environ` (default:
    this process's) holds the launcher variables the render was checked with; the unit carries them.
    """
    import os

    name = unit_name(profile_name)
    env_file = f"{ENV_DIR}/{name[: -len('.service')]}.env"
    carried, moved = carried_environment(os.environ if environ is None else environ)
    serve_args, moved_sets = without_secret_sets(serve_args)
    secrets = tuple(dict.fromkeys(("HF_TOKEN", *rendered.env_from.values(), *moved_sets, *moved)))
    stop = drain_seconds(rendered.argv) + STOP_MARGIN_S
    supervised = ["--wait", "--wait-timeout", str(WATCHDOG_WAIT_S), "--health-timeout", f"{watchdog:g}"] if watchdog else []
    if supervised and "--" in serve_args:  # launcher's own options go before `--` (what follows it is vLLM's)
        cut = list(serve_args).index("--")
        serve_args = [*serve_args[:cut], *supervised, *serve_args[cut:]]
    else:
        serve_args = [*serve_args, *supervised]
    exec_start = " ".join(exec_word(a) for a in [*launcher, "serve", *serve_args])
    environment = [f"Environment={env_assignment(k, v)}" for k, v in carried.items()]
    # without its API key `launcher serve` refuses, and a secret given on the command line must come from the file
    required = bool(rendered.env_from) or bool(moved_sets) or bool(moved)
    lines = [
        f"# Rendered by launcher from profile {unit_text(profile_name)}: {unit_text(profile.model.name)} on vLLM "
        f"{unit_text(profile.vllm.version)}.",
        f"# Install: sudo install -m 0644 THIS_FILE /etc/systemd/system/{name}",
        f"#          sudo install -d {ENV_DIR} && sudo install -m 0600 /dev/null {env_file}   (then write the secrets below into it)",
        f"#          sudo systemctl daemon-reload && sudo systemctl enable --now {name}",
        f"# Logs:    journalctl -u {name} -f",
        "[Unit]",
        f"Description=vLLM serving {unit_text(profile.model.name)} (launcher profile {unit_text(profile_name)})",
        f"After=network-online.target {DRIVER_UNIT}",
        "Wants=network-online.target",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=exec",
        ("# launcher serve checks the GPUs, starts vLLM as its child and watches it: a hung engine (no healthy answer for "
         f"{watchdog:g} s) is stopped, exit 5; an engine that dies, exit 4." if watchdog else
         "# launcher serve checks the GPUs (exit 3 when the profile cannot run), then execs vLLM in its place."),
        f"ExecStart={exec_start}",
        f"# Secrets, one VARIABLE=value per line: {', '.join(secrets)}. Never in this file (it is world-readable).",
        f"EnvironmentFile={'' if required else '-'}{env_file}",
        "Environment=PYTHONUNBUFFERED=1",
        "# The compile cache (torch.compile, Triton, FlashInfer, CUDA) survives restarts in /var/cache/vllm, unless the profile",
        "# names its own vllm.cache_dir: a restart then loads the kernels instead of compiling them (launcher check shows it).",
        "CacheDirectory=vllm",
        "Environment=VLLM_CACHE_ROOT=%C/vllm",
        *(["# The launcher settings of the environment this unit was rendered (and checked) in:"] if environment else []),
        *environment,
        f"SyslogIdentifier={name[: -len('.service')]}",
        "# always, not on-failure: vLLM 0.32 exits 0 after its engine core died (docs/runbook.md#what-happens-when).",
        "Restart=always",
        f"RestartSec={RESTART_SEC}s",
        f"# systemd 254+: the delay grows from {RESTART_SEC} s to {RESTART_MAX_DELAY.replace('min', ' min')} over {RESTART_STEPS} restarts; older "
        "systemd ignores the next two lines (with a warning) and waits the same each time.",
        f"RestartSteps={RESTART_STEPS}",
        f"RestartMaxDelaySec={RESTART_MAX_DELAY}",
        f"# No restart where a retry cannot heal: exit 2 (a bad profile) and {LASTING_EXIT} (a GPU check that fails the same every time:",
        "# the profile does not fit these GPUs, too few or too old GPUs, driver, MIG). Exit 3 (memory held by another",
        "# process, a GPU not yet readable) may heal and is retried.",
        f"Environment=LAUNCHER_LASTING_FAILURE_EXIT={LASTING_EXIT}",
        f"RestartPreventExitStatus=2 {LASTING_EXIT}",
        "# SIGTERM to vLLM only; it stops its engine processes. SIGKILL to the rest after vLLM's drain + 60 s.",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={stop}s",
        "# Loading ~34 GB of weights and compiling takes minutes; the start itself is only the exec.",
        "TimeoutStartSec=infinity",
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    notes: list[str] = [
        f"systemd: secrets go in {env_file} (mode 0600): {', '.join(f'{k}=...' for k in secrets)}",
        f"systemd: stops with SIGTERM, then SIGKILL after {stop} s (vLLM's --shutdown-timeout {stop - STOP_MARGIN_S} s + {STOP_MARGIN_S} s)",
    ]
    if moved_sets or moved:
        notes.append(f"systemd: {', '.join(dict.fromkeys((*moved_sets, *moved)))} given on the command line or in a launcher "
                     f"variable: left out of the unit (world-readable); write it into {env_file}")
    text = "\n".join(lines) + "\n"
    _refuse_secret_values(text, rendered, environ if environ is not None else os.environ)
    return Unit(name, text, env_file, tuple(secrets), tuple(notes))


# Launcher's own variables, read when the unit's `launcher serve` resolves the profile: the unit must carry
# what the render was checked with, or it serves another configuration (profile/load.py reads them).
CARRIED = ("LAUNCHER_PROFILES_DIR", "LAUNCHER_SET", "LAUNCHER_EXTRA_ARGS")
CARRIED_PREFIX = "LAUNCHER__"


def carried_environment(environ: "Mapping[str, str]") -> "tuple[dict[str, str], list[str]]":
    """({variable: value} the unit sets with Environment=, [secret variables left to the EnvironmentFile]).

    LAUNCHER_PROFILES_DIR is made absolute (the service runs in /); a LAUNCHER__ENV__X whose X looks secret,
    and a LAUNCHER_SET item env.X=... of one, stay out of the unit: X then comes from the EnvironmentFile.
    """
    import os
    import shlex
    from pathlib import Path

    from launcher.text import looks_secret

    out: dict[str, str] = {}
    moved: list[str] = []
    for key in sorted(environ):
        value = environ[key]
        if key.startswith(CARRIED_PREFIX):
            parts = key[len(CARRIED_PREFIX):].split("__")
            if len(parts) >= 2 and parts[0].lower() == "env" and looks_secret(parts[-1], value):
                moved.append(parts[1])
                continue
            out[key] = value
        elif key == "LAUNCHER_PROFILES_DIR" and value:
            out[key] = os.pathsep.join(str(Path(d).resolve()) if d else d for d in value.split(os.pathsep))
        elif key == "LAUNCHER_SET" and value:
            try:
                items = shlex.split(value)
            except ValueError:
                out[key] = value  # the render refused it already; nothing to carry in a different form
                continue
            kept, gone = _split_secret_items(items)
            moved += gone
            if kept:
                out[key] = shlex.join(kept) if gone else value
        elif key in CARRIED and value:
            out[key] = value
    return out, moved


def without_secret_sets(args: Sequence[str]) -> "tuple[list[str], list[str]]":
    """`launcher serve` arguments without the `--set env.X=...` of a secret X (kept before `--` only); and those X."""
    out: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--":
            out += args[i:]
            break
        if args[i] == "--set" and i + 1 < len(args):
            _, gone = _split_secret_items([args[i + 1]])
            if gone:
                moved += gone
                i += 2
                continue
        out.append(args[i])
        i += 1
    return out, moved


def _split_secret_items(items: Sequence[str]) -> "tuple[list[str], list[str]]":
    from launcher.text import looks_secret

    kept: list[str] = []
    moved: list[str] = []
    for item in items:
        key, _, value = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) >= 2 and parts[0] == "env" and looks_secret(parts[-1], value):
            moved.append(parts[1])
        else:
            kept.append(item)
    return kept, moved


def _refuse_secret_values(text: str, rendered: "Rendered", environ: "Mapping[str, str]") -> None:
    """The last guard: no secret's value is anywhere in the world-readable unit (else exit 2, naming the variable)."""
    from launcher.errors import ProfileError
    from launcher.text import looks_secret

    values = dict(rendered.secret_values)
    for key, value in environ.items():
        parts = key[len(CARRIED_PREFIX):].split("__") if key.startswith(CARRIED_PREFIX) else []
        if len(parts) >= 2 and parts[0].lower() == "env" and looks_secret(parts[-1], value):
            values[key] = value
    for key, value in values.items():
        if len(value) >= 4 and (value in text or exec_word(value).strip('"') in text):
            raise ProfileError(f"systemd: the value of {key} would be written into the unit, which is world-readable; "
                               "give it through the environment file instead (e.g. not inside --set env={...})")


def serve_args(resolved: "Resolved", profiles_dirs: Sequence[str], sets: Sequence[str], extra_args: Sequence[str],
               node_rank: int | None = None) -> list[str]:
    """What `launcher serve` needs to resolve the same profile from any working directory: a shipped profile
    by name, any other by its absolute path, --profiles-dir absolute, the --set overrides and extra args as given."""
    from pathlib import Path

    from launcher.errors import ProfileError
    from launcher.profile.load import shipped_profiles_dir
    from launcher.profile.topology import topology

    path = Path(resolved.path).resolve()
    shipped = path.parent == Path(shipped_profiles_dir()).resolve()
    args = ["--profile", resolved.name if shipped else str(path)]
    for d in profiles_dirs:
        args += ["--profiles-dir", str(Path(d).resolve())]
    for item in sets:
        args += ["--set", item]
    if topology(resolved.profile).multi_node:
        if node_rank is None:
            raise ProfileError(f"profile {resolved.name} spans nodes: render one unit per machine with --node-rank R")
        args += ["--node-rank", str(node_rank)]
    if extra_args:
        args += ["--", *extra_args]
    return args


def this_launcher() -> list[str]:
    """How a service runs this launcher: its console script by absolute path, else this Python with -m launcher."""
    import os
    import shutil
    import sys
    from pathlib import Path

    # Absolute, but symlinks kept: a virtual environment's python is a link whose target is not the venv.
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "launcher" and argv0.is_file() and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    found = shutil.which("launcher")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "launcher"]
