"""Charts of `launcher bench` reports: in the terminal, as SVG (no dependency), or PNG (matplotlib).

Each run is one series. The terminal chart draws output tokens/s as bars per concurrency level
with the latencies beside them; the SVG and PNG draw two panels: output tokens/s against
concurrency, and per-token latency (p50 TPOT) against output tokens/s, the throughput-latency
trade-off, with the single-stream roofline as a floor when the report has one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import escape

from launcher.errors import ProfileError
from launcher.live.bench import fmt, run_title

MARKERS = "ox+*#@"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(value: float, top: float, width: int) -> str:
    cells = 0.0 if top <= 0 else max(0.0, value) / top * width
    full = int(cells)
    part = int((cells - full) * 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def _levels(reports: Sequence[Mapping[str, Any]]) -> list[int]:
    return sorted({lv["concurrency"] for r in reports for lv in r["levels"]})


def terminal_chart(reports: Sequence[Mapping[str, Any]], width: int = 40) -> str:
    """Bars of output tokens/s per concurrency level and run, p50 TPOT and E2E beside them."""
    top = max((lv["output_tokens_per_s"] for r in reports for lv in r["levels"]), default=0.0)
    titles = [f"{MARKERS[i % len(MARKERS)]} {run_title(r)}" for i, r in enumerate(reports)]
    name_w = max(len(t) for t in titles) if titles else 0
    lines = [f"output tokens/s per concurrency level (bar, full width = {fmt(top)} tok/s); p50 TPOT and E2E latency"]
    for c in _levels(reports):
        first = True
        for title, report in zip(titles, reports, strict=True):
            lv = next((x for x in report["levels"] if x["concurrency"] == c), None)
            if lv is None:
                continue
            e2e = lv["e2e_ms"]["p50"]
            lines.append(
                f"{('c=' + str(c)) if first else '':>6}  {title:<{name_w}}  {_bar(lv['output_tokens_per_s'], top, width)}  "
                f"{fmt(lv['output_tokens_per_s']):>7} tok/s  TPOT {fmt(lv['tpot_ms']['p50'])} ms  "
                f"E2E {fmt(None if e2e is None else e2e / 1000)} s"
            )
            first = False
    for report in reports:
        roof = report["roofline"]
        if roof["ceiling_tokens_per_s"] is not None:
            lines.append(f"  roofline ({run_title(report)}): {fmt(roof['ceiling_tokens_per_s'])} tok/s for one stream"
                         + (f", measured {100 * roof['fraction']:.0f} %" if roof["fraction"] is not None else ""))
    return "\n".join(lines)


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps up to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


class _Panel:
    """One plot area of the SVG: data coordinates to pixels, axes, ticks."""

    def __init__(self, x0: float, y0: float, w: float, h: float, xmax: float, ymax: float) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xticks = nice_ticks(xmax)
        self.yticks = nice_ticks(ymax)

    def px(self, x: float) -> float:
        return self.x0 + self.w * x / self.xticks[-1]

    def py(self, y: float) -> float:
        return self.y0 + self.h - self.h * y / self.yticks[-1]

    def axes(self, title: str, xlabel: str, ylabel: str, xtick_labels: Sequence[tuple[float, str]] | None = None) -> list[str]:
        out = [f'<text x="{self.x0 + self.w / 2:.1f}" y="{self.y0 - 12:.1f}" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
        for t in self.yticks:
            y = self.py(t)
            out.append(f'<line x1="{self.x0:.1f}" y1="{y:.1f}" x2="{self.x0 + self.w:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{self.x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{_tick(t)}</text>')
        for t, label in xtick_labels if xtick_labels is not None else [(t, _tick(t)) for t in self.xticks]:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.y0 + self.h:.1f}" x2="{x:.1f}" y2="{self.y0 + self.h + 4:.1f}" stroke="#333"/>')
            out.append(f'<text x="{x:.1f}" y="{self.y0 + self.h + 17:.1f}" text-anchor="middle">{escape(label)}</text>')
        out.append(f'<rect x="{self.x0:.1f}" y="{self.y0:.1f}" width="{self.w:.1f}" height="{self.h:.1f}" fill="none" stroke="#333"/>')
        out.append(f'<text x="{self.x0 + self.w / 2:.1f}" y="{self.y0 + self.h + 36:.1f}" text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text transform="translate({self.x0 - 48:.1f},{self.y0 + self.h / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
        return out


def _series(points: Sequence[tuple[float, float, str]], color: str, panel: _Panel) -> list[str]:
    out = []
    if len(points) > 1:
        path = " ".join(f"{panel.px(x):.1f},{panel.py(y):.1f}" for x, y, _ in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for x, y, label in points:
        out.append(f'<circle cx="{panel.px(x):.1f}" cy="{panel.py(y):.1f}" r="4" fill="{color}"/>')
        if label:
            out.append(f'<text x="{panel.px(x) + 6:.1f}" y="{panel.py(y) - 6:.1f}" fill="{color}">{escape(label)}</text>')
    return out


def _throughput_points(report: Mapping[str, Any], index: Mapping[int, int]) -> list[tuple[float, float, str]]:
    return [(float(index[lv["concurrency"]]), lv["output_tokens_per_s"], "") for lv in report["levels"]]


def _tradeoff_points(report: Mapping[str, Any]) -> list[tuple[float, float, str]]:
    return [(lv["output_tokens_per_s"], lv["tpot_ms"]["p50"], f"c={lv['concurrency']}")
            for lv in report["levels"] if lv["tpot_ms"]["p50"] is not None]


def _floor(reports: Sequence[Mapping[str, Any]]) -> float | None:
    ceilings = [r["roofline"]["ceiling_tokens_per_s"] for r in reports if r["roofline"]["ceiling_tokens_per_s"]]
    return 1000.0 / max(ceilings) if ceilings else None


def svg_chart(reports: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """Two panels as a standalone SVG document: tok/s by concurrency, and p50 TPOT against tok/s."""
    levels = _levels(reports)
    index = {c: i for i, c in enumerate(levels)}
    tops = [lv["output_tokens_per_s"] for r in reports for lv in r["levels"]] or [1.0]
    tpots = [p[1] for r in reports for p in _tradeoff_points(r)] or [1.0]
    floor = _floor(reports)
    width, height = 960, 420 + 18 * len(reports)
    left = _Panel(80, 50, 360, 280, max(1, len(levels) - 1) + 0.0, max(tops) * 1.05)
    left.xticks = [float(i) for i in range(max(2, len(levels)))]
    right = _Panel(560, 50, 360, 280, max(tops) * 1.08, max(tpots + ([floor] if floor else [])) * 1.1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="sans-serif" font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>')
    out += left.axes("Output tokens/s by concurrency", "concurrency (requests in flight)", "output tokens/s",
                     [(float(i), str(c)) for c, i in index.items()])
    out += right.axes("Per-token latency vs throughput", "output tokens/s", "p50 time per output token (ms)")
    if floor is not None:
        y = right.py(floor)
        out.append(f'<line x1="{right.x0:.1f}" y1="{y:.1f}" x2="{right.x0 + right.w:.1f}" y2="{y:.1f}" stroke="#555" stroke-dasharray="6,4"/>')
        out.append(f'<text x="{right.x0 + right.w - 4:.1f}" y="{y - 5:.1f}" text-anchor="end" fill="#555">'
                   f'memory-bandwidth floor, one stream ({fmt(floor)} ms)</text>')
    for i, report in enumerate(reports):
        color = COLORS[i % len(COLORS)]
        out += _series(_throughput_points(report, index), color, left)
        out += _series(_tradeoff_points(report), color, right)
        y = 395 + 18 * i
        out.append(f'<rect x="80" y="{y - 10}" width="14" height="4" fill="{color}"/>')
        out.append(f'<text x="100" y="{y - 4}">{escape(run_title(report))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def png_chart(reports: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The same two panels through matplotlib (exit 2 with what to install when it is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ProfileError(f"--chart {path}: a PNG needs matplotlib (pip install matplotlib); "
                           "an .svg chart or --chart-term needs nothing") from None
    levels = _levels(reports)
    index = {c: i for i, c in enumerate(levels)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, report in enumerate(reports):
        color = COLORS[i % len(COLORS)]
        pts = _throughput_points(report, index)
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color)
        trade = _tradeoff_points(report)
        ax2.plot([p[0] for p in trade], [p[1] for p in trade], "o-", color=color, label=run_title(report))
        for x, y, label in trade:
            ax2.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), color=color)
    floor = _floor(reports)
    if floor is not None:
        ax2.axhline(floor, linestyle="--", color="#555", label=f"memory-bandwidth floor, one stream ({fmt(floor)} ms)")
    ax1.set_xticks(range(len(levels)), [str(c) for c in levels])
    ax1.set(title="Output tokens/s by concurrency", xlabel="concurrency (requests in flight)", ylabel="output tokens/s")
    ax2.set(title="Per-token latency vs throughput", xlabel="output tokens/s", ylabel="p50 time per output token (ms)")
    ax1.set_ylim(0, ax1.get_ylim()[1] * 1.08)
    ax2.set_ylim(0, ax2.get_ylim()[1] * 1.08)
    ax2.set_xlim(0, ax2.get_xlim()[1] * 1.05)
    fig.legend(*ax2.get_legend_handles_labels(), loc="lower center", ncol=min(3, len(reports) + 1), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise ProfileError(f"--chart {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
