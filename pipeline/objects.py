"""Objects per image and their sizes against the codec's limits, without the training stack:
``pipeline.job`` (the run) and ``pipeline.preflight`` (before one) read the same numbers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pipeline.structures import Dataset, Sample

if TYPE_CHECKING:
    from pipeline.reporter import Reporter


def object_count(sample: Sample) -> int:
    """How many objects an image holds, whatever its labels say it with: stage 3 asks the model
    for every object of clicked and counted images too."""
    t = sample.target
    if sample.label_kind == "points":
        return len(t.get("points") or [])
    if sample.label_kind == "counts":
        return sum(int(v) for v in (t.get("counts") or {}).values())
    return len(t.get("boxes") or t.get("keypoints") or [])


def smaller_sides(samples: list[Sample]) -> list[float]:
    """Each box's smaller side as a fraction of its image's (width for width, height for
    height), sorted: what the size log and the learning verdict read medians and tails from."""
    return sorted(min((b[2] - b[0]) / s.width, (b[3] - b[1]) / s.height)
                  for s in samples if s.label_kind == "full" for b in s.target.get("boxes") or [])  # fmt: skip


def auto_max_objects(ds: Dataset, reporter: Reporter | None = None) -> int:
    """The decoding cap from the data: the most objects in one training image, within bounds."""
    from pipeline.config import AUTO_MAX_OBJECTS

    counts = [object_count(s) for s in ds.splits.get("train") or []]
    most = max(counts, default=1)
    chosen = max(1, min(most, AUTO_MAX_OBJECTS))
    if reporter is not None:
        over = sum(c > chosen for c in counts)
        reporter.log(f"data.max_objects: {chosen}, the most objects in one training image of {ds.name}"
                     + (f" (capped; {over} images hold more, up to {most}: set data.max_objects to answer them all)"
                        if over else ""), level="warning" if over else "info")  # fmt: skip
    return chosen


def bins_for(side: float) -> int:
    """The num_bins (a power of two, at most 4096) that gives an object whose smaller side is
    ``side`` of the image two bins."""
    return min(4096, 2 ** math.ceil(math.log2(2 / max(side, 1e-6))))
