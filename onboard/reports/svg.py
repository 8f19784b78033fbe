"""Small inline SVG charts for the HTML reports: no plotting library, no script, nothing fetched."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 44


def _ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    raw = top / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def bar_chart(title: str, groups: list[str], series: dict[str, list[float | None]], colors: dict[str, str],
              unit: str, lines: dict[str, float] | None = None) -> str:
    """Grouped vertical bars: one group per label, one bar per series; dashed horizontal `lines`
    (name -> value) for references such as ln V. Missing values are left out."""
    lines = lines or {}
    legend, lx, ly = [], LEFT, 0  # legend entries, wrapped onto as many rows as they need
    for name in series:
        width = 24 + 6.2 * len(name)
        if lx + width > WIDTH - RIGHT and lx > LEFT:
            lx, ly = LEFT, ly + 15
        legend.append((name, lx, ly))
        lx += width
    height = HEIGHT + ly
    values = [v for vs in series.values() for v in vs if v is not None] + list(lines.values())
    top = max(values, default=1.0) * 1.1 or 1.0
    ticks = _ticks(top)
    top = max(top, ticks[-1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" class="tick" transform="rotate(-90 12 {TOP + plot_h / 2:.0f})" '
               f'text-anchor="middle">{escape(unit)}</text>')
    group_w = plot_w / max(1, len(groups))
    bar_w = min(group_w * 0.8 / max(1, len(series)), 48)
    for g, label in enumerate(groups):
        x0 = LEFT + g * group_w + (group_w - bar_w * len(series)) / 2
        for s, (name, vals) in enumerate(series.items()):
            v = vals[g] if g < len(vals) else None
            if v is None:
                continue
            out.append(f'<rect x="{x0 + s * bar_w:.1f}" y="{y(v):.1f}" width="{max(bar_w - 1, 1):.1f}" '
                       f'height="{max(TOP + plot_h - y(v), 0):.1f}" fill="{colors[name]}">'
                       f'<title>{escape(name)} {escape(label)}: {_fmt(v)} {escape(unit)}</title></rect>')
        if len(groups) <= 24:
            out.append(f'<text x="{LEFT + (g + 0.5) * group_w:.1f}" y="{TOP + plot_h + 14}" class="tick" '
                       f'text-anchor="middle">{escape(label)}</text>')
    for name, v in lines.items():
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="ref"/>'
                   f'<text x="{WIDTH - RIGHT - 2}" y="{y(v) - 3:.1f}" class="tick" text-anchor="end">'
                   f'{escape(name)} {_fmt(v)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" class="axis"/>')
    for name, x, dy in legend:
        out.append(f'<rect x="{x:.0f}" y="{HEIGHT - 14 + dy}" width="10" height="10" fill="{colors[name]}"/>'
                   f'<text x="{x + 14:.0f}" y="{HEIGHT - 5 + dy}" class="tick">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


CSS = """
svg.chart { background: #fff; border: 1px solid #d0d7de; border-radius: 4px; margin: 4px 12px 12px 0; }
svg.chart .title { font: 600 13px sans-serif; fill: #24292f; }
svg.chart .tick { font: 11px sans-serif; fill: #57606a; }
svg.chart .grid { stroke: #eaeef2; }
svg.chart .axis { stroke: #57606a; }
svg.chart .ref { stroke: #24292f; stroke-dasharray: 4 3; }
"""
