"""Masks as COCO polygons: RLE run lengths decoded and checked, binary masks traced to
exact pixel-edge outlines."""

from __future__ import annotations

import numpy as np


def rle_string_counts(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (the inverse of pycocotools' rleToString:
    6-bit chunks offset by 48, sign-extended, each count after the second stored as a delta)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        value = shift = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("the counts string ends in the middle of a number")
            chunk = ord(text[p]) - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"unexpected character {text[p]!r} in the counts string")
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            p += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """The outline of every 4-connected component of ``mask``, largest first (see
    :func:`mask_to_polygon`; holes are filled: COCO polygons add up, they cannot cut holes).

    >>> m = np.zeros((4, 8), bool); m[0:2, 0:2] = m[1:4, 4:8] = True
    >>> mask_to_polygons(m)
    [[4.0, 1.0, 8.0, 1.0, 8.0, 4.0, 4.0, 4.0], [0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]]
    """
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(mask, dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    return [mask_to_polygon(labels == k + 1) for k in np.argsort(-sizes, kind="stable")[:count]]


def mask_to_polygon(mask: np.ndarray) -> list[float]:
    """The outline of the largest 4-connected component of ``mask``, as a flat xy polygon.

    We trace the exact boundary along pixel edges (not a convex hull, which would swallow
    concave shapes) in half-open pixel coordinates: pixel ``(r, c)`` covers
    ``[c, c+1) × [r, r+1)``, so the polygon's bounds equal the component's xyxy box. Holes
    are filled first — the canonical target has one ring per instance — which also removes
    every pinch point, so the boundary is one simple loop. Collinear vertices are dropped.
    Returns ``[]`` for an empty mask.
    """
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(mask, dtype=bool))  # default structure: 4-connectivity
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    component = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    padded = np.pad(component, 1)
    inner = padded[1:-1, 1:-1]
    # Directed boundary edges, clockwise on screen (y down), as (start x, start y, end x, end y):
    # a side of a foreground pixel is boundary where the neighbour across it is background.
    nxt: dict[tuple[int, int], tuple[int, int]] = {}
    sides = (
        (~padded[:-2, 1:-1], (0, 0, 1, 0)),  # top edge, left to right
        (~padded[1:-1, 2:], (1, 0, 1, 1)),  # right edge, downwards
        (~padded[2:, 1:-1], (1, 1, 0, 1)),  # bottom edge, right to left
        (~padded[1:-1, :-2], (0, 1, 0, 0)),  # left edge, upwards
    )
    for open_side, (sx, sy, ex, ey) in sides:
        rows, cols = np.nonzero(inner & open_side)
        for r, c in zip(rows.tolist(), cols.tolist()):
            nxt[(c + sx, r + sy)] = (c + ex, r + ey)
    start = min(nxt, key=lambda p: (p[1], p[0]))
    loop = [start]
    point = nxt[start]
    while point != start and len(loop) <= len(nxt):  # the bound only guards against a bug above
        loop.append(point)
        point = nxt[point]
    corners = []
    for i, (x, y) in enumerate(loop):
        (px, py), (qx, qy) = loop[i - 1], loop[(i + 1) % len(loop)]
        if (x - px) * (qy - y) - (y - py) * (qx - x) != 0:  # keep only turns
            corners.extend((float(x), float(y)))
    return corners
