"""Pixels ⇄ location bins: how every output format (``pipeline.codec``, ``pipeline.codecs``)
quantises coordinates.

Quantisation, for a coordinate ``x`` in an image of width ``W`` (``y`` likewise with ``H``):

* box corners (half-open): each edge is rounded to the nearest bin edge,
  ``x1 → round(x1/W·N)``, ``x2 → round(x2/W·N) − 1``; decoded ``x1 = b·W/N``,
  ``x2 = (b+1)·W/N``. Each edge moves by at most half a bin (a box narrower than a bin is
  widened to one bin); bin-aligned boxes round-trip exactly. Every box keeps ≥ 1 bin.
* keypoints (pixel positions): ``b = floor(x/W·N)``, decoded at the bin centre
  ``(b+0.5)·W/N`` (error ≤ half a bin).
* polygon vertices (pixel edges, as pycocotools rasterises them): ``b = round(x/W·(N−1))``,
  decoded ``b·W/(N−1)`` — a grid that includes both image borders, so an object touching the
  right or bottom edge keeps its full extent (error ≤ half a grid step). Polygons are
  simplified to ``max_vertices`` by Visvalingam–Whyatt (drop the vertex spanning the smallest
  triangle); a polygon with fewer than 3 distinct vertices after quantisation is written
  with ``V = 0``, which decodes as the box's rectangle.

Everything is clipped to ``[0, N−1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# A bin is `floor`/`ceil` of a float ratio; a coordinate computed as b*W/N can land a few ulps
# off b, and must still count as bin-aligned (else bin-aligned boxes would not round-trip).
_EPS = 1e-9


def loc(b: int) -> str:
    """The location token of bin ``b``."""
    return f"<loc_{b}>"


def _clip(b: int, n: int) -> int:
    return min(max(b, 0), n - 1)


def quantize_box(box: Sequence[float], width: int, height: int, n: int) -> tuple[int, ...]:
    """Bins ``(bx1, by1, bx2, by2)`` of a half-open xyxy pixel box (``bx2``, ``by2`` inclusive)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    # Round each edge to the nearest bin edge: unbiased, so a box keeps its size on average
    # (floor/ceil made every box ~1 bin larger: an IoU ceiling of ~0.8 for 16-px objects
    # with 2-px bins). Bin-aligned boxes still round-trip exactly.
    bx1, bx2 = _round_edges(x1, x2, width, n)
    by1, by2 = _round_edges(y1, y2, height, n)
    return bx1, by1, bx2, by2


def _round_edges(a: float, b: float, size: float, n: int) -> tuple[int, int]:
    lo = _clip(math.floor(a / size * n + 0.5 + _EPS), n)
    hi = _clip(math.floor(b / size * n + 0.5 + _EPS) - 1, n)
    if hi < lo:  # narrower than a bin: the one bin holding its centre
        lo = hi = _clip(math.floor((a + b) / 2 / size * n), n)
    return lo, hi


def dequantize_box(bins: Sequence[int], width: float, height: float, n: int) -> list[float]:
    """Pixel box of bins ``(bx1, by1, bx2, by2)``:
    ``[bx1·W/N, by1·H/N, (bx2+1)·W/N, (by2+1)·H/N]``."""
    bx1, by1, bx2, by2 = bins
    return [bx1 * width / n, by1 * height / n, (bx2 + 1) * width / n, (by2 + 1) * height / n]


def quantize_point(x: float, y: float, width: int, height: int, n: int) -> tuple[int, int]:
    """Bins of a keypoint (pixel position)."""
    return (
        _clip(math.floor(float(x) / width * n + _EPS), n),
        _clip(math.floor(float(y) / height * n + _EPS), n),
    )


def dequantize_point(bx: int, by: int, width: float, height: float, n: int) -> list[float]:
    """Bin centre of a keypoint: ``[(bx+0.5)·W/N, (by+0.5)·H/N]``."""
    return [(bx + 0.5) * width / n, (by + 0.5) * height / n]


def quantize_vertex(x: float, y: float, width: int, height: int, n: int) -> tuple[int, int]:
    """Bins of a polygon vertex on the ``N``-point grid spanning ``[0, W]`` (borders included)."""
    return (
        _clip(math.floor(float(x) / width * (n - 1) + 0.5), n),
        _clip(math.floor(float(y) / height * (n - 1) + 0.5), n),
    )


def dequantize_vertex(bx: int, by: int, width: float, height: float, n: int) -> list[float]:
    """Pixel position of a polygon vertex: ``[bx·W/(N−1), by·H/(N−1)]``."""
    return [bx * width / (n - 1), by * height / (n - 1)]


def simplify_polygon(xy: np.ndarray, max_vertices: int) -> np.ndarray:
    """Visvalingam–Whyatt: drop the vertex whose triangle with its neighbours is smallest
    until at most ``max_vertices`` remain. ``xy`` is ``(V, 2)``; vertex order is kept."""
    keep = np.asarray(xy, dtype=np.float64)
    while len(keep) > max_vertices:
        prev, nxt = np.roll(keep, 1, axis=0), np.roll(keep, -1, axis=0)
        cross = (keep[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1]) - (nxt[:, 0] - prev[:, 0]) * (
            keep[:, 1] - prev[:, 1]
        )
        keep = np.delete(keep, int(np.argmin(np.abs(cross))), axis=0)
    return keep


def box_polygon(box: Sequence[float]) -> list[float]:
    """The rectangle of an xyxy box as a flat polygon."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2, y1, x2, y2, x1, y2]
