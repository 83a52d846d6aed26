"""Tiny inline SVG line charts (no JavaScript, no chart library)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 240, 48, 3


def sparkline(values: Sequence[float], label: str, colour: str = "#2563eb") -> str:
    """An SVG polyline of ``values`` (oldest first) scaled into a small box."""
    if not values:
        return ""
    top = max(values) or 1.0
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    points = " ".join(
        f"{PAD + i * step:.1f},{HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD):.1f}"
        for i, v in enumerate(values)
    )
    dots = (
        "" if len(values) > 1 else f'<circle cx="{PAD}" cy="{HEIGHT / 2}" r="2" fill="{colour}"/>'
    )
    return (
        f'<svg class="spark" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>{dots}</svg>'
    )
