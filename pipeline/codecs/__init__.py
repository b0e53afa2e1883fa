"""One codec per output format, all behind :class:`pipeline.codec.Codec`'s interface, so the
rewards, the evaluator, ``predict`` and the dashboard read every format alike.

=============  =====================================================  ==========================
format         answer                                                 for
=============  =====================================================  ==========================
``loc``        ``cola<loc_2><loc_3><loc_9><loc_12>;…`` (num_bins)      DreamForge's own model,
                                                                      models with no grounding
``qwen-json``  ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cola"}]``   Qwen2-VL, 2.5-VL, 3-VL
``florence``   ``cola<loc_52><loc_120><loc_300><loc_410>`` (1000)     Florence-2
``paligemma``  ``<loc0123><loc0045><loc0678><loc0456> cola ; …``     PaliGemma (1, 2)
``text``       ``cola [2,3,9,12]; soap [20,3,30,8]`` (num_bins)       any model, no new tokens
=============  =====================================================  ==========================

``codec: "auto"`` (:func:`pipeline.codecs.auto.choose_format`) picks one from the model.
"""

from __future__ import annotations

from typing import Any

from pipeline.codec import Codec
from pipeline.codecs.florence import FlorenceCodec
from pipeline.codecs.paligemma import PaliGemmaCodec
from pipeline.codecs.qwen_json import QwenJsonCodec
from pipeline.codecs.text import TextCodec

FORMATS: dict[str, type[Codec]] = {
    "loc": Codec,
    "qwen-json": QwenJsonCodec,
    "florence": FlorenceCodec,
    "paligemma": PaliGemmaCodec,
    "text": TextCodec,
}
FORMAT_NAMES = tuple(FORMATS)


def make_format_codec(fmt: str, task: str, categories: list[str], **kw: Any) -> Codec:
    """The codec of output format ``fmt``; ``kw`` are :class:`Codec`'s keyword arguments plus
    the format's own (``qwen-json``: ``coords``, ``factor``, ``min_pixels``, ``max_pixels``)."""
    if fmt not in FORMATS:
        raise ValueError(f"codec {fmt!r}: unknown output format; use one of auto, {', '.join(FORMATS)}")
    return FORMATS[fmt](task, categories, **kw)


def codec_from_spec(spec: dict[str, Any]) -> Codec:
    """The codec a ``CODEC_FILE`` describes (:meth:`Codec.spec`); files written before formats
    existed hold no ``format`` and are ``loc``."""
    kw = {k: v for k, v in spec.items() if k not in ("format", "task", "categories")}
    kw["keypoint_names"] = kw.get("keypoint_names") or None
    return make_format_codec(spec.get("format", "loc"), spec["task"], spec["categories"], **kw)
