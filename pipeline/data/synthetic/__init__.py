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

from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.sources import synthetic_uri
from pipeline.data.synthetic.captions import _caption
from pipeline.data.synthetic.coco_files import _polygon_area, write_coco
from pipeline.data.synthetic.painters import _PAINTERS
from pipeline.data.synthetic.shapes import (
    _BASE,
    CATEGORIES,
    DEFAULT_OBJECTS,
    KEYPOINT_NAMES,
    KINDS,
    SHIFT_SCALE,
    _centre,
    _NoRoom,
    _relight,
    _rint,
    _Shift,
)
from pipeline.structures import TASKS, WEAK_TASKS, Dataset, Sample, empty_target

__all__ = ["KINDS", "CATEGORIES", "KEYPOINT_NAMES", "generate", "write_coco", "synthetic_uri"]

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
    lo, hi = _object_range(kind, n, seed=seed, task=task, shift=shift, size=size, min_objects=min_objects,
                           max_objects=max_objects, points=points, counts=counts)  # fmt: skip
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
        label_kind = "points" if i >= n - points else "counts" if i >= n - points - counts else "full"
        if not objects:
            label_kind = "full"  # nothing to click or count: a negative, which is fully labelled
        target = _target(kind, task, objects, size, label_kind)
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


def _object_range(kind: str, n: int, *, seed: int, task: str, shift: bool, size: int, min_objects: int | None,
                  max_objects: int | None, points: int, counts: int) -> tuple[int, int]:  # fmt: skip
    """``generate``'s arguments checked (ValueError naming the one at fault); returns the fewest
    and the most objects an image gets."""
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
    return lo, hi


def _target(kind: str, task: str, objects: list, size: int, label_kind: str) -> dict[str, Any]:
    """The target of one drawn image for ``task``, as a COCO load would give it, holding only
    what a ``label_kind`` image keeps (clicks or counts instead of boxes for the weak ones)."""
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
    if task in WEAK_TASKS:
        target["counts"] = {name: c for name in CATEGORIES[kind] if (c := target["labels"].count(name))}
    if label_kind == "points":
        target["points"] = [[float(v) for v in _centre(o.box)] for o in objects]
        target["point_labels"] = [o.label for o in objects]
    if label_kind != "full":
        target["boxes"], target["labels"], target["masks"] = [], [], []
        target["areas"], target["mask_parts"] = [], []
    return target
