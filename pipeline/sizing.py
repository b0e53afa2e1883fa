"""``image_size`` and ``num_bins`` set to ``auto``: chosen from the training images, before the
base model and the output format are built, and logged with the reason.

Why: fixed defaults (64 px, 32 bins) were tuned on our synthetic sets. A user's 96-pixel tiles
of small galaxies were shrunk to 64 px, where a galaxy is 4-5 px, and a 7-px box had 3-px
bins, so its corners could not be placed closer than half its size (README, real photographs).

* ``image_size`` (the built-in model's input side): the training images' median longer side,
  rounded to a multiple of 8 (the one-token layout cuts 8x8 patches), within 32-128 px. Not
  larger than the images: upsampling adds pixels, not detail; not over 128: the built-in
  model's patches then carry 32x32 pixels each, and a photograph's detail beyond that is not
  what a 1M-parameter model reads.
* ``num_bins``: 32, or the power of two that gives the smallest tenth of the boxes two bins
  each, at most 128 and (built-in model) at most one bin per pixel.

Both are pure functions of the training split, so every stage process derives the same values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.config_sections import TINY_MODEL
from pipeline.objects import bins_for, smaller_sides
from pipeline.structures import Dataset

if TYPE_CHECKING:
    from pipeline.config import CurriculumConfig
    from pipeline.reporter import Reporter

SIZE_MIN, SIZE_MAX, SIZE_STEP = 32, 128, 8
BINS_MIN, BINS_MAX = 32, 128


def auto_image_size(ds: Dataset) -> tuple[int, str]:
    """The built-in model's input side for these images, and why."""
    train = ds.splits.get("train") or []
    sides = sorted(max(s.width, s.height) for s in train if s.width and s.height)
    if not sides:
        return 64, "no training images to size by; the default"
    native = sides[len(sides) // 2]
    size = min(max(round(native / SIZE_STEP) * SIZE_STEP, SIZE_MIN), SIZE_MAX)
    why = f"the training images' median side is {native} px"
    if size < native - SIZE_STEP / 2:
        why += f"; {SIZE_MAX} px is the most the built-in model reads"
    elif size > native + SIZE_STEP / 2:
        why += f"; {SIZE_MIN} px is the least"
    return size, why


def auto_num_bins(ds: Dataset, image_size: int | None) -> tuple[int, str]:
    """Location bins per axis for these boxes, and why. ``image_size``: the built-in model's
    input side (no more bins than pixels), None for another model."""
    small = smaller_sides(ds.splits.get("train") or [])
    if not small:
        return BINS_MIN, "no boxes to size by; the default"
    p10 = small[len(small) // 10]
    want = bins_for(p10)
    top = min(BINS_MAX, image_size or BINS_MAX)
    n = min(max(BINS_MIN, want), top)
    if want <= BINS_MIN:
        return n, f"the smallest tenth of the boxes ({p10:.1%} of the image or less) already spans two bins of {BINS_MIN}"
    why = f"two bins for the smallest tenth of the boxes ({p10:.1%} of the image or less)"
    if n < want:
        why += f"; {n} is the most" + (f" for {image_size} px images" if image_size and image_size < BINS_MAX else "")
    return n, why


def sized(cfg: CurriculumConfig, ds: Dataset, reporter: Reporter | None = None) -> CurriculumConfig:
    """``cfg`` with ``image_size`` and ``num_bins`` chosen from ``ds`` where they are ``auto``
    (the same object when neither is)."""
    update: dict[str, int] = {}
    if cfg.image_size == "auto":
        update["image_size"], why = auto_image_size(ds)
        if reporter is not None and cfg.model == TINY_MODEL:
            reporter.log(f"image_size: {update['image_size']} ({why})")
    size = update.get("image_size", cfg.image_size)
    if cfg.num_bins == "auto":
        update["num_bins"], why = auto_num_bins(ds, size if cfg.model == TINY_MODEL else None)
        if reporter is not None and cfg.task != "caption":  # captions have no coordinates
            reporter.log(f"num_bins: {update['num_bins']} ({why})")
    return cfg.model_copy(update=update) if update else cfg
