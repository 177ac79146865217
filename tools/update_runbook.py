#!/usr/bin/env python3
"""Regenerate the data-driven parts of docs/runbook.md from launcher itself.

Each part sits between two markers; the BEGIN marker names what produces it:

    <!-- BEGIN generated: launcher profiles --format markdown -->      output as is (Markdown)
    <!-- BEGIN generated (text): launcher check --profile X ... -->    output in a ```text block
    <!-- BEGIN generated: launcher.errors.EXIT_CODES -->                a named generator below
    <!-- BEGIN generated: docs/troubleshooting.md entries -->           (an index of that file's entries)
    ...
    <!-- END generated -->

Usage:  python tools/update_runbook.py          rewrite docs/runbook.md in place
        python tools/update_runbook.py --check  exit 1 when it is out of date (what the test runs)
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "docs" / "runbook.md"
INVENTORIES = "tests/fixtures/inventories"

BLOCK = re.compile(
    r"(?P<begin><!-- BEGIN generated(?P<text> \(text\))?: (?P<spec>.+?) -->\n)(?P<body>.*?)(?P<end><!-- END generated -->)",
    re.S,
)
# Exit codes a generating command may end with: 0, or 3 for a check that is meant to fail.
ACCEPTED_RC = (0, 3)


def launcher_output(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `launcher ARGS`, in this process, as the console script runs it."""
    from click.testing import CliRunner

    from launcher.cli import main

    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LAUNCHER") and k != "LAUNCHER_ENGINE_CACHE"}
    env.update({"COLUMNS": "100"})
    cwd = os.getcwd()
    with CliRunner().isolation(env=env) as (out, err, _):
        os.chdir(REPO)
        try:
            main(args)
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(cwd)
        return rc, out.getvalue().decode(), err.getvalue().decode()


def run_launcher(args: list[str]) -> str:
    """`launcher ARGS`: stdout then stderr, with the checkout's path made relative."""
    rc, stdout, stderr = launcher_output(args)
    if rc not in ACCEPTED_RC:
        raise SystemExit(f"update_runbook: `launcher {shlex.join(args)}` exited {rc}:\n{stderr}")
    text = (stdout + stderr).replace(str(REPO) + os.sep, "").replace(str(REPO), ".")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def exit_codes() -> str:
    from launcher.errors import EXIT_CODES

    rows = ["| exit code | meaning |", "|---|---|"]
    rows += [f"| {code} | {meaning} |" for code, meaning in sorted(EXIT_CODES.items())]
    return "\n".join(rows) + "\n"


def checks_and_fixes() -> str:
    """Every check that warned or failed for a shipped profile on the captured inventories, with its fix."""
    seen: dict[tuple[str, str], tuple[str, str, str]] = {}
    inventories = sorted((REPO / INVENTORIES).glob("*.json"))
    for profile in ("dual-3090", "tp4"):
        for inv in inventories:
            rc, stdout, stderr = launcher_output(["check", "--profile", profile, "--inventory", str(inv), "--json"])
            if rc not in ACCEPTED_RC:
                raise SystemExit(f"update_runbook: launcher check on {inv.name} exited {rc}:\n{stderr}")
            report = json.loads(stdout)
            for r in report.get("results", []):
                if r["status"] in ("warn", "fail") and (r["id"], r["status"]) not in seen:
                    seen[(r["id"], r["status"])] = (f"{profile} on {inv.stem}", r.get("fix") or "", r["message"])
    rows = ["| check | verdict | first seen (profile on inventory) | fix |", "|---|---|---|---|"]
    for (check_id, status), (where, fix, _message) in sorted(seen.items()):
        rows.append(f"| `{check_id}` | {status} | {where} | {fix.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
ENTRY = re.compile(r"^### (?P<anchor>[a-z0-9-]+)\n(?P<body>.*?)(?=^##|\Z)", re.S | re.M)
FIELD = re.compile(r"^- \*\*(?P<name>[A-Za-z]+):\*\* (?P<text>.*?)(?=^- \*\*|\Z)", re.S | re.M)


# Sections of docs/troubleshooting.md left out of the runbook's index (not for whoever is on call).
NOT_IN_RUNBOOK = ("## Development and test engines",)


def troubleshooting_entries(text: str | None = None, on_call: bool = False) -> list[tuple[str, dict[str, str]]]:
    """(anchor, {"Symptom": ..., "Cause": ..., "Fix": ..., "Upstream": ...}) of each docs/troubleshooting.md entry.

    `on_call`: only the entries of the sections the runbook indexes.
    """
    text = TROUBLESHOOTING.read_text(encoding="utf-8") if text is None else text
    if on_call:
        sections = re.split(r"^(?=## )", text, flags=re.M)
        text = "".join(sec for sec in sections if not sec.startswith(NOT_IN_RUNBOOK))
    entries = []
    for m in ENTRY.finditer(text):
        fields = {f.group("name"): " ".join(f.group("text").split()) for f in FIELD.finditer(m.group("body"))}
        entries.append((m.group("anchor"), fields))
    return entries


def troubleshooting_index() -> str:
    """One row per docs/troubleshooting.md entry: its symptom, a link to it, the upstream issues."""
    rows = ["| symptom | entry | upstream |", "|---|---|---|"]
    for anchor, fields in troubleshooting_entries(on_call=True):
        cells = [fields.get("Symptom", ""), f"[{anchor}](troubleshooting.md#{anchor})", fields.get("Upstream", "")]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "launcher.errors.EXIT_CODES": exit_codes,
    f"launcher check --json: dual-3090 and tp4 on {INVENTORIES}/*.json": checks_and_fixes,
    "docs/troubleshooting.md entries": troubleshooting_index,
}


def generate(spec: str) -> str:
    if spec in GENERATORS:
        return GENERATORS[spec]()
    words = shlex.split(spec)
    if words[:1] != ["launcher"]:
        raise SystemExit(f"update_runbook: no generator for {spec!r}")
    return run_launcher(words[1:])


def update(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        body = generate(m.group("spec"))
        if m.group("text"):
            body = "```text\n" + body + "```\n"
        return m.group("begin") + body + m.group("end")

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 (with a diff) when the runbook is out of date")
    args = parser.parse_args(argv)
    current = RUNBOOK.read_text(encoding="utf-8")
    fresh = update(current)
    if args.check:
        if fresh != current:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "runbook.md", "generated"))
            print("docs/runbook.md is out of date: run python tools/update_runbook.py", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        RUNBOOK.write_text(fresh, encoding="utf-8")
        print("updated docs/runbook.md")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
