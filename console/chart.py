"""The overview's throughput chart: inline SVG drawn on the server (no script, no style attribute)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup

MINUTES = 60
WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 640, 150, 12, 22, 36


def per_minute(rows: list[dict[str, Any]], now: datetime) -> list[tuple[datetime, int, int]]:
    """(minute, completed, failed) for each of the last 60 minutes, oldest first, zeros filled in."""
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    by_minute = {r["minute"].astimezone(UTC): (int(r["completed"]), int(r["failed"])) for r in rows}
    series = []
    for i in range(MINUTES - 1, -1, -1):
        minute = end - timedelta(minutes=i)
        completed, failed = by_minute.get(minute, (0, 0))
        series.append((minute, completed, failed))
    return series


def throughput_svg(rows: list[dict[str, Any]], now: datetime) -> Markup:
    """Stacked bars: completed (below) and failed (above) per minute over the last hour."""
    series = per_minute(rows, now)
    peak = max((c + f for _, c, f in series), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - TOP - BOTTOM
    step = plot_w / MINUTES
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="completed and failed conversions per minute, last hour">',
             f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}" class="axis"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="tick">{peak}</text>',
             f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" class="tick">0</text>',
             f'<text x="{LEFT}" y="{HEIGHT - 6}" class="tick">−60 min</text>',
             f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" class="tick">−30 min</text>',
             f'<text x="{WIDTH - 4}" y="{HEIGHT - 6}" text-anchor="end" class="tick">now (UTC)</text>']
    for i, (minute, completed, failed) in enumerate(series):
        x = LEFT + i * step + 0.5
        h_ok = plot_h * completed / peak
        h_bad = plot_h * failed / peak
        label = f"{minute:%H:%M} UTC: {completed} completed, {failed} failed"
        parts.append(f'<g><title>{label}</title>')
        if completed:
            parts.append(f'<rect class="ok" x="{x:.1f}" y="{TOP + plot_h - h_ok:.1f}" width="{step - 1:.1f}" '
                         f'height="{h_ok:.1f}"/>')
        if failed:
            parts.append(f'<rect class="bad" x="{x:.1f}" y="{TOP + plot_h - h_ok - h_bad:.1f}" '
                         f'width="{step - 1:.1f}" height="{h_bad:.1f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))  # numbers and fixed text only
