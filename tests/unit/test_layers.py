"""The package layout is the architecture (docs/architecture.md): each stage imports only the stages
below it, and no module imports one that imports it back. Read from the code with `ast`: every import
counts, lazy ones inside functions too; only `if TYPE_CHECKING:` blocks (annotations, never run) are
exempt from the stage order, and not from the loop rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "launcher"

# Lowest first. The root modules (errors, style, defaults, verdict, text, files, numbers) are the base every stage may use;
# cli.py and __main__.py sit on top with the commands.
STAGES = ("engine", "model", "profile", "hardware", "fit", "preflight", "output", "live", "commands")
BASE = {"launcher", "launcher.errors", "launcher.style", "launcher.defaults", "launcher.verdict", "launcher.engines",
        "launcher.text", "launcher.files", "launcher.numbers"}
TOP = {"launcher.cli", "launcher.__main__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.AST, package: str, known: set[str]) -> list[str]:
    """The modules one import statement names (a `from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]


def imports(name: str, path: Path, known: set[str]) -> dict[str, bool]:
    """The launcher modules `name` imports -> whether only under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.body:
                    visit_one(sub, True)
                for sub in child.orelse:
                    visit_one(sub, typing_only)
                continue
            visit_one(child, typing_only)

    def visit_one(node: ast.AST, typing_only: bool) -> None:
        for t in _targets(node, package, known):
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found[t] = found.get(t, True) and typing_only
        visit(node, typing_only)

    visit(tree, False)
    return found


def stage_of(name: str) -> int:
    if name in BASE:
        return -1
    if name in TOP:
        return len(STAGES)
    parts = name.split(".")
    assert len(parts) >= 2 and parts[1] in STAGES, f"{name}: a module outside every stage (add it to one)"
    return STAGES.index(parts[1])


def graph() -> dict[str, dict[str, bool]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def upward(g: dict[str, dict[str, bool]]) -> list[str]:
    out = []
    for name, deps in g.items():
        for dep, typing_only in deps.items():
            if not typing_only and stage_of(dep) > stage_of(name):  # same stage (siblings) is allowed
                out.append(f"{name} -> {dep}")
    return sorted(out)


def loops(g: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), every import counted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_every_module_belongs_to_a_stage() -> None:
    for name in modules():
        stage_of(name)


def test_no_stage_imports_a_stage_above_it() -> None:
    assert upward(graph()) == []


def test_no_import_loops() -> None:
    assert loops(graph()) == []


def test_the_checker_sees_a_loop_and_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule can fail: a planted loop and an upward import are both reported."""
    g = {
        "launcher.fit.a": {"launcher.preflight.b": False},
        "launcher.preflight.b": {"launcher.fit.a": False},
        "launcher.model.c": {"launcher.live.d": True},  # annotation only: allowed upward
    }
    assert upward(g) == ["launcher.fit.a -> launcher.preflight.b"]
    assert loops(g) == [["launcher.fit.a", "launcher.preflight.b"]]
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from launcher.live import smoke\n"
        "def f():\n    from launcher.fit import estimate\n"
    )
    assert imports("launcher.model.m", src, {"launcher.live.smoke", "launcher.fit.estimate", "launcher.live", "launcher.fit"}) == {
        "launcher.live.smoke": True,
        "launcher.fit.estimate": False,
    }
