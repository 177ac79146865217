#!/usr/bin/env python3
"""Check a built wheel: the distribution name, the `launcher` command, the shipped profiles, and the
profile JSON Schema their modelines point at (resolved inside the wheel, as an editor would).

    python tools/check_wheel.py dist/qwen36_vllm_launcher-*.whl

Standard library only; exit 0 when the wheel is complete, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import posixpath
import re
import sys
import zipfile

DISTRIBUTION = "qwen36-vllm-launcher"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def problems(path: str) -> list[str]:
    out: list[str] = []
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            return [f"{path}: no METADATA"]
        name = re.search(r"^Name: (\S+)$", wheel.read(meta).decode(), re.M)
        if not name or name.group(1) != DISTRIBUTION:
            out.append(f"distribution name {name.group(1) if name else None!r}, expected {DISTRIBUTION!r}")
        entry_points = meta.replace("METADATA", "entry_points.txt")
        if entry_points not in names or "launcher = launcher.cli:main" not in wheel.read(entry_points).decode():
            out.append("no `launcher` console script")
        profiles = sorted(n for n in names if n.startswith("launcher/profiles/") and n.endswith(".yaml"))
        if not profiles:
            out.append("no profiles under launcher/profiles/")
        for profile in profiles:
            first = wheel.read(profile).decode().splitlines()[0]
            match = MODELINE.match(first)
            if not match:
                out.append(f"{profile}: no yaml-language-server modeline")
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(profile), match.group(1)))
            if target not in names:
                out.append(f"{profile}: $schema={match.group(1)} resolves to {target}, not in the wheel")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    found = problems(argv[0])
    for line in found:
        print(f"check_wheel: {line}", file=sys.stderr)
    if not found:
        print(f"check_wheel: {argv[0]}: {DISTRIBUTION}, `launcher` command, profiles and their schema present")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
