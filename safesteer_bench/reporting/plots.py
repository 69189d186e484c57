"""Inline SVG plots for the report: no plotting library, no CDN, opens offline.

Every text that reaches the SVG (method and benchmark names) is escaped here, because the plots
are inserted into the page as markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@dataclass(frozen=True)
class Point:
    """One method in a trade-off plane: value and 95 % interval on each axis (None: no interval)."""

    name: str
    x: float
    y: float
    x_ci: tuple[float, float] | None = None
    y_ci: tuple[float, float] | None = None


def pareto_front(points: Sequence[Point], x_better: int = 1, y_better: int = 1) -> list[Point]:
    """The points no other point beats on both axes (``±1``: +1 when higher is better), by x."""
    def beats(a: Point, b: Point) -> bool:
        dx, dy = x_better * (a.x - b.x), y_better * (a.y - b.y)
        return dx >= 0 and dy >= 0 and (dx > 0 or dy > 0)

    front = [p for p in points if not any(beats(q, p) for q in points if q is not p)]
    return sorted(front, key=lambda p: p.x)


_STEPS = (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25)


def _fitted_range(values: Sequence[float], pad: float = 0.08) -> tuple[float, float, float]:
    """(low, high, tick step): an axis around ``values`` (points and whisker ends) within [0, 1],
    widened to round ticks (at most 6 steps), never empty."""
    low, high = min(values), max(values)
    span = max(high - low, 0.05)  # a single point still gets a readable axis
    lo, hi = max(0.0, low - pad * span), min(1.0, high + pad * span)
    step = next((s for s in _STEPS if (hi - lo) / s <= 6), 0.25)
    lo, hi = max(0.0, math.floor(lo / step + 1e-9) * step), min(1.0, math.ceil(hi / step - 1e-9) * step)
    if hi <= lo:
        hi = min(1.0, lo + step) if lo < 1.0 else 1.0
        lo = hi - step
    return lo, hi, step


def _place_labels(anchors: Sequence[tuple[float, float, str]], box: tuple[float, float, float, float],
                  char_w: float = 6.6, line_h: float = 13.0) -> list[tuple[float, float, str]]:
    """(x, y, anchor) per label: the first of eight offsets around its point whose box overlaps no
    point and no label placed before and stays inside the plot; the least-overlapping one when
    none is free."""
    offsets = [(9, 4, "start"), (-9, 4, "end"), (0, -10, "middle"), (0, 17, "middle"),
               (9, -9, "start"), (-9, -9, "end"), (9, 16, "start"), (-9, 16, "end")]
    # coincident points (several methods that did not move) stack their labels further out
    offsets += [(dx, 4 + sign * 14 * k, anchor) for k in range(2, 6) for sign in (-1, 1)
                for dx, anchor in ((-9, "end"), (9, "start"))]
    # every point's marker is an obstacle too, not only the labels already placed
    placed: list[tuple[float, float, float, float]] = [(x - 7, y - 7, x + 7, y + 7) for x, y, _ in anchors]
    out = []
    left, top, right, bottom = box
    for px, py, text in anchors:
        width = char_w * len(text)
        best, best_cost = None, None
        for dx, dy, anchor in offsets:
            x0 = px + dx - (width if anchor == "end" else width / 2 if anchor == "middle" else 0)
            rect = (x0, py + dy - line_h + 3, x0 + width, py + dy + 3)
            overlap = sum(max(0, min(rect[2], r[2]) - max(rect[0], r[0])) * max(0, min(rect[3], r[3]) - max(rect[1], r[1]))
                          for r in placed)
            outside = (rect[0] < left) + (rect[2] > right) + (rect[1] < top) + (rect[3] > bottom)
            cost = overlap + 1000 * outside
            if best_cost is None or cost < best_cost:
                best, best_cost = (px + dx, py + dy, anchor, rect), cost
            if cost == 0:
                break
        assert best is not None
        placed.append(best[3])
        out.append(best[:3])
    return out


def frontier_svg(points: Sequence[Point], x_label: str, y_label: str, x_better: int = 1, y_better: int = 1,
                 width: int = 560, height: int = 400) -> str:
    """A trade-off plane: each method with its 95 % intervals as error bars, axes fitted to the
    data (points and whiskers), labels placed so they do not overlap, and the Pareto frontier
    (``x_better`` / ``y_better``: +1 when higher is better) drawn as a dashed line through
    ringed points. Values are shares in [0, 1], shown in %."""
    pad_l, pad_r, pad_t, pad_b = 56, 24, 20, 50
    xs = [v for p in points for v in (p.x, *(p.x_ci or ()))]
    ys = [v for p in points for v in (p.y, *(p.y_ci or ()))]
    (x0, x1, x_step), (y0, y1, y_step) = _fitted_range(xs), _fitted_range(ys)
    sx = lambda v: pad_l + (v - x0) / (x1 - x0) * (width - pad_l - pad_r)  # noqa: E731
    sy = lambda v: height - pad_b - (v - y0) / (y1 - y0) * (height - pad_t - pad_b)  # noqa: E731
    parts = [_fitted_frame(width, height, (pad_l, pad_r, pad_t, pad_b), (x0, x1, x_step), (y0, y1, y_step),
                           escape(x_label), escape(y_label))]
    front = pareto_front(points, x_better, y_better)
    if len(front) > 1:
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#444" stroke-dasharray="5,4"/>')
    for i, p in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        cx, cy = sx(p.x), sy(p.y)
        if p.x_ci:
            parts.append(f'<line x1="{sx(p.x_ci[0]):.1f}" x2="{sx(p.x_ci[1]):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" '
                         f'stroke="{color}" opacity="0.6"/>')
        if p.y_ci:
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{sy(p.y_ci[0]):.1f}" y2="{sy(p.y_ci[1]):.1f}" '
                         f'stroke="{color}" opacity="0.6"/>')
        ring = ' stroke="#000" stroke-width="2"' if p in front else ""
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5.5" fill="{color}"{ring}><title>{escape(p.name)}: '
                     f'x={p.x:.3f}, y={p.y:.3f}{" (Pareto frontier)" if p in front else ""}</title></circle>')
    box = (pad_l, pad_t, width - pad_r, height - pad_b)
    labels = _place_labels([(sx(p.x), sy(p.y), p.name) for p in points], box)
    for (lx, ly, anchor), p in zip(labels, points):
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="12" text-anchor="{anchor}">{escape(p.name)}</text>')
    return _svg(width, height, parts)


def _ticks(low: float, high: float, step: float) -> list[float]:
    return [low + i * step for i in range(int(round((high - low) / step)) + 1)]


def _fitted_frame(width: int, height: int, pads: tuple[int, int, int, int], xr: tuple[float, float, float],
                  yr: tuple[float, float, float], x_label: str, y_label: str) -> str:
    pad_l, pad_r, pad_t, pad_b = pads
    sx = lambda v: pad_l + (v - xr[0]) / (xr[1] - xr[0]) * (width - pad_l - pad_r)  # noqa: E731
    sy = lambda v: height - pad_b - (v - yr[0]) / (yr[1] - yr[0]) * (height - pad_t - pad_b)  # noqa: E731
    fmt = lambda v, step: f"{100 * v:.0f}%" if step >= 0.01 - 1e-12 and abs(100 * v - round(100 * v)) < 1e-6 \
        else f"{100 * v:.1f}%"  # noqa: E731
    ticks = []
    for tx in _ticks(*xr):
        ticks.append(f'<text x="{sx(tx):.1f}" y="{height - pad_b + 15}" font-size="10" text-anchor="middle">'
                     f'{fmt(tx, xr[2])}</text>')
    for ty in _ticks(*yr):
        y = sy(ty)
        ticks.append(f'<text x="{pad_l - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{fmt(ty, yr[2])}</text>')
        ticks.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    return (f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
            f'fill="none" stroke="#999"/>' + "".join(ticks)
            + f'<text x="{(pad_l + width - pad_r) / 2}" y="{height - 14}" font-size="12" text-anchor="middle">{x_label}</text>'
            + f'<text x="14" y="{(pad_t + height - pad_b) / 2}" font-size="12" text-anchor="middle" '
              f'transform="rotate(-90 14 {(pad_t + height - pad_b) / 2})">{y_label}</text>')


def bars_svg(rows: Sequence[tuple[str, float, float | None, float | None]], label: str,
             width: int = 520, bar: int = 22) -> str:
    """Horizontal bars of (name, value, ci_low, ci_high) in [0, 1] with CI whiskers."""
    left, right, top = 110, 30, 24
    height = top + len(rows) * (bar + 8) + 30
    scale = lambda v: left + v * (width - left - right)  # noqa: E731
    parts = [f'<text x="{left}" y="14" font-size="12" fill="#555">{escape(label)}</text>']
    for i, (name, value, low, high) in enumerate(rows):
        y = top + i * (bar + 8)
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<text x="{left - 6}" y="{y + bar * 0.7:.1f}" font-size="12" text-anchor="end">{escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{scale(value) - left:.1f}" height="{bar}" fill="{color}" '
                     f'opacity="0.75"><title>{escape(name)}: {value:.3f}</title></rect>')
        if low is not None and high is not None:
            mid = y + bar / 2
            parts.append(f'<line x1="{scale(low):.1f}" x2="{scale(high):.1f}" y1="{mid}" y2="{mid}" stroke="#222"/>')
            for end in (low, high):
                parts.append(f'<line x1="{scale(end):.1f}" x2="{scale(end):.1f}" y1="{mid - 5}" y2="{mid + 5}" stroke="#222"/>')
    axis_y = top + len(rows) * (bar + 8)
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{scale(tick):.1f}" y="{axis_y + 14}" font-size="10" text-anchor="middle">{tick:.0%}</text>')
    return _svg(width, height, parts)


def _svg(width: int, height: int, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">' + "".join(parts) + "</svg>")
