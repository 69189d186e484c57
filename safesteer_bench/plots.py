"""Inline SVG plots for the report: no plotting library, no CDN, opens offline.

Every text that reaches the SVG (method and benchmark names) is escaped here, because the plots
are inserted into the page as markup.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def tradeoff_svg(points: Sequence[tuple[str, float, float]], x_label: str, y_label: str,
                 width: int = 520, height: int = 380) -> str:
    """Scatter of (name, x, y) in [0, 1]² — capability (x) against safety (y); up-right is better."""
    pad = 50
    sx = lambda v: pad + v * (width - 2 * pad)  # noqa: E731
    sy = lambda v: height - pad - v * (height - 2 * pad)  # noqa: E731
    parts = [_frame(width, height, pad, escape(x_label), escape(y_label))]
    for i, (name, x, y) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{color}"><title>{escape(name)}: '
                     f'x={x:.3f}, y={y:.3f}</title></circle>')
        parts.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) + 4:.1f}" font-size="12">{escape(name)}</text>')
    return _svg(width, height, parts)


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


def _frame(width: int, height: int, pad: int, x_label: str, y_label: str) -> str:
    ticks = []
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = pad + t * (width - 2 * pad)
        y = height - pad - t * (height - 2 * pad)
        ticks.append(f'<text x="{x:.1f}" y="{height - pad + 16}" font-size="10" text-anchor="middle">{t:.0%}</text>')
        ticks.append(f'<text x="{pad - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{t:.0%}</text>')
        ticks.append(f'<line x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    return (f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>'
            + "".join(ticks)
            + f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">{x_label}</text>'
            + f'<text x="14" y="{height / 2}" font-size="12" text-anchor="middle" '
              f'transform="rotate(-90 14 {height / 2})">{y_label}</text>')


def _svg(width: int, height: int, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">' + "".join(parts) + "</svg>")
