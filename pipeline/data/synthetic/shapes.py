"""What every look shares: its categories and keypoint names, the drawn-object record, the
size and placement helpers, and the shifted held-out look (``generate(shift=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = ("generic", "retail-shelf", "medical-scan", "traffic-camera", "photo")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "generic": ("square", "circle", "triangle"),
    "retail-shelf": ("cola", "water", "chips", "soap"),
    "medical-scan": ("lesion",),
    "traffic-camera": ("car", "truck", "bus"),
    "photo": ("blob", "box", "triangle"),
}
# K = 3 named keypoints per instance, the same for every category of a kind.
KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "generic": ("top", "center", "bottom"),
    "retail-shelf": ("top", "label", "bottom"),  # label = middle of the white label band
    "medical-scan": ("left", "center", "right"),
    "traffic-camera": ("front", "center", "rear"),  # front = middle of the front bumper
    "photo": ("top", "center", "bottom"),
}
DEFAULT_OBJECTS: dict[str, tuple[int, int]] = {
    "generic": (1, 3),
    "retail-shelf": (1, 2),
    "medical-scan": (1, 2),
    "traffic-camera": (1, 2),
    "photo": (1, 6),
}
_BASE = 64  # every size below is in pixels of a 64×64 image and scaled by size / 64
_TRIES = 200  # placement attempts per object before giving up on it


@dataclass
class _Obj:
    """One drawn instance: half-open integer box, outline polygon, K keypoints."""

    label: str
    box: tuple[int, int, int, int]
    polygon: list[float]
    keypoints: list[tuple[float, float]]
    extra: dict[str, Any] = field(default_factory=dict)  # what the caption needs (colour, shelf)

# ------------------------------------------------------------------------------ helpers


def _s(value: float, scale: float) -> int:
    return max(1, int(round(value * scale)))


def _rint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive), as a Python int."""
    return int(rng.integers(lo, hi + 1)) if hi > lo else int(lo)


def _free(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int) -> bool:
    x1, y1, x2, y2 = box
    return all(
        x2 + gap <= a1 or a2 + gap <= x1 or y2 + gap <= b1 or b2 + gap <= y1 for a1, b1, a2, b2 in others
    )


def _rect_polygon(box: tuple[int, int, int, int]) -> list[float]:
    x1, y1, x2, y2 = box
    return [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]


def _ellipse_polygon(box: tuple[int, int, int, int], points: int = 12) -> list[float]:
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    out: list[float] = []
    for k in range(points):
        angle = 2 * math.pi * k / points
        # Rounded to 2 decimals so the JSON stays short; clamped so rounding never leaves the box.
        out.append(min(max(round(cx + rx * math.cos(angle), 2), x1), x2))
        out.append(min(max(round(cy + ry * math.sin(angle), 2), y1), y2))
    return out


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _vertical_keypoints(
    box: tuple[int, int, int, int], middle_y: float | None = None
) -> list[tuple[float, float]]:
    cx, cy = _centre(box)
    return [(cx, float(box[1])), (cx, cy if middle_y is None else middle_y), (cx, float(box[3]))]


def _noise(rng: np.random.Generator, shape: tuple[int, ...], amplitude: int) -> np.ndarray:
    return rng.integers(-amplitude, amplitude + 1, size=shape).astype(np.int16)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(array, 0, 255).astype(np.uint8)


def _darker(colour: tuple[int, int, int], factor: float = 0.55) -> tuple[int, int, int]:
    return tuple(int(c * factor) for c in colour)  # type: ignore[return-value]


# Saturated colours that stand out against the muted backgrounds; names feed the captions.
_PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 30, 30)),
    ("green", (30, 180, 50)),
    ("blue", (40, 80, 230)),
    ("yellow", (240, 210, 30)),
    ("magenta", (210, 40, 200)),
    ("cyan", (30, 200, 210)),
    ("orange", (245, 130, 20)),
)


_GENERIC_COLOURS = {
    "square": (_PALETTE[0], _PALETTE[6]),  # red, orange
    "circle": (_PALETTE[2], _PALETTE[5]),  # blue, cyan
    "triangle": (_PALETTE[1], _PALETTE[3]),  # green, yellow
}

class _NoRoom(Exception):
    """Raised by a painter when min_objects cannot be placed; turned into a ValueError."""


# ------------------------------------------------------------------------------- shift

# Object size factor of a shifted image, per kind: a farther camera (smaller products and
# vehicles), another zoom on the scanner (larger lesions), smaller generic shapes.
SHIFT_SCALE = {"generic": 0.7, "retail-shelf": 0.75, "medical-scan": 1.3, "traffic-camera": 0.75}


@dataclass
class _Shift:
    """What a painter changes for the shifted held-out set (``generate(shift=True)``): its own
    backgrounds, object sizes times ``scale``, and unlabelled distractors (kept in
    ``distractors`` so objects and distractors never overlap). Lighting is applied after
    painting (``_relight``)."""

    scale: float
    distractors: list[tuple[int, int, int, int]] = field(default_factory=list)


def _scaled(scale: float, shift: _Shift | None) -> float:
    return scale * (shift.scale if shift is not None else 1.0)


def _distract(
    rng: np.random.Generator,
    objects: list[_Obj],
    size: int,
    shift: _Shift,
    painters: list[Callable[[tuple[int, int, int, int]], None]],
    side: tuple[int, int],
    *,
    accept: Callable[[tuple[int, int, int, int]], bool] | None = None,
) -> None:
    """Draw 1 to 3 distractors with ``painters`` in free space; they never enter the target."""
    for _ in range(_rint(rng, 1, 3)):
        box = _place(rng, [o.box for o in objects] + shift.distractors, size, size, side, side, accept=accept)
        if box is None:
            return
        painters[_rint(rng, 0, len(painters) - 1)](box)
        shift.distractors.append(box)


def _relight(rng: np.random.Generator, pixels: np.ndarray, *, grey: bool) -> np.ndarray:
    """Other lighting: dimmer overall, a light gradient across the image, a colour cast."""
    size = pixels.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(50, 90)
    cast = np.full(3, rng.uniform(-12, 12)) if grey else rng.uniform(-15, 15, size=3)
    out = pixels.astype(np.float32) * rng.uniform(0.75, 0.9) + ramp[..., None] + cast
    return _to_uint8(np.round(out))


def _place(
    rng: np.random.Generator,
    others: list[tuple[int, int, int, int]],
    width: int,
    height: int,
    w_range: tuple[int, int],
    h_range: tuple[int, int],
    *,
    square: bool = False,
    accept: Callable[[tuple[int, int, int, int]], bool] | None = None,
    gap: int = 2,
) -> tuple[int, int, int, int] | None:
    """A random box of the given size range that keeps ``gap`` pixels from the others."""
    for attempt in range(_TRIES):
        # Second half of the attempts: smallest size, the likeliest to fit a crowded image.
        small = attempt >= _TRIES // 2
        w = w_range[0] if small else _rint(rng, *w_range)
        h = w if square else (h_range[0] if small else _rint(rng, *h_range))
        if w > width - 2 or h > height - 2:
            continue
        x1, y1 = _rint(rng, 1, width - w - 1), _rint(rng, 1, height - h - 1)
        box = (x1, y1, x1 + w, y1 + h)
        if _free(box, others, gap) and (accept is None or accept(box)):
            return box
    return None
