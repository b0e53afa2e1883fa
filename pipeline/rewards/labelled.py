"""Rewards of fully labelled images: a picklable class around each per-pair score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config import BOXED
from pipeline.rewards.base import RewardError, parsed_flags
from pipeline.rewards.scores import Target, caption_f1, f1_at, soft_iou, soft_mask_iou, soft_oks, target_is_well_formed


class _PairReward:
    """A reward computed pair by pair from a module-level function (picklable)."""

    name = ""
    tasks, label_kinds = BOXED  # what it can score (pipeline.config.REWARD_SCOPES)

    def __init__(self, **params: Any) -> None:
        self.params = params

    def pair(self, out: Target, gt: Target) -> float:
        raise NotImplementedError

    def score(self, outs: list[Target], gts: list[Target]) -> list[float]:
        if len(outs) != len(gts):
            raise RewardError(self.name, None, f"{len(outs)} outputs but {len(gts)} gts")
        return [self.pair(o, g) for o, g in zip(outs, gts, strict=True)]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class IoUReward(_PairReward):
    """``"iou"``: :func:`soft_iou` (class-agnostic unless ``class_aware=True``).

    >>> IoUReward().score([{"boxes": [[0, 0, 4, 4]]}], [{"boxes": [[0, 0, 4, 2]]}])
    [0.5]
    """

    name = "iou"

    def __init__(self, class_aware: bool = False) -> None:
        super().__init__(class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_iou(out, gt, **self.params)


class F1Reward(_PairReward):
    """``"f1"``: :func:`f1_at` at IoU 0.5, class-aware.

    >>> F1Reward().score([{"boxes": [[0, 0, 4, 4]], "labels": ["a"]}],
    ...                  [{"boxes": [[0, 0, 4, 3]], "labels": ["a"]}])
    [1.0]
    """

    name = "f1"

    def __init__(self, iou_thr: float = 0.5, class_aware: bool = True) -> None:
        super().__init__(iou_thr=iou_thr, class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return f1_at(out, gt, **self.params)


class MaskIoUReward(_PairReward):
    """``"mask_iou"``: :func:`soft_mask_iou`.

    >>> sq = [0, 0, 4, 0, 4, 4, 0, 4]
    >>> gt = {"masks": [sq], "image": {"width": 8, "height": 8}}
    >>> MaskIoUReward().score([{"masks": [sq]}, {"masks": []}], [gt, gt])
    [1.0, 0.0]
    """

    name = "mask_iou"

    def __init__(self, class_aware: bool = False) -> None:
        super().__init__(class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_mask_iou(out, gt, **self.params)


class OKSReward(_PairReward):
    """``"oks"``: :func:`soft_oks`.

    >>> gt = {"boxes": [[0, 0, 10, 10]], "keypoints": [[[5, 5, 2]]]}
    >>> OKSReward().score([{"keypoints": [[[5, 5, 2]]]}, {"keypoints": []}], [gt, gt])
    [1.0, 0.0]
    """

    name = "oks"

    def __init__(self, sigmas: Sequence[float] | None = None, class_aware: bool = False) -> None:
        super().__init__(sigmas=sigmas, class_aware=class_aware)

    def pair(self, out: Target, gt: Target) -> float:
        return soft_oks(out, gt, **self.params)


class FormatReward(_PairReward):
    """``"format"``: 1.0 if the text parsed cleanly under the codec's grammar (the ``parsed``
    flags of ``Codec.decode``, passed by ``as_trl_reward``) and the target is well formed
    (:func:`target_is_well_formed`), else 0.0. Binary: use it next to a continuous reward.

    >>> gt = {"image": {"width": 8, "height": 8}}
    >>> FormatReward().score([{"boxes": [[0, 0, 4, 4]], "labels": ["a"]}] * 2, [gt, gt],
    ...                      parsed=[True, False])
    [1.0, 0.0]
    """

    name = "format"
    needs_parsed = True

    def score(
        self, outs: list[Target], gts: list[Target], parsed: list[bool] | None = None
    ) -> list[float]:
        flags = parsed_flags(self.name, outs, gts, parsed)
        return [
            float(bool(ok) and target_is_well_formed(o, g))
            for o, g, ok in zip(outs, gts, flags, strict=True)
        ]


class CaptionReward(_PairReward):
    """``"caption"``: :func:`caption_f1`.

    >>> CaptionReward().score([{"text": "two cats"}], [{"text": "two dogs"}])
    [0.5]
    """

    name = "caption"

    def pair(self, out: Target, gt: Target) -> float:
        return caption_f1(out, gt)
