"""What differs between two rendered commands, option by option."""

from __future__ import annotations

from launcher.output.render import Rendered, option_pairs, option_tokens


def _table(r: Rendered) -> dict[str, str | None]:
    table: dict[str, str | None] = {"(command)": " ".join(r.argv[: r.head])}
    for flag, value in option_pairs(option_tokens(r)):
        table[flag] = value
    for key, value in r.env.items():
        table[f"env {key}"] = value
    for key, source in r.env_from.items():
        table[f"env {key}"] = f"${{{source}}}"
    return table


def _show(flag: str, value: str | None) -> str:
    return flag if value is None else f"{flag} {value}"


def diff_rendered(a: Rendered, b: Rendered) -> list[str]:
    """`-`/`+` lines for options only in A / only in B or with different values; stable order."""
    ta, tb = _table(a), _table(b)
    lines: list[str] = []
    for key in list(ta) + [k for k in tb if k not in ta]:
        if key in ta and key in tb and ta[key] == tb[key]:
            continue
        if key in ta:
            lines.append("- " + _show(key, ta[key]))
        if key in tb:
            lines.append("+ " + _show(key, tb[key]))
    return lines
