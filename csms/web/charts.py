"""Small line charts as inline SVG, drawn on the server (no chart library, nothing to download)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 8, 592, 22, 160
MAX_POINTS = 240


def _clock(ts: float, seconds: bool) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S" if seconds else "%H:%M")


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    label: str,
    color: str,
    fmt: Callable[[float], str],
    chart_id: str,
) -> Markup:
    """A line of ``(unix time, value)`` points, time on the x axis; its top value and time span labelled."""
    head = (
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}">'
    )
    if len(points) < 2:
        return Markup(
            f'{head}<text class="axis" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "no data yet today</text></svg>"
        )
    if len(points) > MAX_POINTS:  # keep the shape, not every point
        step = len(points) / MAX_POINTS
        points = [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1)
    top = max(max(v for _, v in points), 1e-9)
    short = t1 - t0 < 3600

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT)

    def y(v: float) -> float:
        return BOTTOM - v / top * (BOTTOM - TOP)

    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    area = f"{LEFT},{BOTTOM} {line} {x(points[-1][0]):.1f},{BOTTOM}"
    return Markup(
        f'{head}<polygon points="{area}" fill="{color}" fill-opacity="0.12"/>'
        f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>'
        f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" '
        'stroke="currentColor" stroke-opacity="0.2"/>'
        f'<text class="axis" x="{LEFT}" y="14">{escape(fmt(top))}</text>'
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 4}">{_clock(t0, short)}</text>'
        f'<text class="axis" x="{RIGHT}" y="{HEIGHT - 4}" text-anchor="end">{_clock(t1, short)} UTC</text>'
        "</svg>"
    )
