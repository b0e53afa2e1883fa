"""``paligemma``: PaliGemma's detection answer, ``<locY1><locX1><locY2><locX2> label ; …``.

PaliGemma's tokenizer holds ``<loc0000>`` … ``<loc1023>`` (transformers
``models/paligemma/processing_paligemma.py: EXTRA_TOKENS``): coordinates normalised to 1024
bins, y before x, the four tokens then a space and the label, objects joined by ``" ; "``. The
prompt is ``detect a ; b`` (big_vision ``configs/proj/paligemma/README.md``; model card
"detect [object]"). Google's decoding reads a token as ``b / 1024`` of the side
(big_vision ``paligemma`` demo ``extract_objs``), so encoding rounds to the nearest
``1/1024``: every coordinate round-trips within half a bin, except one on the far border,
which is clipped to ``<loc1023>`` (one bin, 0.1 % of the side).

The ``<seg000>`` … ``<seg127>`` tokens are a VQ-VAE's codebook: decoding them needs that VAE,
so segmentation and keypoints are refused here (use ``loc`` or ``text``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.codec import _EPS, EMPTY, Codec, Target, _int_or_zero, _size
from pipeline.codecs.common import known_label
from pipeline.structures import empty_target

BINS = 1024
SEP = " ; "
_OBJ = re.compile(r"^((?:<loc\d{4}>){4})\s*([^;<]*)$")


def pg_loc(b: int) -> str:
    return f"<loc{b:04d}>"


def pg_bin(v: float, size: float) -> int:
    return min(max(math.floor(float(v) / size * BINS + 0.5 + _EPS), 0), BINS - 1)


class PaliGemmaCodec(Codec):
    """>>> c = PaliGemmaCodec("detect", ["cat", "dog"])
    >>> c.prompt()
    'detect cat ; dog'
    >>> c.encode({"boxes": [[0, 0, 32, 16]], "labels": ["cat"], "image": {"width": 64, "height": 64}})
    '<loc0000><loc0000><loc0256><loc0512> cat'
    """

    format = "paligemma"

    def __init__(self, task: str, categories: list[str], **kw: Any) -> None:
        if task in ("segment", "keypoints"):
            raise ValueError(f"codec paligemma: a {task} task cannot be read in PaliGemma's format here (its "
                             "<seg> tokens need PaliGemma's VQ-VAE to decode; it has no keypoints); use codec "
                             "'loc' or 'text'")  # fmt: skip
        kw["num_bins"] = BINS
        super().__init__(task, categories, **kw)

    def location_tokens(self) -> list[str]:
        return [pg_loc(b) for b in range(BINS)]

    def special_tokens(self) -> list[str]:
        return [] if self.task == "caption" else self.location_tokens()

    def prompt(self) -> str:
        # The mix checkpoints' task prefixes ("caption en", "detect a ; b").
        return "caption en" if self.task == "caption" else "detect " + SEP.join(self.categories)

    def encode(self, target: Target) -> str:
        if self.task == "caption":
            return super().encode(target)
        w, h = _size(target)
        items = []
        for i in self.order(target):
            x1, y1, x2, y2 = target["boxes"][i]
            locs = pg_loc(pg_bin(y1, h)) + pg_loc(pg_bin(x1, w)) + pg_loc(pg_bin(y2, h)) + pg_loc(pg_bin(x2, w))
            items.append(f"{locs} {str(target['labels'][i]).strip()}")
        return SEP.join(items) if items else EMPTY

    def decode(self, text: str, width: int, height: int) -> tuple[Target, bool]:
        if self.task == "caption":
            return super().decode(text, width, height)
        out = empty_target(_int_or_zero(width), _int_or_zero(height))
        w, h = out["image"]["width"], out["image"]["height"]
        if not isinstance(text, str) or not w or not h:
            return out, False
        s = text.strip()
        if s.lower() == EMPTY:
            return out, True
        clean = True
        for piece in s.split(";"):
            m = _OBJ.match(piece.strip())
            if not m or not m.group(2).strip():
                clean = False
                continue
            y1, x1, y2, x2 = (int(v) for v in re.findall(r"\d{4}", m.group(1)))
            if max(y1, x1, y2, x2) >= BINS or x2 < x1 or y2 < y1:
                clean = False
                continue
            if len(out["boxes"]) == self.max_objects:
                return out, False
            name, ok = known_label(self, m.group(2))
            clean &= ok
            out["boxes"].append([x1 * w / BINS, y1 * h / BINS, x2 * w / BINS, y2 * h / BINS])
            out["labels"].append(name)
        return out, clean and bool(out["boxes"])
