"""``text``: today's grammar with plain integers instead of location tokens.

For families with no grounding vocabulary (Llava, Idefics3/SmolVLM) this is the alternative
to adding ``<loc_N>`` rows: nothing is added to the vocabulary, and the model writes numbers
it already knows. Each object is its label and its bins as one bracketed list, objects joined
by ``"; "``; an absent keypoint is ``-``::

    cola [2,3,9,12]; soap [20,3,30,8]

The bins and their quantisation are exactly ``loc``'s (``pipeline.codec``, ``num_bins`` per
axis, normalised by the original image), so a coordinate round-trips within half a bin.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.codec import ABSENT, EMPTY, SEPARATOR, Codec, Target, loc

_RUN = re.compile(r"(?:<loc_\d+>|<kp_absent>)+")
_LIST = re.compile(r"\s*\[([^\]]*)\]")
_BAD = "<loc_99999999>"  # decodes as a garbage object: the loc parser drops and flags it


class TextCodec(Codec):
    """>>> c = TextCodec("detect", ["cola"], num_bins=32)
    >>> c.encode({"boxes": [[0, 0, 16, 8]], "labels": ["cola"], "image": {"width": 64, "height": 64}})
    'cola [0,0,7,3]'
    >>> c.decode("cola [0,0,7,3]", 64, 64)[0]["boxes"]
    [[0.0, 0.0, 16.0, 8.0]]
    """

    format = "text"

    def __init__(self, task: str, categories: list[str], **kw: Any) -> None:
        for name in categories:
            if "[" in name or "]" in name:
                raise ValueError(f"category {name!r} cannot be written in the text codec: it holds a bracket")
        super().__init__(task, categories, **kw)

    def location_tokens(self) -> list[str]:
        return []

    def special_tokens(self) -> list[str]:
        return []

    def max_new_tokens(self, label_tokens: int = 4) -> int:
        if self.task == "caption":
            return self.caption_tokens
        # a number and its comma may take 2-3 BPE tokens where <loc_N> took one
        return self.max_objects * (label_tokens + 4 + 3 * self.locs_per_object()) + 2

    def encode(self, target: Target) -> str:
        s = super().encode(target)
        if self.task == "caption" or s == EMPTY:
            return s
        s = _RUN.sub(lambda m: " [" + ",".join(_numbers(m.group(0))) + "]", s)
        return s.replace(SEPARATOR, SEPARATOR + " ")

    def decode(self, text: str, width: int, height: int) -> tuple[Target, bool]:
        if self.task == "caption" or not isinstance(text, str):
            return super().decode(text, width, height)
        if "<loc_" in text or ABSENT in text:
            return super().decode("", width, height)[0], False  # not this format's answer
        return super().decode(_LIST.sub(lambda m: _tokens(m.group(1)), text), width, height)


def _numbers(run: str) -> list[str]:
    return ["-" if t == ABSENT else t[5:-1] for t in re.findall(r"<loc_\d+>|<kp_absent>", run)]


def _tokens(body: str) -> str:
    out = []
    for item in body.split(","):
        item = item.strip()
        out.append(ABSENT if item == "-" else loc(int(item)) if item.isdigit() else _BAD)
    return "".join(out)
