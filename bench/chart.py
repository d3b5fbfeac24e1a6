"""The results chart: one panel per benchmark, horizontal bars (matplotlib; Pillow if it is absent)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.common import Row


def _panels(rows: Sequence[Row]) -> dict[str, list[Row]]:
    panels: dict[str, list[Row]] = {}
    for r in rows:
        if r.value is not None and r.value == r.value:
            unit = "per second" if r.unit.endswith("/s") and r.benchmark == "queue" else r.unit
            panels.setdefault(f"{r.benchmark} ({unit})", []).append(r)
    return panels


def draw_chart(rows: Sequence[Row], path: Path) -> None:
    """Write a PNG with a bar panel per (benchmark, unit); missed targets are drawn in red."""
    panels = _panels(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _draw_with_pillow(panels, path)
        return
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.2 + sum(0.45 * len(v) + 0.8 for v in panels.values())),
                             squeeze=False, gridspec_kw={"height_ratios": [max(1, len(v)) for v in panels.values()]
                                                         or [1]})
    for ax, (title, items) in zip(axes[:, 0], panels.items(), strict=False):
        labels = [r.case for r in items]
        values = [float(r.value or 0.0) for r in items]
        colours = ["#c0392b" if r.met is False else "#2e86c1" if r.met else "#7f8c8d" for r in items]
        bars = ax.barh(range(len(items)), values, color=colours)
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        for bar, value in zip(bars, values, strict=True):
            label = f" {value:,.0f}" if value >= 100 else f" {value:.3g}"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=7)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no results", ha="center")
    fig.suptitle("stayler bench (blue: target met, red: missed, grey: reference)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw_with_pillow(panels: dict[str, list[Row]], path: Path) -> None:
    from PIL import Image, ImageDraw

    height = 30 + sum(24 + 18 * len(v) for v in panels.values())
    img = Image.new("RGB", (900, max(60, height)), "white")
    draw = ImageDraw.Draw(img)
    y = 10
    for title, items in panels.items():
        draw.text((10, y), title, fill="black")
        y += 20
        top = max(float(r.value or 0.0) for r in items) or 1.0
        for r in items:
            width = int(400 * float(r.value or 0.0) / top)
            colour = (192, 57, 43) if r.met is False else (46, 134, 193)
            draw.text((10, y), r.case[:55], fill="black")
            draw.rectangle((440, y, 440 + width, y + 12), fill=colour)
            draw.text((445 + width, y), f"{r.value:,.3g}", fill="black")
            y += 18
        y += 4
    img.save(path)
