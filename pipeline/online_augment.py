"""Augmentations drawn afresh each time the domain stage reads a labelled image
(``data.augment``: ``mosaic``, ``rot90``), so the model rarely sees the same picture twice.

Why: a model trained from random weights on ~100 labelled images memorises them. On the coins
tiles (benchmarks/real_images.py) the default stage scored 0.81-0.92 IoU on its own training
images and 0.47 held-out; with a fresh mosaic at each read (and the stage running on to its
5-minute budget, which memorising made useless), 0.54-0.63 held-out.

* ``mosaic`` (YOLO's): the image becomes a random window, its own size, of a 2×2 mosaic of it
  and three other training images, each resized to its size. Objects move to new places and
  meet new neighbours. A box cut by the window keeps its part inside when at least half of its
  area is inside (a mask's: of its polygon's area), and is dropped otherwise, the rule a person
  labelling the window would follow (the real-image sets of the tests were cut so). A cut mask
  is its polygon cut to the window; a keypoint outside the window becomes absent. A quarter of
  the reads show the image as it is, as evaluation will.
* ``rot90``: one of the image's 8 orientations (quarter turns, mirrored or not), with every box,
  mask, point and keypoint; left/right keypoint names swap when mirrored. For images without an
  up: overhead, microscopy, astronomy.

Each draw is a function of the seed, the epoch and the image's row alone (:class:`EpochTracker`
tells the epoch), so a stage resumed from a checkpoint reads the very images an uninterrupted
one would (``stages/resume.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from transformers import TrainerCallback

from pipeline.augment import ONLINE, map_points, mirror_permutation, mirror_target
from pipeline.structures import Sample, empty_target

MOSAIC_P = 0.75
MAX_SIDE = 2048  # a photo is mosaicked at most this big: no model here reads more without tiling
KEEP_CUT = 0.5  # the share of an object's area (its polygon's, else its box's) inside the window for it to stay labelled


class EpochTracker(TrainerCallback):
    """Tells the augmenter which epoch the trainer reads, before the epoch's first read."""

    def __init__(self, augmenter: OnlineAugment) -> None:
        self.augmenter = augmenter

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.augmenter.epoch = int(state.epoch + 1e-9)  # a resumed trainer starts mid-epoch: e + fraction


class OnlineAugment:
    """``(image, target)`` for row ``i``: sample ``i`` augmented, drawn from ``(seed, epoch, i)``."""

    def __init__(self, samples: Sequence[Sample], names: Sequence[str], seed: int,
                 keypoint_names: list[str] | None = None, max_side: int = MAX_SIDE) -> None:  # fmt: skip
        unknown = set(names) - set(ONLINE)
        if unknown:
            raise ValueError(f"unknown online augmentation {sorted(unknown)}; known: {', '.join(ONLINE)}")
        self.samples, self.names, self.seed, self.epoch = samples, tuple(names), seed, 0
        self.perm = mirror_permutation(keypoint_names or [])
        self.max_side = max_side  # the model's own input side, where known: a 12 MP photo's mosaic is 48 MP

    def __call__(self, i: int, image_of: Callable[[Sample], Image.Image]) -> tuple[Image.Image, dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        s = self.samples[i]
        image = image_of(s).convert("RGB")
        if max(image.size) > self.max_side:
            f = self.max_side / max(image.size)
            image = image.resize((max(1, round(image.width * f)), max(1, round(image.height * f))), Image.Resampling.BILINEAR)
        target = scaled(s.target, (s.width, s.height), image.size)
        if "mosaic" in self.names and len(self.samples) > 1 and rng.random() < MOSAIC_P:
            others = [self.samples[int(j)] for j in rng.integers(0, len(self.samples), 3)]
            tiles = [(image_of(o).convert("RGB"), scaled(o.target, (o.width, o.height), image.size)) for o in others]
            image, target = mosaic(image, target, tiles, rng)
        if "rot90" in self.names:
            image, target = orient(image, target, int(rng.integers(0, 4)), bool(rng.integers(0, 2)), self.perm)
        return image, target


def scaled(target: dict[str, Any], from_size: tuple[int, int], size: tuple[int, int]) -> dict[str, Any]:
    """``target`` of a ``from_size`` image, in the pixels of that image resized to ``size`` (a copy)."""
    t = copy.deepcopy(target)
    sx, sy = size[0] / from_size[0], size[1] / from_size[1]
    if (sx, sy) != (1.0, 1.0):
        map_points(t, lambda x, y: (x * sx, y * sy))
    t["image"] = {"width": int(size[0]), "height": int(size[1])}
    return t


def mosaic(image: Image.Image, target: dict[str, Any], others: list[tuple[Image.Image, dict[str, Any]]],
           rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:  # fmt: skip
    """A random ``image``-sized window of a 2×2 mosaic of ``image`` and three ``others``, each
    ``(image, target)`` with its target already in ``image``'s pixels (:func:`scaled`)."""
    w, h = image.size
    tiles = [(image, target)] + [(o.resize((w, h)), t) for o, t in others]
    canvas = Image.new("RGB", (2 * w, 2 * h))
    x0, y0 = int(rng.integers(0, w + 1)), int(rng.integers(0, h + 1))
    out = empty_target(w, h)
    for slot, k in enumerate(rng.permutation(4)):
        tile, t = tiles[int(k)]
        dx, dy = (slot % 2) * w - x0, (slot // 2) * h - y0
        canvas.paste(tile, (dx + x0, dy + y0))
        t = copy.deepcopy(t)
        map_points(t, lambda x, y, dx=dx, dy=dy: (x + dx, y + dy))
        _keep_inside(t, out, w, h)
    return canvas.crop((x0, y0, x0 + w, y0 + h)), _tidy(out)


def _keep_inside(t: dict[str, Any], out: dict[str, Any], w: int, h: int) -> None:
    """Append to ``out`` the instances of ``t`` (in window pixels) with at least ``KEEP_CUT`` of
    their area inside the ``w``×``h`` window, cut to it: the box, the mask's polygons (by area),
    and the keypoints, those outside becoming absent."""
    masks, parts, kps = t.get("masks") or [], t.get("mask_parts") or [], t.get("keypoints") or []
    for i, (b, label) in enumerate(zip(t["boxes"], t["labels"], strict=True)):
        cut = [max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(w)), min(b[3], float(h))]
        if cut[2] <= cut[0] or cut[3] <= cut[1]:
            continue
        polys = parts[i] if i < len(parts) and parts[i] else ([masks[i]] if i < len(masks) and masks[i] else [])
        inside: list[list[float]] = []
        if polys and sum(map(_area, polys)) > 0:
            inside = [clip_polygon(p, w, h) for p in polys]
            if sum(map(_area, inside)) < KEEP_CUT * sum(map(_area, polys)):
                continue
            inside = [p for p in inside if len(p) >= 6]
            xs, ys = [v for p in inside for v in p[0::2]], [v for p in inside for v in p[1::2]]
            cut = [max(cut[0], min(xs)), max(cut[1], min(ys)), min(cut[2], max(xs)), min(cut[3], max(ys))]
        elif (cut[2] - cut[0]) * (cut[3] - cut[1]) < KEEP_CUT * (b[2] - b[0]) * (b[3] - b[1]):
            continue
        out["boxes"].append(cut)
        out["labels"].append(label)
        out["masks"].append(max(inside, key=_area) if inside else [])
        out["mask_parts"].append(inside)
        out["keypoints"].append([[x, y, v] if v and 0 <= x <= w and 0 <= y <= h else [0.0, 0.0, 0]
                                 for x, y, v in (kps[i] if i < len(kps) else [])])  # fmt: skip


def _tidy(t: dict[str, Any]) -> dict[str, Any]:
    """Per-instance lists that hold nothing are dropped; parts are kept for all instances or none."""
    for key, keep in (("masks", any), ("mask_parts", all), ("keypoints", any)):
        if not (t[key] and keep(t[key])):
            t[key] = []
    return t


def clip_polygon(poly: list[float], w: float, h: float) -> list[float]:
    """The flat polygon ``poly`` cut to the rectangle [0, w] × [0, h] (Sutherland–Hodgman).

    >>> clip_polygon([-2, 0, 4, 0, 4, 4, -2, 4], 10, 10)
    [0.0, 0.0, 4, 0, 4, 4, 0.0, 4.0]
    """
    pts = list(zip(poly[0::2], poly[1::2]))
    for axis, bound, below in ((0, 0.0, False), (0, float(w), True), (1, 0.0, False), (1, float(h), True)):
        kept: list[tuple[float, float]] = []
        for k, p in enumerate(pts):
            q = pts[k - 1]
            p_in, q_in = (p[axis] <= bound) == below or p[axis] == bound, (q[axis] <= bound) == below or q[axis] == bound
            if p_in != q_in:
                f = (bound - q[axis]) / (p[axis] - q[axis])
                kept.append((q[0] + f * (p[0] - q[0]), q[1] + f * (p[1] - q[1])))
            if p_in:
                kept.append(p)
        pts = kept
    return [c for p in pts for c in p]


def _area(poly: list[float]) -> float:
    xs, ys = poly[0::2], poly[1::2]
    return abs(sum(xs[k - 1] * ys[k] - xs[k] * ys[k - 1] for k in range(len(xs)))) / 2


def orient(image: Image.Image, target: dict[str, Any], turns: int, mirror: bool,
           perm: list[int]) -> tuple[Image.Image, dict[str, Any]]:  # fmt: skip
    """``image`` turned ``turns`` quarter turns counter-clockwise, then mirrored left to right."""
    t = copy.deepcopy(target)
    for _ in range(turns):
        w = float(image.width)
        image = image.transpose(Image.Transpose.ROTATE_90)
        map_points(t, lambda x, y, w=w: (y, w - x))
    if mirror:
        w = float(image.width)
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mirror_target(t, w, perm)
    t["image"] = {"width": image.width, "height": image.height}
    return image, t
