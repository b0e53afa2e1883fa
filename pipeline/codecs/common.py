"""What the output formats other than ``loc`` share: pixel ⇄ integer scaling and label checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.codec import _EPS, Codec, simplify_polygon


def known_label(codec: Codec, label: str) -> tuple[str, bool]:
    """``label`` as the category it names (case-insensitively), and whether it names one."""
    known = codec._by_lower.get(label.strip().lower())
    return (known or label.strip()), (known is not None or not codec.categories)


def scale_round(v: float, size: float, units: float) -> int:
    """``v`` pixels of ``size`` on a ``units`` scale, rounded half up and clipped to ``[0, units]``."""
    return min(max(math.floor(float(v) / size * units + 0.5 + _EPS), 0), int(units))


def polygon_points(poly: Sequence[float], max_vertices: int) -> list[tuple[float, float]]:
    """The polygon's vertices in pixels, simplified to ``max_vertices`` (Visvalingam–Whyatt)."""
    coords = list(poly)[: len(poly) // 2 * 2]
    pts = list(zip(coords[0::2], coords[1::2], strict=True))
    if len(pts) > max_vertices:
        import numpy as np

        pts = [tuple(p) for p in simplify_polygon(np.array(pts, dtype=float), max_vertices)]
    return pts
