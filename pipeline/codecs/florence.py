"""``florence``: Florence-2's own answer, ``label<loc_x1><loc_y1><loc_x2><loc_y2>…``.

Florence-2's vocabulary holds ``<loc_0>`` … ``<loc_999>``: thousandths of the image, x before y,
each coordinate quantised with ``floor(x / W · 1000)`` and read back at the bin centre
``(b + 0.5) · W / 1000`` (transformers ``models/florence2/processing_florence2.py``,
``Florence2PostProcessor.quantize`` / ``dequantize``, ``quantize_bins = (1000, 1000)``). So every
coordinate round-trips within half a bin. Objects follow each other with no separator; a label
may be followed by several boxes, as the post-processor's ``description_with_bboxes`` parser
reads them. Segmentation answers are the label then the polygon's vertices as ``<loc_x><loc_y>``
pairs (the ``polygons`` parser); the box is the polygon's extent.

The prompts are Florence-2's task tokens, which its processor expands itself
(``task_prompts_without_inputs``: ``<OD>`` → "Locate the objects with category name in the
image."; ``<CAPTION>``). Florence-2 has no keypoint output.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.codec import _EPS, EMPTY, Codec, Target, _int_or_zero, _size, box_polygon
from pipeline.codecs.common import known_label, polygon_points
from pipeline.structures import empty_target

BINS = 1000
_TOKEN = re.compile(r"<loc_(\d+)>")


def fl_loc(b: int) -> str:
    return f"<loc_{b}>"


def fl_bin(v: float, size: float) -> int:
    return min(max(math.floor(float(v) / size * BINS + _EPS), 0), BINS - 1)


def fl_coord(b: int, size: float) -> float:
    return (b + 0.5) * size / BINS


class FlorenceCodec(Codec):
    """>>> c = FlorenceCodec("detect", ["cat"])
    >>> c.encode({"boxes": [[0, 0, 32, 16]], "labels": ["cat"], "image": {"width": 64, "height": 64}})
    'cat<loc_0><loc_0><loc_500><loc_250>'
    """

    format = "florence"

    def __init__(self, task: str, categories: list[str], **kw: Any) -> None:
        if task == "keypoints":
            raise ValueError("codec florence: Florence-2 has no keypoint output; use codec 'loc' or 'text' "
                             "(a keypoints task cannot be read in Florence-2's own format)")  # fmt: skip
        kw["num_bins"] = BINS
        super().__init__(task, categories, **kw)

    def location_tokens(self) -> list[str]:
        return [fl_loc(b) for b in range(BINS)]

    def special_tokens(self) -> list[str]:
        return [] if self.task == "caption" else self.location_tokens()

    def prompt(self) -> str:
        if self.task == "segment":  # the task that answers labels with polygons
            return "<OPEN_VOCABULARY_DETECTION>" + ", ".join(self.categories)
        return {"caption": "<CAPTION>", "detect": "<OD>"}[self.task]

    def encode(self, target: Target) -> str:
        if self.task == "caption":
            return super().encode(target)
        w, h = _size(target)
        parts = []
        for i in self.order(target):
            label = str(target["labels"][i]).strip()
            if self.task == "segment":
                masks = target.get("masks") or []
                pts = polygon_points(masks[i] if i < len(masks) else [], self.max_vertices)
                if len(pts) < 3:
                    pts = list(zip(box_polygon(target["boxes"][i])[0::2], box_polygon(target["boxes"][i])[1::2], strict=True))
                parts.append(label + "".join(fl_loc(fl_bin(x, w)) + fl_loc(fl_bin(y, h)) for x, y in pts))
                continue
            x1, y1, x2, y2 = target["boxes"][i]
            parts.append(label + fl_loc(fl_bin(x1, w)) + fl_loc(fl_bin(y1, h)) + fl_loc(fl_bin(x2, w)) + fl_loc(fl_bin(y2, h)))
        return "".join(parts) if parts else EMPTY

    def decode(self, text: str, width: int, height: int) -> tuple[Target, bool]:
        if self.task == "caption":
            return super().decode(text, width, height)
        out = empty_target(_int_or_zero(width), _int_or_zero(height))
        w, h = out["image"]["width"], out["image"]["height"]
        if not isinstance(text, str) or not w or not h:
            return out, False
        s = text.replace("</s>", "").replace("<s>", "").strip()
        if s.lower() == EMPTY:
            return out, True
        pieces = _TOKEN.split(s)  # label, bin, text, bin, …
        clean = not pieces[-1].strip()
        label, bins, groups = pieces[0].strip(), [], []
        for j in range(1, len(pieces), 2):
            bins.append(int(pieces[j]))
            nxt = pieces[j + 1].strip()
            if nxt or j + 2 >= len(pieces):
                groups.append((label, bins))
                label, bins = nxt, []
        if not groups:
            return out, False
        for label, bins in groups:
            clean &= self._add(out, label, bins, w, h)
            if len(out["boxes"]) > self.max_objects:
                for k in ("boxes", "labels", "masks"):
                    del out[k][self.max_objects :]
                return out, False
        return out, clean

    def _add(self, out: Target, label: str, bins: list[int], w: int, h: int) -> bool:
        if not label or any(b >= BINS for b in bins):
            return False
        name, ok = known_label(self, label)
        if self.task == "segment":
            if len(bins) < 6 or len(bins) % 2:
                return False
            xs, ys = [fl_coord(b, w) for b in bins[0::2]], [fl_coord(b, h) for b in bins[1::2]]
            out["boxes"].append([min(xs), min(ys), max(xs), max(ys)])
            out["labels"].append(name)
            out["masks"].append([c for xy in zip(xs, ys, strict=True) for c in xy])
            return ok
        if not bins or len(bins) % 4:
            return False
        for k in range(0, len(bins), 4):  # one label may own several boxes
            x1, y1, x2, y2 = bins[k : k + 4]
            if x2 < x1 or y2 < y1:
                ok = False
                continue
            out["boxes"].append([fl_coord(x1, w), fl_coord(y1, h), fl_coord(x2, w), fl_coord(y2, h)])
            out["labels"].append(name)
        return ok
