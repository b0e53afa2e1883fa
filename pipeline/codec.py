"""Canonical targets ⇄ the text the model emits: the ``loc`` output format, and the
:class:`Codec` interface every format implements (the others: ``pipeline.codecs``).

Coordinates become quantised location tokens ``<loc_0>`` … ``<loc_{N-1}>`` (``N = num_bins``),
normalised by the ORIGINAL image width and height, so the text does not depend on how the
processor resizes or pads the image. Every conversion between pixels and text goes through
this module.

Grammar (``;`` separates objects, no spaces are emitted; ``L`` is one location token)::

    detect     answer := "none" | object (";" object)*
               object := label Lx1 Ly1 Lx2 Ly2
    segment    object := label Lx1 Ly1 Lx2 Ly2 (Lx Ly){V}      V = 0 or 3..max_vertices
    keypoints  object := label Lx1 Ly1 Lx2 Ly2 kp{K}           K = len(keypoint_names)
               kp     := Lx Ly | "<kp_absent>"
    caption    answer := the caption, lower-cased, whitespace collapsed

e.g. ``cola<loc_2><loc_3><loc_9><loc_12>;soap<loc_20><loc_3><loc_30><loc_8>``. Objects are
in reading order (top edge, then left edge, in bins); at most ``max_objects`` are encoded or
decoded (the decoding cap). A label is a category name; it may hold spaces but not ``;``
or ``<``.

Quantisation (pixels ⇄ bins) is in ``pipeline.bins``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.bins import (  # noqa: F401 — the quantisation every codec uses, importable from here too
    _EPS,
    _clip,
    box_polygon,
    dequantize_box,
    dequantize_point,
    dequantize_vertex,
    loc,
    quantize_box,
    quantize_point,
    quantize_vertex,
    simplify_polygon,
)
from pipeline.structures import TASKS, empty_target

# Written beside every exported model: how to prompt it and read its answers.
CODEC_FILE = "dreamforge_codec.json"

SEPARATOR = ";"
EMPTY = "none"
ABSENT = "<kp_absent>"
_TOKEN_SPLIT = re.compile(r"(<loc_[0-9]+>|<kp_absent>)")

Target = dict[str, Any]


class Codec:
    """Encodes canonical targets to model text and decodes model text back, for one task.

    >>> c = Codec("detect", ["cola", "soap"], num_bins=32)
    >>> t = {"boxes": [[0, 0, 16, 8]], "labels": ["cola"], "image": {"width": 64, "height": 64}}
    >>> c.encode(t)
    'cola<loc_0><loc_0><loc_7><loc_3>'
    >>> out, ok = c.decode("cola<loc_0><loc_0><loc_7><loc_3>", 64, 64)
    >>> out["boxes"], out["labels"], ok
    ([[0.0, 0.0, 16.0, 8.0]], ['cola'], True)
    """

    # The output format's name (``pipeline.codecs.FORMATS``); subclasses speak other formats.
    format = "loc"

    def __init__(
        self,
        task: str,
        categories: list[str],
        num_bins: int = 32,
        max_objects: int = 8,
        keypoint_names: list[str] | None = None,
        max_vertices: int = 8,
        caption_tokens: int = 48,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"Codec: unknown task {task!r}; use one of {', '.join(TASKS)}")
        if num_bins < 2:
            raise ValueError(f"Codec: num_bins={num_bins}; use at least 2 (32 for tiny models)")
        if max_objects < 1:
            raise ValueError(f"Codec: max_objects={max_objects}; use at least 1")
        if max_vertices < 3:
            raise ValueError(f"Codec: max_vertices={max_vertices}; a polygon needs at least 3")
        if task == "keypoints" and not keypoint_names:
            raise ValueError(
                "Codec('keypoints') needs keypoint_names (the dataset's COCO "
                "categories[].keypoints) to know how many keypoints each object has"
            )
        for name in categories:
            _check_label(name, "category")
        self.task = task
        self.categories = list(categories)
        self.num_bins = int(num_bins)
        self.max_objects = int(max_objects)
        self.keypoint_names = list(keypoint_names or [])
        self.max_vertices = int(max_vertices)
        self.caption_tokens = int(caption_tokens)
        self._by_lower = {c.lower(): c for c in self.categories}

    def spec(self) -> dict[str, Any]:
        """What ``pipeline.codecs.codec_from_spec`` needs to rebuild this codec (``CODEC_FILE``)."""
        return {"format": self.format, "task": self.task, "categories": list(self.categories),
                "num_bins": self.num_bins, "max_objects": self.max_objects,
                "keypoint_names": list(self.keypoint_names)}  # fmt: skip

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the processor resizes a ``width``×``height`` image to, where the format's
        coordinates depend on it; normalised formats do not, and give the size back."""
        return int(width), int(height)

    # -- vocabulary and prompt -----------------------------------------------------------

    def location_tokens(self) -> list[str]:
        """``<loc_0>`` … ``<loc_{N-1}>``."""
        return [loc(b) for b in range(self.num_bins)]

    def special_tokens(self) -> list[str]:
        """Every token the tokenizer must add for this task (none for captions).

        Add them as ordinary added tokens (``tokenizer.add_tokens(tokens)``), not as special
        tokens: ``decode(..., skip_special_tokens=True)`` would delete special ones from the
        completions the rewards parse.
        """
        if self.task == "caption":
            return []
        extra = [ABSENT] if self.task == "keypoints" else []
        return self.location_tokens() + extra

    def prompt(self) -> str:
        """The short instruction for the task (the tiny model pays for every token)."""
        names = ", ".join(self.categories)
        if self.task == "caption":
            return "Caption the image."
        verb = {"detect": "Detect all objects", "segment": "Segment all objects",
                "keypoints": "Find keypoints of all objects"}[self.task]  # fmt: skip
        return f"{verb}: {names}." if names else f"{verb}."

    def locs_per_object(self) -> int:
        """Location tokens of one object at most."""
        if self.task == "segment":
            return 4 + 2 * self.max_vertices
        if self.task == "keypoints":
            return 4 + 2 * len(self.keypoint_names)
        return 4

    def max_new_tokens(self, label_tokens: int = 4) -> int:
        """An upper bound on the tokens of a valid answer, for ``generate(max_new_tokens=…)``.

        Each location token is one token; a label may take ``label_tokens`` BPE tokens; each
        object also pays a separator and one token of slack; +2 for ``none`` / end of text.
        """
        if self.task == "caption":
            return self.caption_tokens
        return self.max_objects * (label_tokens + 2 + self.locs_per_object()) + 2

    # -- encode --------------------------------------------------------------------------

    def order(self, target: Target) -> list[int]:
        """Indices of the instances in encoding order: reading order by quantised top edge,
        then left edge (then bottom, right, label, index), capped at ``max_objects``."""
        w, h = _size(target)
        n = self.num_bins
        keys = []
        for i, (box, label) in enumerate(zip(target["boxes"], target["labels"], strict=True)):
            bx1, by1, bx2, by2 = quantize_box(box, w, h, n)
            keys.append((by1, bx1, by2, bx2, str(label), i))
        return [k[-1] for k in sorted(keys)][: self.max_objects]

    def encode(self, target: Target) -> str:
        """The text the model should emit for ``target`` (see the module grammar).

        Instances beyond ``max_objects`` (in reading order) are dropped, as the decoder would
        drop them; choose ``max_objects`` from the data.
        """
        if self.task == "caption":
            return " ".join(str(target.get("text", "")).split()).lower()
        w, h = _size(target)
        if len(target["boxes"]) != len(target["labels"]):
            raise ValueError(
                f"encode: {len(target['boxes'])} boxes but {len(target['labels'])} labels; "
                "a Target has one label per box"
            )
        n = self.num_bins
        items = []
        for i in self.order(target):
            label = str(target["labels"][i]).strip()
            _check_label(label, f"label of instance {i}")
            bins = quantize_box(target["boxes"][i], w, h, n)
            text = label + "".join(loc(b) for b in bins)
            if self.task == "segment":
                masks = target.get("masks") or []
                text += self._encode_polygon(masks[i] if i < len(masks) else [], w, h)
            elif self.task == "keypoints":
                kps = target.get("keypoints") or []
                text += self._encode_keypoints(kps[i] if i < len(kps) else [], w, h, i)
            items.append(text)
        return SEPARATOR.join(items) if items else EMPTY

    def _encode_polygon(self, poly: Sequence[float], w: int, h: int) -> str:
        n = self.num_bins
        coords = list(poly)[: len(poly) // 2 * 2]
        bins: list[tuple[int, int]] = []
        for x, y in zip(coords[0::2], coords[1::2], strict=True):
            b = quantize_vertex(x, y, w, h, n)
            if not bins or bins[-1] != b:
                bins.append(b)
        while len(bins) > 1 and bins[-1] == bins[0]:  # closed rings repeat the first vertex
            bins.pop()
        if len(set(bins)) < 3:
            return ""  # V = 0: too small to draw at this resolution; decodes as the box
        if len(bins) > self.max_vertices:
            # Simplify in pixel space so the triangle areas respect the aspect ratio.
            px = np.array([dequantize_vertex(bx, by, w, h, n) for bx, by in bins])
            kept = simplify_polygon(px, self.max_vertices)
            bins = [quantize_vertex(x, y, w, h, n) for x, y in kept]
        return "".join(loc(bx) + loc(by) for bx, by in bins)

    def _encode_keypoints(self, kps: Sequence[Sequence[float]], w: int, h: int, i: int) -> str:
        k = len(self.keypoint_names)
        if kps and len(kps) != k:
            raise ValueError(
                f"encode: instance {i} has {len(kps)} keypoints, the codec expects {k} "
                f"({', '.join(self.keypoint_names)})"
            )
        out = []
        for j in range(k):
            kp = kps[j] if kps else [0, 0, 0]
            if len(kp) >= 3 and kp[2] > 0:
                bx, by = quantize_point(kp[0], kp[1], w, h, self.num_bins)
                out.append(loc(bx) + loc(by))
            else:
                out.append(ABSENT)
        return "".join(out)

    # -- decode --------------------------------------------------------------------------

    def decode(self, text: str, width: int, height: int) -> tuple[Target, bool]:
        """Parse model text into a canonical target; never raises.

        Returns ``(target, parsed)``: ``parsed`` is True only if the whole text follows the
        grammar, every label is a known category (matched case-insensitively) and at most
        ``max_objects`` objects were emitted. Malformed objects are skipped; unknown labels
        are kept as written (the metrics count them wrong); objects past the cap are dropped.
        """
        out = empty_target(_int_or_zero(width), _int_or_zero(height))
        if not isinstance(text, str):
            return out, False
        w, h = out["image"]["width"], out["image"]["height"]
        s = text.strip()
        if self.task == "caption":
            caption = " ".join(s.split()).lower()
            out["text"] = caption
            return out, bool(caption) and _TOKEN_SPLIT.search(caption) is None
        if s.lower() == EMPTY:
            return out, True
        items, clean = _split_items(s)
        if not items:
            return out, False
        n = self.num_bins
        kept = 0
        for label, toks in items:
            parsed = self._parse_object(toks)
            if parsed is None or not label:
                clean = False
                continue
            if kept == self.max_objects:
                clean = False  # the decoding cap
                break
            bins, extra, ok = parsed
            clean &= ok
            known = self._by_lower.get(label.lower())
            if self.categories and known is None:
                clean = False
            box = dequantize_box(bins, w, h, n)
            out["boxes"].append(box)
            out["labels"].append(known or label)
            if self.task == "segment":
                if extra:
                    out["masks"].append(
                        [c for bx, by in extra for c in dequantize_vertex(bx, by, w, h, n)]
                    )
                else:
                    out["masks"].append(box_polygon(box))
            elif self.task == "keypoints":
                kps = []
                for kp in extra:
                    if kp is None:
                        kps.append([0.0, 0.0, 0])
                    else:
                        x, y = dequantize_point(kp[0], kp[1], w, h, n)
                        kps.append([x, y, 2])
                        out["points"].append([x, y])
                out["keypoints"].append(kps)
            kept += 1
        return out, clean

    def _parse_object(self, toks: list[int | None]) -> tuple[tuple[int, ...], list, bool] | None:
        """``(box bins, extra, clean)`` of one object's tokens (``None`` = ``<kp_absent>``),
        or None if the object is garbage."""
        n = self.num_bins
        if len(toks) < 4 or any(t is None or t >= n for t in toks[:4]):
            return None
        bx1, by1, bx2, by2 = toks[:4]  # type: ignore[misc]
        if bx2 < bx1 or by2 < by1:
            return None
        bins = (bx1, by1, bx2, by2)
        rest = toks[4:]
        if self.task == "detect":
            return (bins, [], True) if not rest else None
        if any(t is not None and t >= n for t in rest):
            return None
        if self.task == "segment":
            if None in rest or len(rest) % 2:
                return None
            verts = list(zip(rest[0::2], rest[1::2], strict=True))
            ok = len(verts) == 0 or 3 <= len(verts) <= self.max_vertices
            return bins, (verts if len(verts) >= 3 else []), ok
        # keypoints: a run of (Lx Ly) pairs and <kp_absent>; pad or cut to K (not clean).
        kps: list[tuple[int, int] | None] = []
        i = 0
        while i < len(rest):
            if rest[i] is None:
                kps.append(None)
                i += 1
            elif i + 1 < len(rest) and rest[i + 1] is not None:
                kps.append((rest[i], rest[i + 1]))  # type: ignore[arg-type]
                i += 2
            else:
                return None
        k = len(self.keypoint_names)
        ok = len(kps) == k
        kps = (kps + [None] * k)[:k]
        return bins, kps, ok


def _split_items(s: str) -> tuple[list[tuple[str, list[int | None]]], bool]:
    """Split text into ``(label, tokens)`` objects; tokens are bins or None for <kp_absent>.
    The flag is False when separators are missing, doubled or stray."""
    pieces = _TOKEN_SPLIT.split(s)  # text, token, text, token, ..., text
    items: list[tuple[str, list[int | None]]] = []
    clean = True
    label: str | None = None
    toks: list[int | None] = []
    opened = False  # a separator or label after tokens opened an object
    for i, piece in enumerate(pieces):
        if i % 2:
            toks.append(None if piece == ABSENT else int(piece[5:-1]))
            continue
        chunk = piece.strip()
        if i == 0:
            parts = chunk.split(SEPARATOR)
            clean &= len(parts) == 1
            label = parts[-1].strip()
            continue
        if not chunk:
            continue  # whitespace between tokens (some tokenizers decode with spaces)
        items.append((label or "", toks))
        toks, opened = [], True
        parts = chunk.split(SEPARATOR)
        clean &= len(parts) == 2 and not parts[0].strip()
        label = parts[-1].strip()
    if toks or label or opened:
        items.append((label or "", toks))
    return items, clean


def _check_label(label: str, what: str) -> None:
    if not label or label != label.strip() or SEPARATOR in label or "<" in label:
        raise ValueError(
            f"{what} {label!r} cannot be written in the codec's text: it must be non-empty, "
            f"without surrounding spaces, and contain no {SEPARATOR!r} or '<'"
        )


def _size(target: Target) -> tuple[int, int]:
    img = target.get("image") or {}
    w, h = img.get("width", 0), img.get("height", 0)
    if not (w and h and w > 0 and h > 0):
        raise ValueError(f"encode: target image size {w}×{h}; need a positive width and height")
    return w, h


def _int_or_zero(v: Any) -> int:
    try:
        return max(int(v), 0)
    except (TypeError, ValueError, OverflowError):
        return 0
