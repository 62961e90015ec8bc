"""Charts as inline SVG, drawn on the server: stacked bars with a total line, and lines.

Why not a JavaScript chart library: the pages' CSP allows only the gateway's own scripts,
the charts must draw with no network (no CDN), and a chart that is plain markup needs no
script at all, is read by the tests as it is, and costs no vendored dependency to keep
current. Values show on hover through each mark's ``<title>``; every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from finopsd.web.pages import esc

__all__ = ["PALETTE", "bars", "colour", "legend", "lines"]

# Okabe-Ito and friends: told apart with most colour vision deficiencies; OTHER is grey
PALETTE: Final = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#6a3d9a",
                  "#8c564b", "#17becf")  # fmt: skip
GREY: Final = "#999999"
W, H = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 12, 42
Format = Callable[[float], str]
Series = Sequence[tuple[str, Sequence[float | None]]]


def colour(i: int, name: str) -> str:
    return GREY if name == "(other)" else PALETTE[i % len(PALETTE)]


def _nice(top: float) -> tuple[float, list[float]]:
    """A round axis maximum for ``top`` and its 4-5 ticks."""
    if not top > 0:
        return 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]
    raw = top / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return step * count, [step * i for i in range(count + 1)]


def _label(ts: int, grain: str) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%m-%d %H:00" if grain == "hour" else "%a %m-%d")


def _frame(buckets: Sequence[int], grain: str, ymax: float, ticks: list[float], fmt: Format, unit: str,
           title: str) -> tuple[list[str], Callable[[int], float], Callable[[float], float], float]:  # fmt: skip
    """The axes, ticks and labels; the x of a bucket's left edge, the y of a value, the band width."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    band = pw / max(1, len(buckets))

    def x(i: int) -> float:
        return LEFT + i * band

    def y(v: float) -> float:
        return TOP + ph - (v / ymax) * ph

    out = [f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}" stroke="#888"/>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#888"/>']
    for t in ticks:
        out.append(f'<line x1="{LEFT}" y1="{y(t):.1f}" x2="{W - RIGHT}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="11">{esc(fmt(t))}</text>')
    every = max(1, math.ceil(len(buckets) / 8))
    for i in range(0, len(buckets), every):
        out.append(f'<text x="{x(i) + band / 2:.1f}" y="{TOP + ph + 15}" text-anchor="middle" font-size="11">'
                   f"{esc(_label(buckets[i], grain))}</text>")
    out.append(f'<text x="{LEFT + pw / 2:.0f}" y="{H - 6}" text-anchor="middle" font-size="11" fill="#555">'
               f"{'hour' if grain == 'hour' else 'day'} (UTC)</text>")
    out.append(f'<text x="14" y="{TOP + ph / 2:.0f}" text-anchor="middle" font-size="11" fill="#555"'
               f' transform="rotate(-90 14 {TOP + ph / 2:.0f})">{esc(unit)}</text>')
    return out, x, y, band


def _svg(name: str, title: str, parts: list[str]) -> str:
    return (f'<svg class="chart" data-chart="{esc(name)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}"'
            f' role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>{"".join(parts)}</svg>')


def bars(name: str, title: str, buckets: Sequence[int], grain: str, series: Series, fmt: Format,
         unit: str, total_line: bool = True) -> str:  # fmt: skip
    """Stacked bars, one stack per bucket, with a line through each stack's total."""
    totals = [sum((s[1][i] or 0) for s in series) for i in range(len(buckets))]
    ymax, ticks = _nice(max(totals, default=0))
    parts, x, y, band = _frame(buckets, grain, ymax, ticks, fmt, unit, title)
    for i, bucket in enumerate(buckets):
        base = 0.0
        for j, (label, values) in enumerate(series):
            v = values[i] or 0
            if v <= 0:
                continue
            parts.append(f'<rect x="{x(i) + band * 0.12:.1f}" y="{y(base + v):.1f}" width="{band * 0.76:.1f}"'
                         f' height="{max(0.5, y(base) - y(base + v)):.1f}" fill="{colour(j, label)}"'
                         f' data-series="{esc(label)}" data-value="{v!r}"><title>{esc(label)}, '
                         f"{esc(_label(bucket, grain))}: {esc(fmt(v))}</title></rect>")
            base += v
    if total_line and series:
        points = " ".join(f"{x(i) + band / 2:.1f},{y(t):.1f}" for i, t in enumerate(totals))
        parts.append(f'<polyline class="total" points="{points}" fill="none" stroke="#222" stroke-width="1.5"/>')
        parts.extend(f'<circle cx="{x(i) + band / 2:.1f}" cy="{y(t):.1f}" r="3" fill="#222" data-total="{t!r}">'
                     f"<title>total, {esc(_label(buckets[i], grain))}: {esc(fmt(t))}</title></circle>"
                     for i, t in enumerate(totals))
    return _svg(name, title, parts)


def lines(name: str, title: str, buckets: Sequence[int], grain: str, series: Series, fmt: Format,
          unit: str, dashed: Sequence[bool] = ()) -> str:  # fmt: skip
    """One line per series; a bucket without a value (None) breaks the line."""
    top = max((v for _, values in series for v in values if v is not None), default=0)
    ymax, ticks = _nice(top)
    parts, x, y, band = _frame(buckets, grain, ymax, ticks, fmt, unit, title)
    for j, (label, values) in enumerate(series):
        stroke = colour(j, label)
        dash = ' stroke-dasharray="5 3"' if j < len(dashed) and dashed[j] else ""
        run: list[str] = []
        for i, v in enumerate([*values, None]):
            if v is not None:
                run.append(f"{x(i) + band / 2:.1f},{y(v):.1f}")
            elif run:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{stroke}" stroke-width="2"{dash}/>')
                run = []
        parts.extend(f'<circle cx="{x(i) + band / 2:.1f}" cy="{y(v):.1f}" r="2.5" fill="{stroke}"'
                     f' data-series="{esc(label)}" data-value="{v!r}"><title>{esc(label)}, '
                     f"{esc(_label(buckets[i], grain))}: {esc(fmt(v))}</title></circle>"
                     for i, v in enumerate(values) if v is not None)
    return _svg(name, title, parts)


def legend(names: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> str:
    """The series' colours and names, in drawing order; ``extra``: (colour, label) marks."""
    items = [(colour(i, n), n) for i, n in enumerate(names)] + list(extra)
    return '<ul class="legend">' + "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" fill="{c}"/></svg>'
        f" {esc(n)}</li>" for c, n in items) + "</ul>"
