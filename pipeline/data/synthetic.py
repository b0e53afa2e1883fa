"""Synthetic datasets, so the product runs and tests without downloading anything.

Four looks (``KINDS``), each a handful of categories drawn large and high-contrast on a small
image (64×64 by default: the default model trains on a 2-core CPU, so objects must be
learnable at that size — min side ~12 px, no overlaps).

Determinism: sample ``i`` of ``(kind, seed)`` is drawn from its own
``numpy.random.default_rng([seed, kind_index, i])``, never from global state, so the same
seed gives byte-identical images and annotations, on any machine, whatever ``n`` or ``task``
(the task only decides which parts of the target are filled in).

>>> ds = generate("retail-shelf", 2, seed=0, task="caption")
>>> ds.splits["train"][0].target["text"]  # doctest: +SKIP
'a red product on a shelf'
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.data.sources import synthetic_uri
from pipeline.structures import TASKS, WEAK_TASKS, Dataset, Sample, empty_target

__all__ = ["KINDS", "CATEGORIES", "KEYPOINT_NAMES", "generate", "write_coco", "synthetic_uri"]

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

# --------------------------------------------------------------------------------- kinds


def _generic(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    # Varied backgrounds (dark, mid, light, with or without straight edges) so the warm-start
    # learns "coloured object on anything", which is what transfers to the domain presets.
    base = _rint(rng, 60, 215)
    background = np.clip(base + rng.integers(-20, 21, size=3), 0, 255)
    pixels = background[None, None, :].astype(np.int16) + _noise(rng, (size, size, 1), 4)
    if shift is not None:  # diagonal stripes, which no unshifted background has
        yy, xx = np.mgrid[0:size, 0:size]
        period = _rint(rng, _s(6, scale), _s(12, scale))
        pixels = pixels + np.where(((xx + yy) // period) % 2 == 0, 18, -18)[..., None].astype(np.int16)
    elif rng.random() < 0.3:  # vertical grain, like wood or fabric
        pixels = pixels + rng.integers(-12, 13, size=(1, size, 1))
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(_rint(rng, 0, 2)):
        y = _rint(rng, 0, size - 1)
        shade = tuple(int(v) for v in np.clip(background - _rint(rng, 40, 90), 0, 255))
        draw.line([(0, y), (size - 1, y)], fill=shade, width=max(1, round(2 * scale)))
    lo, hi = _s(14, _scaled(scale, shift)), _s(30, _scaled(scale, shift))
    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["generic"][_rint(rng, 0, 2)]
        # Each shape has its own colour family: a tiny model learns "what" from colour within
        # seconds, which is what pulls it out of the image-blind start (it otherwise predicts
        # the average box for every image). Shapes still differ, for the segment task.
        colour_name, colour = _GENERIC_COLOURS[label][_rint(rng, 0, 1)]
        colour = tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-20, 21, size=3), 0, 255))
        box = _place(rng, [o.box for o in objects], size, size, (lo, hi), (lo, hi), square=label == "square" and rng.random() < 0.5)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        if label == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)
            polygon = _rect_polygon(box)
        elif label == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour)
            polygon = _ellipse_polygon(box)
        else:
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=colour)
            polygon = [float(x1), float(y2), float(x2), float(y2), (x1 + x2) / 2, float(y1)]
        objects.append(_Obj(label, box, polygon, _vertical_keypoints(box), {"colour": colour_name}))
    if shift is not None:  # plus signs and hollow rings: shapes that are none of the categories

        def plus(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            bar = max(2, (x2 - x1) // 3)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            draw.rectangle([x1, cy - bar // 2, x2 - 1, cy - bar // 2 + bar - 1], fill=(200, 60, 170))
            draw.rectangle([cx - bar // 2, y1, cx - bar // 2 + bar - 1, y2 - 1], fill=(200, 60, 170))

        def ring(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], outline=(245, 245, 245), width=max(2, round(2 * scale)))

        _distract(rng, objects, size, shift, [plus, ring], (_s(10, scale), _s(16, scale)))
    return np.asarray(image), objects


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Random values on a ``cells``-square grid, bilinearly upsampled: light, stains, texture."""
    coarse = Image.fromarray(rng.integers(0, 256, size=(cells, cells), dtype=np.uint8), "L")
    return np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0 - 0.5


def _photo(
    rng: np.random.Generator, size: int, count: int, min_count: int
) -> tuple[np.ndarray, list[_Obj]]:
    """Objects as a camera or a microscope sees them, for a warm start that transfers to real
    photographs: uneven light and texture behind, objects from a few pixels to half the image
    that differ from it by a little or a lot (brighter or darker, textured, shaded towards the
    rim), sometimes in grey, then blur, sensor noise and JPEG artefacts. On real coins the
    flat-colour ``generic`` warm start scored below no warm start at all (benchmarks/real_images.py)."""
    grey = rng.random() < 0.4
    base = rng.uniform(30, 220, size=1 if grey else 3)
    light = _smooth_field(rng, size, _rint(rng, 2, 4)) * rng.uniform(0, 120)
    grain = _smooth_field(rng, size, _rint(rng, 8, max(9, size // 4))) * rng.uniform(0, 60)
    pixels = base[None, None, :] + (light + grain)[..., None]
    lo, hi = max(3, size // 24), max(6, size // 2)
    objects: list[_Obj] = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for index in range(count):
        label = CATEGORIES["photo"][_rint(rng, 0, 2)]
        side = int(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # as many small objects as large
        aspect = rng.uniform(0.6, 1.0)
        w_range = (max(3, int(side * aspect)), side)
        box = _place(rng, [o.box for o in objects], size, size, w_range, w_range, square=label == "blob" and rng.random() < 0.5)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        mask_img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask_img)
        if label == "box":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=255)
            polygon = _rect_polygon(box)
        elif label == "blob":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=255)
            polygon = _ellipse_polygon(box)
        else:
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=255)
            polygon = [float(x1), float(y2), float(x2), float(y2), (x1 + x2) / 2, float(y1)]
        mask = np.asarray(mask_img, dtype=np.float32)[..., None] / 255.0
        # brighter on a dark surround, darker on a light one: a step past 0 or 255 would be clipped away
        local = float((pixels * mask).sum() / max(mask.sum() * pixels.shape[-1], 1))
        sign = 1 if local < 90 else -1 if local > 165 else (1 if rng.random() < 0.6 else -1)
        contrast = rng.uniform(35, 140) * sign
        tint = np.ones(1 if grey else 3) if rng.random() < 0.5 else rng.uniform(0.3, 1.3, size=1 if grey else 3)
        cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
        rim = np.clip(1.0 - rng.uniform(0, 0.8) * ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r), 0, 1)[..., None]
        texture = _smooth_field(rng, size, _rint(rng, 4, max(5, size // 3)))[..., None] * rng.uniform(0, 80)
        pixels = pixels * (1 - mask) + (pixels + contrast * tint * rim + texture) * mask
        objects.append(_Obj(label, box, polygon, _vertical_keypoints(box), {"colour": "grey" if grey else "mixed"}))
    pixels = pixels + rng.normal(0, rng.uniform(1, 10), size=pixels.shape)
    image = Image.fromarray(_to_uint8(np.broadcast_to(pixels, (size, size, 3)) if grey else pixels), "RGB")
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=_rint(rng, 30, 90))
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(image), objects


_PRODUCT_COLOURS = {
    "cola": ("red", (205, 25, 30)),
    "water": ("blue", (35, 90, 215)),
    "chips": ("yellow", (245, 205, 25)),
    "soap": ("green", (35, 160, 60)),
}


def _retail_shelf(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    if shift is not None:  # dark slate or glossy white shelving, never seen unshifted
        dark = rng.random() < 0.5
        background = np.array([58, 62, 72] if dark else [232, 232, 226]) + _rint(rng, -8, 8)
        grain = _noise(rng, (1, size, 1), 2)
    elif rng.random() < 0.6:  # light wood, with per-column grain
        background = np.array([195, 165, 118]) + _rint(rng, -12, 12)
        grain = _noise(rng, (1, size, 1), 7)
    else:  # light gray metal shelving
        background = np.array([188, 188, 192]) + _rint(rng, -12, 12)
        grain = _noise(rng, (1, size, 1), 2)
    pixels = background[None, None, :].astype(np.int16) + grain + _noise(rng, (size, size, 1), 3)
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)

    thickness = _s(3, scale)
    shelf_tops = [round(size * 0.85)] if rng.random() < 0.5 else [round(size * 0.45), round(size * 0.9)]
    shelf_colour = (70 + _rint(rng, -10, 10), 45, 25)
    if shift is not None:
        shelf_colour = (175, 178, 184) if dark else (40, 40, 46)
    oscale = _scaled(scale, shift)
    for top in shelf_tops:
        draw.rectangle([0, top, size - 1, top + thickness - 1], fill=shelf_colour)

    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["retail-shelf"][_rint(rng, 0, 3)]
        colour_name, colour = _PRODUCT_COLOURS[label]
        box = None
        for _ in range(_TRIES):
            shelf = _rint(rng, 0, len(shelf_tops) - 1)
            ceiling = 1 if shelf == 0 else shelf_tops[shelf - 1] + thickness + 1
            room = shelf_tops[shelf] - ceiling
            width = _rint(rng, _s(12, oscale), _s(18, oscale))
            height = min(_rint(rng, _s(16, oscale), _s(26, oscale)), room)
            if height < _s(12, oscale):
                continue
            x1 = _rint(rng, 1, size - width - 1)
            candidate = (x1, shelf_tops[shelf] - height, x1 + width, shelf_tops[shelf])
            if _free(candidate, [o.box for o in objects], gap=1):
                box = candidate
                break
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        # Body with a dark outline, a darker cap, and a white label band: reads as a product.
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour, outline=_darker(colour))
        draw.rectangle([x1 + 1, y1 + 1, x2 - 2, y1 + _s(2, scale)], fill=_darker(colour, 0.75))
        band_h = max(3, round((y2 - y1) * 0.2))
        band_y1 = y1 + round((y2 - y1) * 0.45)
        draw.rectangle([x1 + 2, band_y1, x2 - 3, band_y1 + band_h - 1], fill=(245, 245, 245))
        label_y = band_y1 + band_h / 2
        objects.append(
            _Obj(
                label,
                box,
                _rect_polygon(box),
                _vertical_keypoints(box, label_y),
                {"colour": colour_name, "shelf": y2},
            )
        )
    if shift is not None:  # purple and pink round items and price tags: on the shelf, not products

        def round_item(box: tuple[int, int, int, int]) -> None:
            colour = (150, 70, 180) if rng.random() < 0.5 else (240, 150, 190)
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour, outline=_darker(colour))

        def tag(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            draw.rectangle([x1, y1, x2 - 1, min(y2, y1 + _s(6, scale)) - 1], fill=(250, 140, 40))

        _distract(rng, objects, size, shift, [round_item, tag], (_s(8, scale), _s(12, scale)))
    return np.asarray(image), objects


def _medical_scan(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    # Shifted: another scanner, a grey surround and darker tissue (lesions stay ~100 levels above it).
    gray = Image.new("L", (size, size), _rint(rng, 45, 60) if shift is not None else _rint(rng, 10, 25))
    draw = ImageDraw.Draw(gray)
    mx, my = _rint(rng, _s(2, scale), _s(6, scale)), _rint(rng, _s(2, scale), _s(6, scale))
    body = (mx, my, size - mx, size - my)
    tissue = _rint(rng, 80, 100) if shift is not None else _rint(rng, 105, 135)
    draw.ellipse([body[0], body[1], body[2] - 1, body[3] - 1], fill=tissue)
    bcx, bcy = _centre(body)
    brx, bry = (body[2] - body[0]) / 2, (body[3] - body[1]) / 2

    def inside_body(box: tuple[int, int, int, int]) -> bool:
        corners = [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])]
        return all(((x - bcx) / brx) ** 2 + ((y - bcy) / bry) ** 2 <= 0.92 for x, y in corners)

    objects: list[_Obj] = []
    lo, hi = _s(10, _scaled(scale, shift)), _s(20, _scaled(scale, shift))
    for index in range(count):
        box = _place(rng, [o.box for o in objects], size, size, (lo, hi), (lo, hi), accept=inside_body)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=_rint(rng, 215, 245))
        cx, cy = _centre(box)
        keypoints = [(float(x1), cy), (cx, cy), (float(x2), cy)]
        objects.append(_Obj("lesion", box, _ellipse_polygon(box), keypoints))
    if shift is not None:  # dark cysts and tiny bright calcifications: findings that are not lesions

        def cyst(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=_rint(rng, 25, 40))

        def speck(box: tuple[int, int, int, int]) -> None:
            cx, cy = _centre(box)
            r = max(1, round(1.5 * scale))
            draw.ellipse([cx - r, cy - r, cx + r - 1, cy + r - 1], fill=_rint(rng, 215, 245))

        _distract(rng, objects, size, shift, [cyst, speck], (_s(6, scale), _s(10, scale)), accept=inside_body)
    # Mild acquisition noise over everything; lesions stay ~100 gray levels above tissue.
    pixels = np.asarray(gray).astype(np.int16) + np.round(rng.normal(0, 5, (size, size))).astype(np.int16)
    channel = _to_uint8(pixels)
    return np.repeat(channel[:, :, None], 3, axis=2), objects


_VEHICLE_COLOURS = ((200, 30, 30), (40, 70, 200), (235, 235, 235), (25, 25, 30), (30, 150, 60))


def _traffic_camera(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    asphalt = _rint(rng, 140, 160) if shift is not None else _rint(rng, 85, 110)  # shifted: pale concrete
    pixels = np.full((size, size, 3), asphalt, np.int16) + _noise(rng, (size, size, 1), 5)
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)

    lanes = 3
    bounds = [round(size * k / lanes) for k in range(lanes + 1)]
    mark = max(1, _s(2, scale))
    dash, gap = _s(6, scale), _s(4, scale)
    phase = _rint(rng, 0, dash + gap - 1)
    for y in bounds[1:-1]:
        for x in range(-phase, size, dash + gap):
            if x + dash > 0:
                draw.rectangle(
                    [max(x, 0), y - mark // 2, min(x + dash, size) - 1, y - mark // 2 + mark - 1],
                    fill=(240, 240, 240) if shift is None else (235, 200, 40),
                )
    headings = [1 if rng.random() < 0.5 else -1 for _ in range(lanes)]  # +1: driving right

    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["traffic-camera"][_rint(rng, 0, 2)]
        length_range = {"car": (16, 20), "truck": (26, 34), "bus": (28, 36)}[label]
        width_range = (12, 13) if label == "car" else (13, 15)
        oscale = _scaled(scale, shift)
        box = lane = None
        for _ in range(_TRIES):
            lane = _rint(rng, 0, lanes - 1)
            length = _rint(rng, _s(length_range[0], oscale), _s(length_range[1], oscale))
            width = _rint(rng, _s(width_range[0], oscale), _s(width_range[1], oscale))
            top_min, top_max = bounds[lane] + mark, bounds[lane + 1] - mark - width
            if top_max < top_min or length > size - 2:
                continue
            x1, y1 = _rint(rng, 1, size - length - 1), _rint(rng, top_min, top_max)
            candidate = (x1, y1, x1 + length, y1 + width)
            if _free(candidate, [o.box for o in objects], gap=2):
                box = candidate
                break
        if box is None or lane is None:
            if index < min_count:
                raise _NoRoom()
            break
        heading = headings[lane]
        x1, y1, x2, y2 = box
        if label == "bus":
            body = (235, 190, 20)
        elif label == "truck":
            body = (200, 190, 170)  # light cargo box; the cab gets its own colour below
        else:
            body = _VEHICLE_COLOURS[_rint(rng, 0, len(_VEHICLE_COLOURS) - 1)]
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=body, outline=_darker(body, 0.5))
        length = x2 - x1
        # The front must be visible, or the "front" keypoint cannot be learned: a dark
        # windscreen near the front (and, for trucks, a coloured cab).
        if label == "truck":
            cab = _s(8, scale)
            cab_colour = _VEHICLE_COLOURS[_rint(rng, 0, 2)]
            cx1 = x2 - cab if heading > 0 else x1
            draw.rectangle(
                [cx1, y1, cx1 + cab - 1, y2 - 1], fill=cab_colour, outline=_darker(cab_colour, 0.5)
            )
        glass = max(2, round(length * (0.12 if label != "car" else 0.2)))
        inset = max(2, round(length * 0.08)) if label == "car" else 1
        gx1 = x2 - inset - glass if heading > 0 else x1 + inset
        draw.rectangle([gx1, y1 + 2, gx1 + glass - 1, y2 - 3], fill=(35, 45, 65))
        cx, cy = _centre(box)
        front, rear = (float(x2), float(x1)) if heading > 0 else (float(x1), float(x2))
        objects.append(_Obj(label, box, _rect_polygon(box), [(front, cy), (cx, cy), (rear, cy)]))
    if shift is not None:  # traffic cones and manhole covers: on the road, not vehicles

        def cone(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=(250, 110, 20))

        def manhole(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=(45, 45, 50), outline=(20, 20, 20))

        _distract(rng, objects, size, shift, [cone, manhole], (_s(6, scale), _s(10, scale)))
    return np.asarray(image), objects


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


_PAINTERS: dict[str, Callable[..., tuple[np.ndarray, list[_Obj]]]] = {
    "generic": _generic,
    "retail-shelf": _retail_shelf,
    "medical-scan": _medical_scan,
    "traffic-camera": _traffic_camera,
    "photo": _photo,
}


# ------------------------------------------------------------------------------ captions

_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    plural = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else n} {plural}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _position(box: tuple[int, int, int, int], size: int) -> str:
    """Where a box's centre is, in a 3×3 grid: "upper left", "middle right", "center"…"""
    cx, cy = _centre(box)
    col = 0 if cx < size / 3 else 2 if cx >= 2 * size / 3 else 1
    row = 0 if cy < size / 3 else 2 if cy >= 2 * size / 3 else 1
    return (
        ("upper left", "upper middle", "upper right"),
        ("middle left", "center", "middle right"),
        ("lower left", "lower middle", "lower right"),
    )[row][col]


def _groups(objects: list[_Obj], key: Callable[[_Obj], str], order: list[str]) -> list[tuple[str, int]]:
    counts = {name: 0 for name in order}
    for obj in objects:
        counts[key(obj)] += 1
    return [(name, n) for name, n in counts.items() if n]


def _caption(kind: str, objects: list[_Obj], size: int) -> str:
    if kind == "photo":
        groups = _groups(objects, lambda o: o.label, list(CATEGORIES["photo"]))
        return _join([_count(n, name) for name, n in groups]) if objects else "an empty background"
    if kind == "generic":
        if not objects:
            return "an empty background"
        if len(objects) == 1:
            obj = objects[0]
            return f"a {obj.extra['colour']} {obj.label} in the {_position(obj.box, size)}"
        groups = _groups(objects, lambda o: o.label, list(CATEGORIES["generic"]))
        return _join([_count(n, name) for name, n in groups])
    if kind == "retail-shelf":
        if not objects:
            return "an empty shelf"
        colours = [_PRODUCT_COLOURS[c][0] for c in CATEGORIES["retail-shelf"]]
        groups = _groups(objects, lambda o: o.extra["colour"], colours)
        parts = [(_count(n, "product").replace(" product", f" {c} product", 1)) for c, n in groups]
        shelves = len({o.extra["shelf"] for o in objects})
        return _join(parts) + (" on a shelf" if shelves == 1 else " on two shelves")
    if kind == "medical-scan":
        if not objects:
            return "a scan with no lesions"
        ordered = sorted(objects, key=lambda o: (o.box[0], o.box[1]))
        places: list[str] = []
        for obj in ordered:
            place = _position(obj.box, size)
            if place not in places:
                places.append(place)
        lesions = _count(len(objects), "lesion").replace(" lesion", " bright lesion", 1)
        return f"{lesions} in the {_join(places)} of the scan"
    if not objects:
        return "an empty road"
    groups = _groups(objects, lambda o: o.label, ["bus", "truck", "car"])  # big vehicles first
    return _join([_count(n, name) for name, n in groups]) + " on the road"


# ------------------------------------------------------------------------------ generate

# Upper bounds of a synthetic:// URI's parameters. A URI is user input (the API, GitHub pushes)
# and is generated whole in memory, in the API process too (``POST /api/rewards/test``). Every
# preset's sets fit (the warm-start's n=4000 is the largest, ~10 s); n × size² caps the pixels
# held at once (~100 MB of RGB), so a large size needs a smaller n.
URI_MAX = {"n": 5000, "size": 512, "min_objects": 16, "max_objects": 16, "points": 5000, "counts": 5000}
URI_MAX_PIXELS = 32_000_000


def check_uri_bounds(params: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the parameter of a synthetic:// URI that is over its bound."""
    for key, most in URI_MAX.items():
        if key in params and params[key] > most:
            raise ValueError(f"{key}={params[key]} is over the limit of {most}; lower {key}")
    n, size = params.get("n", 64), params.get("size", _BASE)
    for key in ("points", "counts"):
        if params.get(key, 0) < 0:
            raise ValueError(f"{key}={params[key]} must be 0 or more")
    if params.get("points", 0) + params.get("counts", 0) > n:
        raise ValueError(
            f"points={params.get('points', 0)} and counts={params.get('counts', 0)} weakly labelled images "
            f"are more than the n={n} images; lower them or raise n"
        )
    if n * size * size > URI_MAX_PIXELS:
        raise ValueError(f"n={n} images of size={size} are {n * size * size / 1e6:.0f} M pixels, over the "
                         f"{URI_MAX_PIXELS / 1e6:.0f} M limit; lower n or size")  # fmt: skip



def generate(
    kind: str,
    n: int,
    *,
    seed: int,
    task: str = "detect",
    shift: bool = False,
    size: int = 64,
    min_objects: int | None = None,
    max_objects: int | None = None,
    points: int = 0,
    counts: int = 0,
) -> Dataset:
    """``n`` synthetic samples of ``kind``, all in ``splits["train"]`` (callers split).

    ``shift=True`` draws a held-out set outside the training distribution: other backgrounds,
    lighting and object scale, plus distractor shapes that are none of the categories and are
    not in the target. Same categories, same label semantics; its own random stream and file
    names, so it never repeats an unshifted image.

    Every target is filled for ``task``: boxes and labels always, plus one outline polygon
    per instance (segment), K=3 named keypoints per instance and their flat ``points``
    (keypoints), or a short counting caption (caption); detect and segment targets also
    count their objects per category.

    Weak labels (detect, segment): the last ``points`` samples keep only a click at the
    centre of each object's box (with its label), and the ``counts`` samples before them only
    their counts; their boxes and masks are removed, as a user's clicked or counted images
    have none (an image without objects stays a fully labelled negative). The pixels are the
    same whatever ``points`` and ``counts`` are.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if shift and kind not in SHIFT_SCALE:
        raise ValueError(f"shift is not available for {kind!r}; it is for {', '.join(SHIFT_SCALE)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer (numpy seeds are unsigned)")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size={size!r} is too small; objects would be under 6 px — use size >= 32")
    lo_default, hi_default = DEFAULT_OBJECTS[kind]
    lo = (
        min_objects
        if min_objects is not None
        else min(lo_default, max_objects if max_objects is not None else lo_default)
    )
    hi = max_objects if max_objects is not None else max(hi_default, lo)
    if lo < 0 or hi < lo:
        raise ValueError(f"min_objects={lo} and max_objects={hi}: need 0 <= min_objects <= max_objects")
    for key, value in (("points", points), ("counts", counts)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{key}={value!r} must be a non-negative integer")
    if points + counts > n:
        raise ValueError(f"points={points} and counts={counts} weakly labelled images are more than n={n}")
    if (points or counts) and task not in WEAK_TASKS:
        raise ValueError(
            f"points and counts are weak labels, which only tasks {' and '.join(WEAK_TASKS)} accept, not {task}"
        )

    names = CATEGORIES[kind]
    kind_index = KINDS.index(kind)
    samples: list[Sample] = []
    for i in range(n):
        rng = np.random.default_rng([seed, kind_index, i, 1] if shift else [seed, kind_index, i])
        count = _rint(rng, lo, hi)
        try:
            if shift:
                pixels, objects = _PAINTERS[kind](rng, size, count, lo, _Shift(SHIFT_SCALE[kind]))
                pixels = _relight(rng, pixels, grey=kind == "medical-scan")
            else:
                pixels, objects = _PAINTERS[kind](rng, size, count, lo)
        except _NoRoom:
            raise ValueError(
                f"cannot fit {lo} non-overlapping {kind} objects in a {size}×{size} image; "
                "lower min_objects or raise size"
            ) from None
        target = empty_target(size, size)
        target["boxes"] = [[int(v) for v in o.box] for o in objects]
        target["labels"] = [o.label for o in objects]
        # As a COCO load gives them (write_coco writes the same "area"): the polygon's area, else the box's.
        target["areas"] = [float((b[2] - b[0]) * (b[3] - b[1])) for b in target["boxes"]]
        if task == "segment":
            target["masks"] = [[float(v) for v in o.polygon] for o in objects]
            target["mask_parts"] = [[mask] for mask in target["masks"]]
            target["areas"] = [float(_polygon_area(mask)) for mask in target["masks"]]
        elif task == "keypoints":
            target["keypoints"] = [[[float(x), float(y), 2] for x, y in o.keypoints] for o in objects]
            target["points"] = [[float(x), float(y)] for o in objects for x, y in o.keypoints]
        elif task == "caption":
            target["text"] = _caption(kind, objects, size)
        label_kind = "points" if i >= n - points else "counts" if i >= n - points - counts else "full"
        if not objects:
            label_kind = "full"  # nothing to click or count: a negative, which is fully labelled
        if task in WEAK_TASKS:
            target["counts"] = {name: c for name in names if (c := target["labels"].count(name))}
        if label_kind == "points":
            target["points"] = [[float(v) for v in _centre(o.box)] for o in objects]
            target["point_labels"] = [o.label for o in objects]
        if label_kind != "full":
            target["boxes"], target["labels"], target["masks"] = [], [], []
            target["areas"], target["mask_parts"] = [], []
        samples.append(
            Sample(
                id=i + 1,
                file_name=f"{kind}-{'shifted-' if shift else ''}{i:05d}.png",
                width=size,
                height=size,
                target=target,
                image=Image.fromarray(pixels, "RGB"),
                label_kind=label_kind,
            )
        )
    return Dataset(
        name=kind,
        task=task,
        categories=list(names),
        splits={"train": samples},
        keypoint_names=list(KEYPOINT_NAMES[kind]) if task == "keypoints" else [],
    )


# ----------------------------------------------------------------------------- write_coco


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def write_coco(dataset: Dataset, folder: Path, *, per_split: bool = False) -> Path:
    """Write ``dataset`` as a COCO folder (``images/*.png`` + ``annotations.json``); return ``folder``.

    ``load_dataset(folder, dataset.task)`` reads it back equal (same samples, targets,
    label kinds, categories, keypoint names); weak labels are written as clicks, "counts"
    and "unlabeled" (README "Weak labels"). With ``per_split=True`` the annotations go to
    ``train.json`` / ``val.json`` / ``test.json`` instead, so the splits survive the trip.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    category_ids = {name: index + 1 for index, name in enumerate(dataset.categories)}
    categories = []
    for name, cid in category_ids.items():
        entry: dict[str, Any] = {"id": cid, "name": name, "supercategory": dataset.name}
        if dataset.keypoint_names:
            entry["keypoints"] = list(dataset.keypoint_names)
            entry["skeleton"] = []
        categories.append(entry)

    groups = (
        {s: list(v) for s, v in dataset.splits.items() if v}
        if per_split
        else {"annotations": [s for samples in dataset.splits.values() for s in samples]}
    )
    next_ann = 1
    for file_stem, samples in groups.items():
        images, annotations = [], []
        for sample in samples:
            destination = folder / "images" / sample.file_name
            destination.parent.mkdir(parents=True, exist_ok=True)
            if sample.image is not None:
                sample.image.save(destination, format="PNG")
            elif sample.path is not None:
                shutil.copyfile(sample.path, destination)
            else:
                raise ValueError(
                    f"sample {sample.id} '{sample.file_name}' has neither an image nor a path to copy"
                )
            image_entry: dict[str, Any] = {
                "id": sample.id,
                "file_name": sample.file_name,
                "width": sample.width,
                "height": sample.height,
            }
            target = sample.target
            if sample.label_kind == "none":
                image_entry["unlabeled"] = True
            elif sample.label_kind == "counts" or (
                # a clicked image's counts come from its clicks when each names its category
                sample.label_kind == "points" and target["counts"] and not all(target["point_labels"])
            ):
                image_entry["counts"] = dict(target["counts"])
            images.append(image_entry)
            if sample.label_kind == "points":
                for point, label in zip(target["points"], target["point_labels"], strict=True):
                    click: dict[str, Any] = {"id": next_ann, "image_id": sample.id, "point": list(point)}
                    if label:
                        click["category_id"] = category_ids[label]
                    annotations.append(click)
                    next_ann += 1
                continue
            for k, (box, label) in enumerate(zip(target["boxes"], target["labels"])):
                x1, y1, x2, y2 = box
                ann: dict[str, Any] = {
                    "id": next_ann,
                    "image_id": sample.id,
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
                if k < len(target["masks"]) and target["masks"]:
                    parts = target.get("mask_parts") or []
                    ann["segmentation"] = [list(p) for p in parts[k]] if k < len(parts) else [list(target["masks"][k])]
                    ann["area"] = _polygon_area(target["masks"][k])
                if k < len(target.get("areas") or []):
                    ann["area"] = target["areas"][k]
                if k < len(target["keypoints"]) and target["keypoints"]:
                    kps = target["keypoints"][k]
                    ann["keypoints"] = [v for x, y, vis in kps for v in (x, y, int(vis))]
                    ann["num_keypoints"] = sum(1 for _, _, vis in kps if vis > 0)
                annotations.append(ann)
                next_ann += 1
            for region in target.get("crowd") or []:
                x1, y1, x2, y2 = region["box"]
                annotations.append({"id": next_ann, "image_id": sample.id, "category_id": category_ids[region["label"]],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 1})  # fmt: skip
                next_ann += 1
            if target.get("text"):
                annotations.append({"id": next_ann, "image_id": sample.id, "caption": target["text"]})
                next_ann += 1
        document = {
            "info": {"description": f"{dataset.name} ({dataset.task}), written by DreamForge"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (folder / f"{file_stem}.json").write_text(json.dumps(document, indent=1))
    return folder
