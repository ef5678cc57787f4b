"""Geometry for the server-rendered SVG charts: pure, so the page needs no script.

A chart is horizontal stacked bars, one row per label; the template draws it
with a ``viewBox`` so it scales down to a phone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WIDTH = 640
LABEL_W = 140
BAR_H = 22
GAP = 10
TOP = 8
LEGEND_H = 28

SESSION_COLORS = {
    "created": "#8c959f",
    "active": "#0969da",
    "paused": "#bf8700",
    "completed": "#1f883d",
    "failed": "#cf222e",
}
REVIEW_COLORS = {"approved": "#1f883d", "rejected": "#cf222e"}


@dataclass(frozen=True)
class Segment:
    key: str
    count: int
    x: float
    width: float
    color: str


@dataclass(frozen=True)
class Row:
    label: str
    total: int
    y: float
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    label_width: int
    bar_height: int
    rows: tuple[Row, ...]
    legend: tuple[tuple[str, str], ...]  # (key, color)
    legend_y: float

    @property
    def empty(self) -> bool:
        return not any(r.total for r in self.rows)


def stacked(data: Sequence[tuple[str, Mapping[str, int]]], colors: Mapping[str, str]) -> Chart:
    """Bars share one scale (the largest total), so rows compare at a glance."""
    plot_w = WIDTH - LABEL_W - 40  # room for the total after the bar
    biggest = max((sum(counts.values()) for _label, counts in data), default=0) or 1
    rows = []
    for i, (label, counts) in enumerate(data):
        x = float(LABEL_W)
        segments = []
        for key, color in colors.items():
            n = counts.get(key, 0)
            if n <= 0:
                continue
            w = plot_w * n / biggest
            segments.append(Segment(key, n, round(x, 2), round(w, 2), color))
            x += w
        rows.append(Row(label, sum(counts.values()), TOP + i * (BAR_H + GAP), tuple(segments)))
    legend_y = TOP + len(rows) * (BAR_H + GAP) + 8
    return Chart(
        width=WIDTH,
        height=int(legend_y + LEGEND_H),
        label_width=LABEL_W,
        bar_height=BAR_H,
        rows=tuple(rows),
        legend=tuple(colors.items()),
        legend_y=legend_y,
    )
