"""The reward interface, and its adapter to TRL's reward-function signature.

A reward scores a batch of parsed outputs against their ground truths, both canonical
``Target`` dicts (see ``pipeline.structures``), one float per pair. Built-in rewards
(``pipeline.rewards.builtin``) and user rewards (a JavaScript sandbox, later) implement the
same protocol, so the trainer and the evaluator never care which kind they hold.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.codec import Codec
from pipeline.geometry import class_mask, ioa_matrix, iou_matrix, match_matrix
from pipeline.structures import WEAK_TASKS


@runtime_checkable
class Reward(Protocol):
    """Scores ``outs[i]`` against ``gts[i]``; returns ``len(outs)`` floats."""

    name: str

    def score(self, outs: list[dict], gts: list[dict]) -> list[float]: ...


def reward_target(target: dict[str, Any], task: str) -> dict[str, Any]:
    """The ground truth a reward is given: one structure whatever the image's label kind.

    For detect and segment, a fully labelled image also carries its objects as clicks (box
    centres in ``points``, their labels in ``point_labels``) and ``counts`` from its labels; a
    clicked image gets ``counts`` from its clicks' categories ("" for clicks without one). So
    a reward written against clicks or counts scores boxed images too, built-in or JavaScript.

    >>> t = reward_target({"boxes": [[0, 0, 10, 4]], "labels": ["cola"], "points": []}, "detect")
    >>> t["points"], t["point_labels"], t["counts"]
    ([[5.0, 2.0]], ['cola'], {'cola': 1})
    """
    if task not in WEAK_TASKS:  # keypoints keep their own points; captions have no objects
        return target
    t = {**target, "points": list(target.get("points") or []),
         "point_labels": list(target.get("point_labels") or []), "counts": dict(target.get("counts") or {})}  # fmt: skip
    boxes = t.get("boxes") or []
    labels = ([str(x) for x in t.get("labels") or []] + [""] * len(boxes))[: len(boxes)]
    if boxes and not t["points"]:
        t["points"] = [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes]
        t["point_labels"] = labels
    t["point_labels"] = (t["point_labels"] + [""] * len(t["points"]))[: len(t["points"])]
    if not t["counts"]:
        t["counts"] = dict(Counter(labels if boxes else t["point_labels"]))
    return t


CROWD_IOA = 0.5  # COCOeval's IoU threshold applied to a crowd region as overlap / detection area
_PER_OBJECT = ("boxes", "labels", "masks", "keypoints")


def without_crowd_hits(pred: dict[str, Any], gt: dict[str, Any]) -> dict[str, Any]:
    """``pred`` without the detections COCO would ignore (every reward and every metric
    scores what is left): those that cover a crowd region of their label (intersection over
    the detection's area >= 0.5) and match no real object of that label at IoU >= 0.5
    (``pipeline.structures``, crowd regions). Stage 3's rewards apply it in
    :class:`TrlReward`, so a JavaScript reward never sees a crowd hit either.

    >>> gt = {"boxes": [], "labels": [], "crowd": [{"box": [0, 0, 20, 20], "label": "p"}]}
    >>> without_crowd_hits({"boxes": [[2, 2, 8, 8]], "labels": ["p"]}, gt)["boxes"]
    []
    """
    crowd = gt.get("crowd") or []
    boxes = pred.get("boxes") or []
    if not crowd or not boxes:
        return pred
    labels = ([str(x) for x in pred.get("labels") or []] + [""] * len(boxes))[: len(boxes)]
    ioa = ioa_matrix(boxes, [c["box"] for c in crowd])
    on_crowd = ((ioa >= CROWD_IOA) & class_mask(labels, [c["label"] for c in crowd])).any(axis=1)
    sim = iou_matrix(boxes, gt.get("boxes") or [])
    if sim.size:
        sim = np.where(class_mask(labels, [str(x) for x in gt.get("labels") or []]), sim, 0.0)
    matched = {i for i, _, _ in match_matrix(sim, 0.5)}
    keep = [i for i in range(len(boxes)) if i in matched or not on_crowd[i]]
    if len(keep) == len(boxes):
        return pred
    out = dict(pred)
    for key in _PER_OBJECT:
        values = pred.get(key) or []
        if len(values) == len(boxes):
            out[key] = [values[i] for i in keep]
    return out


LOADING = -1  # RewardError.index of a reward that does not compile or load


class RewardError(Exception):
    """A reward failed on one sample (``index``) or on the whole batch (``index is None``)."""

    def __init__(self, reward: str, index: int | None, message: str, line: int | None = None,
                 column: int | None = None) -> None:  # fmt: skip
        self.reward = reward
        self.index = index
        self.message = message
        self.line, self.column = line, column  # in the reward's source, for JavaScript rewards
        where = "on the batch" if index is None else f"on sample {index}"
        if index == LOADING:
            where = "to load"
        super().__init__(f"reward {reward!r} failed {where}: {message}")


def parsed_flags(name: str, outs: list, gts: list, parsed: list[bool] | None) -> list[bool]:
    """The ``parsed`` flags a format-aware reward is given (all True when it is given none),
    after checking ``outs``, ``gts`` and ``parsed`` are one batch."""
    if len(outs) != len(gts) or (parsed is not None and len(parsed) != len(outs)):
        raise RewardError(name, None, "outs, gts and parsed differ in length")
    return parsed if parsed is not None else [True] * len(outs)


def completion_text(completion: Any) -> str:
    """The assistant text of a TRL completion: a string, or conversational messages
    ``[{"role": "assistant", "content": str | [{"type": "text", "text": ...}, ...]}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence):
        msgs = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in msgs if m.get("role", "assistant") == "assistant"] or msgs
        if assistant:
            content = assistant[-1].get("content", "")
            if isinstance(content, str):
                return content
            if isinstance(content, Sequence):
                return "".join(
                    str(p.get("text", "")) for p in content
                    if isinstance(p, dict) and p.get("type", "text") == "text"
                )  # fmt: skip
    return ""


def _as_target(gt: Any, index: int, name: str) -> dict:
    if isinstance(gt, dict):
        return gt
    try:
        return json.loads(gt)
    except (TypeError, ValueError) as e:
        raise RewardError(name, index, f"gt is not a canonical Target nor its JSON: {e}") from e


class TrlReward:
    """A picklable TRL reward function wrapping a :class:`Reward` and a :class:`Codec`.

    Called as TRL calls rewards, ``f(completions, gt=[...], width=[...], height=[...], **kw)``
    where ``gt`` holds canonical targets as JSON strings (or dicts) and ``width``/``height``
    the ORIGINAL image sizes (taken from ``gt["image"]`` when the columns are absent).
    Returns ``reward + parsed_bonus`` for outputs that parsed cleanly, ``reward`` otherwise.
    ``__name__`` is the reward's name, so TRL logs it under a stable ``rewards/<name>`` key.
    """

    def __init__(self, reward: Reward, codec: Codec, parsed_bonus: float = 0.0) -> None:
        self.reward = reward
        self.codec = codec
        self.parsed_bonus = float(parsed_bonus)
        self.__name__ = reward.name
        self.seconds = 0.0  # spent in this reward (decode + score), reported by the RL stage

    def __call__(
        self,
        completions: list[Any],
        gt: list[Any],
        width: list[int] | None = None,
        height: list[int] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        t0 = time.perf_counter()
        try:
            return self._score(completions, gt, width, height)
        finally:
            self.seconds += time.perf_counter() - t0

    def _score(self, completions: list[Any], gt: list[Any], width: list[int] | None, height: list[int] | None) -> list[float]:
        name = self.reward.name
        if len(gt) != len(completions):
            raise RewardError(name, None, f"{len(completions)} completions, {len(gt)} gt rows")
        # A GRPO group repeats its prompt's gt: parse each once, and hand the reward the same
        # dict, which a JavaScript reward then sends to V8 once (js.py, _encode).
        parsed_gt: dict[str, dict] = {}
        gts = []
        for i, g in enumerate(gt):
            if isinstance(g, str):
                if g not in parsed_gt:
                    parsed_gt[g] = _as_target(g, i, name)
                gts.append(parsed_gt[g])
            else:
                gts.append(_as_target(g, i, name))
        outs, parsed = [], []
        for i, (c, g) in enumerate(zip(completions, gts, strict=True)):
            w = width[i] if width is not None else g["image"]["width"]
            h = height[i] if height is not None else g["image"]["height"]
            out, ok = self.codec.decode(completion_text(c), w, h)
            # A box on a crowd region ("many objects here, not boxed one by one") is neither
            # right nor wrong, as in evaluation: no reward may count it as an extra.
            outs.append(without_crowd_hits(out, g))
            parsed.append(ok)
        if getattr(self.reward, "needs_parsed", False):
            scores = self.reward.score(outs, gts, parsed=parsed)  # type: ignore[call-arg]
        else:
            scores = self.reward.score(outs, gts)
        if len(scores) != len(outs):
            raise RewardError(name, None, f"returned {len(scores)} scores for {len(outs)} outputs")
        for i, s in enumerate(scores):  # a NaN would train on silently (RL loss 0, no signal)
            if not isinstance(s, numbers.Real) or isinstance(s, bool) or not math.isfinite(s):
                raise RewardError(name, i, f"returned {str(s)[:40]!r}, not a finite number")
        return [
            float(s) + (self.parsed_bonus if ok else 0.0)
            for s, ok in zip(scores, parsed, strict=True)
        ]


def as_trl_reward(reward: Reward, codec: Codec, parsed_bonus: float = 0.0) -> TrlReward:
    """Wrap ``reward`` as a TRL reward function (see :class:`TrlReward`).

    >>> from pipeline.rewards.builtin import get_reward
    >>> codec = Codec("detect", ["cola"])
    >>> f = as_trl_reward(get_reward("iou"), codec)
    >>> gt = '{"boxes": [[0, 0, 32, 32]], "labels": ["cola"], "image": {"width": 64, "height": 64}}'
    >>> f([[{"role": "assistant", "content": "cola<loc_0><loc_0><loc_15><loc_15>"}]], gt=[gt])
    [1.0]
    >>> f.__name__
    'iou'
    """
    return TrlReward(reward, codec, parsed_bonus)
