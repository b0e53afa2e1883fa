"""``qwen-json``: the Qwen-VL grounding answer, a JSON list of objects.

Qwen2.5-VL answers ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]`` in ABSOLUTE pixels of
the image its processor fed the model, i.e. after ``smart_resize`` (sides rounded to multiples
of ``patch_size * merge_size`` and total pixels clamped to ``[min_pixels, max_pixels]``;
transformers ``models/qwen2_vl/image_processing_pil_qwen2_vl.py: smart_resize``). The Qwen
cookbook (QwenLM/Qwen2.5-VL ``cookbooks/spatial_understanding.ipynb``) converts back with
``x / input_width * width``, reading ``input_width`` from ``image_grid_thw * patch_size``.

Qwen3-VL (and Qwen2-VL's grounding, whose pretraining wrote ``<|box_start|>(x1,y1),(x2,y2)
<|box_end|>``) use coordinates normalised to ``0…1000`` of the image instead (QwenLM/Qwen3-VL
cookbooks, "relative coordinates"): ``coords="norm1000"``.

The answer is fenced as the models write it (```` ```json … ``` ````). Segmentation adds a
``"polygon": [[x, y], …]`` key and keypoints a ``"keypoints": [[x, y] | null, …]`` key (in
``keypoint_names`` order), in the same coordinates: JSON keys, not new tokens.

Quantisation is to integers on that scale (one resized pixel, or one thousandth), so every
coordinate round-trips within half a unit: ``x → round(x · s)``, decoded ``x' / s`` where
``s = input_width / width`` (pixels) or ``1000 / width`` (norm1000).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pipeline.codec import EMPTY, Codec, Target, _int_or_zero, box_polygon
from pipeline.codecs.common import known_label, polygon_points, scale_round
from pipeline.structures import empty_target

COORDS = ("pixels", "norm1000")
# Qwen2.5-VL's shipped preprocessor_config.json: patch 14, merge 2, 3136 … 12845056 pixels.
QWEN25_RESIZE = {"factor": 28, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


class QwenJsonCodec(Codec):
    """>>> c = QwenJsonCodec("detect", ["cat"], coords="norm1000")
    >>> c.encode({"boxes": [[0, 0, 32, 16]], "labels": ["cat"], "image": {"width": 64, "height": 64}})
    '```json\\n[{"bbox_2d": [0, 0, 500, 250], "label": "cat"}]\\n```'
    """

    format = "qwen-json"

    def __init__(self, task: str, categories: list[str], *, coords: str = "pixels", factor: int = 28,
                 min_pixels: int = QWEN25_RESIZE["min_pixels"], max_pixels: int = QWEN25_RESIZE["max_pixels"],
                 **kw: Any) -> None:  # fmt: skip
        if coords not in COORDS:
            raise ValueError(f"qwen-json: coords {coords!r}; use one of {', '.join(COORDS)}")
        kw["num_bins"] = 1000  # only orders the objects; the coordinates are integers on `coords`' scale
        super().__init__(task, categories, **kw)
        self.coords, self.factor, self.min_pixels, self.max_pixels = coords, int(factor), int(min_pixels), int(max_pixels)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "coords": self.coords, "factor": self.factor, "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels}  # fmt: skip

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        if self.coords != "pixels":
            return int(width), int(height)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(int(height), int(width), factor=self.factor, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)  # fmt: skip
        return int(w), int(h)

    def _units(self, width: int, height: int) -> tuple[int, int]:
        return self.input_size(width, height) if self.coords == "pixels" else (1000, 1000)

    def location_tokens(self) -> list[str]:
        return []

    def special_tokens(self) -> list[str]:
        return []

    def prompt(self) -> str:
        # The cookbook's multi-category grounding prompt (spatial_understanding.ipynb).
        if self.task == "caption":
            return "Describe this image in one sentence."
        names = ", ".join(self.categories)
        what = {"detect": "bbox coordinates", "segment": "bbox coordinates and a polygon outline",
                "keypoints": f"bbox coordinates and keypoints ({', '.join(self.keypoint_names)})"}[self.task]  # fmt: skip
        return f'Locate every instance that belongs to the following categories: "{names}". Report {what} in JSON format.'

    def max_new_tokens(self, label_tokens: int = 4) -> int:
        if self.task == "caption":
            return self.caption_tokens
        # per number ≤ 3 digits + ", "; the keys, braces and quotes ~ 16 tokens
        numbers = {"detect": 4, "segment": 4 + 2 * self.max_vertices, "keypoints": 4 + 2 * len(self.keypoint_names)}[self.task]
        return self.max_objects * (label_tokens + 16 + 4 * numbers) + 8

    # -- encode --------------------------------------------------------------------------

    def encode(self, target: Target) -> str:
        if self.task == "caption":
            return super().encode(target)
        w, h = _target_size(target)
        uw, uh = self._units(w, h)
        items = []
        for i in self.order(target):
            x1, y1, x2, y2 = (float(v) for v in target["boxes"][i])
            box = [scale_round(x1, w, uw), scale_round(y1, h, uh), scale_round(x2, w, uw), scale_round(y2, h, uh)]
            box[2], box[3] = max(box[2], min(box[0] + 1, uw)), max(box[3], min(box[1] + 1, uh))
            item: dict[str, Any] = {"bbox_2d": box, "label": str(target["labels"][i]).strip()}
            if self.task == "segment":
                masks = target.get("masks") or []
                pts = polygon_points(masks[i] if i < len(masks) else [], self.max_vertices)
                if len(pts) >= 3:
                    item["polygon"] = [[scale_round(x, w, uw), scale_round(y, h, uh)] for x, y in pts]
            elif self.task == "keypoints":
                kps = target.get("keypoints") or []
                kp_i = kps[i] if i < len(kps) else []
                if kp_i and len(kp_i) != len(self.keypoint_names):
                    raise ValueError(f"encode: instance {i} has {len(kp_i)} keypoints, the codec expects "
                                     f"{len(self.keypoint_names)} ({', '.join(self.keypoint_names)})")  # fmt: skip
                item["keypoints"] = [
                    [scale_round(kp[0], w, uw), scale_round(kp[1], h, uh)] if len(kp) >= 3 and kp[2] > 0 else None
                    for kp in (kp_i or [[0, 0, 0]] * len(self.keypoint_names))
                ]
            items.append(item)
        return "```json\n" + json.dumps(items) + "\n```"

    # -- decode --------------------------------------------------------------------------

    def decode(self, text: str, width: int, height: int) -> tuple[Target, bool]:
        out = empty_target(_int_or_zero(width), _int_or_zero(height))
        if self.task == "caption":
            return super().decode(text, width, height)
        if not isinstance(text, str) or not out["image"]["width"] or not out["image"]["height"]:
            return out, False
        w, h = out["image"]["width"], out["image"]["height"]
        uw, uh = self._units(w, h)
        s = text.strip()
        if s.lower() == EMPTY:
            return out, True
        m = _FENCE.search(s)
        body = m.group(1) if m else s
        try:
            items = json.loads(body)
        except ValueError:
            return out, False
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            return out, False
        clean = True
        for item in items:
            box = _numbers(item.get("bbox_2d") if isinstance(item, dict) else None, 4)
            label = item.get("label") if isinstance(item, dict) else None
            if box is None or not isinstance(label, str) or not label.strip() or box[2] < box[0] or box[3] < box[1]:
                clean = False
                continue
            if len(out["boxes"]) == self.max_objects:
                clean = False
                break
            name, ok = known_label(self, label)
            clean &= ok
            px = [box[0] * w / uw, box[1] * h / uh, box[2] * w / uw, box[3] * h / uh]
            out["boxes"].append(px)
            out["labels"].append(name)
            if self.task == "segment":
                poly = item.get("polygon")
                pts = [p for p in (poly if isinstance(poly, list) else []) if _numbers(p, 2) is not None]
                if len(pts) >= 3:
                    out["masks"].append([c for x, y in pts for c in (x * w / uw, y * h / uh)])
                else:
                    clean &= poly is None
                    out["masks"].append(box_polygon(px))
            elif self.task == "keypoints":
                clean &= self._keypoints(item.get("keypoints"), out, w, h, uw, uh)
        return out, clean

    def _keypoints(self, raw: Any, out: Target, w: int, h: int, uw: int, uh: int) -> bool:
        k = len(self.keypoint_names)
        raw = raw if isinstance(raw, list) else []
        kps = []
        for p in (raw + [None] * k)[:k]:
            xy = _numbers(p, 2)
            if xy is None:
                kps.append([0.0, 0.0, 0])
            else:
                x, y = xy[0] * w / uw, xy[1] * h / uh
                kps.append([x, y, 2])
                out["points"].append([x, y])
        out["keypoints"].append(kps)
        return len(raw) == k


def _numbers(v: Any, n: int) -> list[float] | None:
    if not isinstance(v, list) or len(v) != n:
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        return None
    return [float(x) for x in v]


def _target_size(target: Target) -> tuple[int, int]:
    from pipeline.codec import _size

    return _size(target)
