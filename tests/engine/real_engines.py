"""Real vLLM for the engine stage: venv discovery, one batch subprocess per venv, shipped profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher import engine
from tests.argv_cases import CASES

REPO = Path(__file__).resolve().parents[2]
BATCH = REPO / "tools" / "vllm_parse_batch.py"


def engine_cache() -> Path:
    return Path(os.environ.get("LAUNCHER_ENGINE_CACHE") or "~/.cache/launcher-engines").expanduser()


def require_engines() -> bool:
    return os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") == "1"


def venv_dir(version: str) -> Path:
    """The venv tools/prepare_engines.sh builds for a schema: <distribution>-<version>."""
    meta = engine.load_engine(version).meta
    return engine_cache() / f"{meta['distribution']}-{meta['vllm_version']}"


def python_for(version: str) -> Path:
    """The venv's python, or skip (fail under LAUNCHER_REQUIRE_ENGINES=1) when it is not ready."""
    venv = venv_dir(version)
    if not (venv / ".ready").exists():
        msg = f"vLLM {version} venv not ready: {venv}/.ready missing (run tools/prepare_engines.sh)"
        if require_engines():
            pytest.fail(msg)
        pytest.skip(msg)
    return venv / "bin" / "python"


@dataclass(frozen=True)
class Shipped:
    """A shipped profile: its name, target vLLM, and rendered argv after `vllm serve`."""

    name: str
    version: str
    argv: tuple[str, ...] | None
    problem: str | None = None


def _launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _argvs_in(doc: Any, label: str) -> list[tuple[str, list[str]]]:
    """Every {"argv": [...]} in a render document (one engine, or one per node/replica)."""
    found: list[tuple[str, list[str]]] = []
    if isinstance(doc, dict):
        if isinstance(doc.get("argv"), list):
            tag = doc.get("role") or doc.get("node_rank")
            found.append((f"{label}[{tag}]" if tag is not None else label, doc["argv"]))
        for key, value in doc.items():
            if key != "argv":
                found += _argvs_in(value, label)
    elif isinstance(doc, list):
        for item in doc:
            found += _argvs_in(item, label)
    return found


API_SERVER = ["python", "-m", "vllm.entrypoints.openai.api_server"]
CLI_MODULE = ["python", "-m", "vllm.entrypoints.cli.main", "serve"]  # `vllm serve` as a module (cpu-tiny-2node)


def _as_vllm_serve(argv: list[str]) -> list[str]:
    """The api_server entrypoint (cpu-tiny) takes `--model X`; its options are `vllm serve X`'s."""
    if argv[:3] == API_SERVER and "--model" in argv:
        i = argv.index("--model")
        return ["vllm", "serve", argv[i + 1], *argv[3:i], *argv[i + 2 :]]
    if argv[:4] == CLI_MODULE:
        return ["vllm", "serve", *argv[4:]]
    return argv


def shipped_profiles() -> list[Shipped] | str:
    """Every shipped profile rendered with `launcher render --format json`; a str says why none."""
    listing = _launcher("profiles", "--format", "json")
    if listing.returncode != 0:
        return f"`launcher profiles --format json` failed: {listing.stderr.strip()[-300:]}"
    out = []
    for item in json.loads(listing.stdout):
        name = item["name"]
        version = engine.resolve_version(item.get("vllm") or engine.DEFAULT_VERSION)
        rendered = _launcher("render", "--profile", name, "--format", "json")
        if rendered.returncode != 0:
            out.append(Shipped(name, version, None, f"render failed: {rendered.stderr.strip()[-300:]}"))
            continue
        commands = _argvs_in(json.loads(rendered.stdout), name)
        if not commands:
            out.append(Shipped(name, version, None, "no argv in the rendered JSON"))
        for label, argv in commands:
            argv = _as_vllm_serve(argv)
            if argv[:2] != ["vllm", "serve"]:
                out.append(Shipped(label, version, None, f"not a `vllm serve` command: {argv[:4]}"))
            else:
                out.append(Shipped(label, version, tuple(argv[2:])))
    return out


@dataclass
class RealRun:
    verdicts: dict[tuple[str, ...], dict[str, Any]]
    schema_text: str


class RealEngines:
    """Runs tools/vllm_parse_batch.py once per venv, for every argv the session needs."""

    def __init__(self, argvs: list[tuple[str, ...]]) -> None:
        self.argvs = list(dict.fromkeys(argvs))
        self.runs: dict[str, RealRun] = {}

    def get(self, version: str) -> RealRun:
        if version not in self.runs:
            python = python_for(version)
            with tempfile.TemporaryDirectory(prefix="launcher-engine-") as tmp:
                t = Path(tmp)
                (t / "in.json").write_text(json.dumps([list(a) for a in self.argvs]))
                # same file name as the committed schema, so meta.generator matches
                schema_out = t / f"vllm-{version}.json"
                env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
                proc = subprocess.run(
                    [str(python), str(BATCH), "--in", str(t / "in.json"), "--out", str(t / "out.json"),
                     "--schema-out", str(schema_out)],
                    capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
                )
                if proc.returncode != 0:
                    pytest.fail(f"vllm_parse_batch.py failed for vLLM {version}:\n{proc.stderr[-3000:]}")
                results = json.loads((t / "out.json").read_text())
                self.runs[version] = RealRun(dict(zip(self.argvs, results, strict=True)), schema_out.read_text())
        return self.runs[version]


SHIPPED = shipped_profiles()


# Options whose verdict depends on files of the machine that runs vLLM: left out of the sweep.
FILE_DEPENDENT = {"--chat-template", "--config"}
_GOOD = {"int": "3", "float": "0.5", "json": '{"a": 1}', "json-or-str": '{"a": 1}', "human-int": "2k",
         "human-int-or-auto": "auto", "reasoning-parser": "none", "lower-snake": "AUTO",
         "device-list": "0,1", "dataclass-json": "{}", "port": "8000"}
_BAD = {"int": "x", "float": "x", "json": "{", "json-or-str": "{x}", "human-int": "1.5K",
        "human-int-or-auto": "x", "dataclass-json": '{"no_such_key": 1}', "port": "80"}


def option_sweep(version: str) -> list[tuple[str, ...]]:
    """Every option of a schema, every spelling: a typical value, a bad one, none, `=`, `None`."""
    s = engine.load_engine(version)
    m = "org/model"
    out: list[tuple[str, ...]] = []
    for opt in s.options.values():
        if opt.action == "help" or opt.name in FILE_DEPENDENT:
            continue
        if opt.is_flag:
            out += [(m, f) for f in opt.flags]
            out.append((m, f"{opt.name}=1"))
            continue
        good = _GOOD.get(opt.type, "x")
        bad = _BAD.get(opt.type)
        if opt.choices:
            good = str(next(c for c in opt.choices if c is not None))
            bad = "no-such-choice"
        out += [(m, f, good) for f in opt.flags]
        out += [(m, f"{opt.name}={good}"), (m, opt.name)]
        if bad is not None:
            out.append((m, opt.name, bad))
        if opt.optional:
            out.append((m, opt.name, "None"))
        if opt.nargs == "+":
            out.append((m, opt.name, good, good))
    return out


def session_argvs() -> list[tuple[str, ...]]:
    argvs = [c.argv for c in CASES]
    if isinstance(SHIPPED, list):
        argvs += [s.argv for s in SHIPPED if s.argv is not None]
    for v in engine.shipped_versions():
        argvs += option_sweep(v)
    return argvs
