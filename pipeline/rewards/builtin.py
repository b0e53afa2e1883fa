"""Built-in rewards: one per-pair function each, a picklable class around it, one registry.

Every matching reward is *soft F1*: predictions and ground truths are matched one-to-one
(Hungarian, maximising the total similarity) and the matched similarities are summed and
divided by ``max(len(pred), len(gt))``, so a missed object and an extra object cost the
same. Without that denominator a model learns to spray boxes (see
``tests/test_rewards.py::test_spraying_boxes_games_an_unpenalised_reward_but_not_iou_or_f1``).
Rewards are continuous where the task allows: a 0/1 reward leaves GRPO groups with no
variance, hence no gradient (FACTS.md, "Does it learn").

Each reward declares the ``label_kinds`` of the images it can score (``pipeline.structures``):
box, mask and keypoint rewards need full annotations; ``points`` scores against clicks and
``count`` against per-category counts, so stage 3 can train on images nobody boxed. A reward
limited to some tasks declares ``tasks``; the config refuses it for the others. Both come
from ``pipeline.config.REWARD_SCOPES``, which the config checks without importing this module.

The registry's names are the metric keys TRL logs (``rewards/<name>``); a test pins them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.rewards.base import Reward
from pipeline.rewards.labelled import CaptionReward, F1Reward, FormatReward, IoUReward, MaskIoUReward, OKSReward
from pipeline.rewards.scores import (
    caption_f1,
    caption_words,
    f1_at,
    f1_counts,
    soft_iou,
    soft_mask_iou,
    soft_oks,
    target_is_well_formed,
)
from pipeline.rewards.weak import (
    FORMAT_WEIGHT,
    CountReward,
    PointsReward,
    count_match,
    gt_counts,
    points_f1,
    size_prior,
    with_format,
)
from pipeline.structures import KIND_WORDS, WEAK_TASKS, Dataset

if TYPE_CHECKING:
    from pipeline.reporter import Reporter

__all__ = ["BUILTIN_REWARDS", "DEFAULT_REWARD", "FORMAT_WEIGHT", "CaptionReward", "CountReward", "F1Reward",
           "FormatReward", "IoUReward", "MaskIoUReward", "OKSReward", "PointsReward", "caption_f1", "caption_words",
           "count_match", "default_reward", "f1_at", "f1_counts", "get_reward", "gt_counts", "points_f1", "size_prior",
           "soft_iou", "soft_mask_iou", "soft_oks", "target_is_well_formed", "with_format"]  # fmt: skip

BUILTIN_REWARDS: dict[str, Callable[..., Reward]] = {
    "iou": IoUReward,
    "f1": F1Reward,
    "mask_iou": MaskIoUReward,
    "oks": OKSReward,
    "format": FormatReward,
    "caption": CaptionReward,
    "points": PointsReward,
    "count": CountReward,
}

DEFAULT_REWARD: dict[str, str] = {
    "detect": "iou",
    "segment": "mask_iou",
    "keypoints": "oks",
    "caption": "caption",
}


def get_reward(name: str, **params: Any) -> Reward:
    """A built-in reward by name, e.g. ``get_reward("f1", iou_thr=0.75)``.

    >>> get_reward("iou").name
    'iou'
    """
    try:
        factory = BUILTIN_REWARDS[name]
    except KeyError:
        raise ValueError(
            f"unknown reward {name!r}; built-in rewards are: {', '.join(BUILTIN_REWARDS)}"
        ) from None
    return factory(**params)


def default_reward(task: str, domain: Dataset | None = None, reporter: Reporter | None = None) -> str:
    """The reward ``"default"`` stands for: the task's own (``DEFAULT_REWARD``), or, when the
    training split holds clicked or counted images, the weak reward that can score them too
    (``points``, else ``count``), so stage 3 learns from every label the user has."""
    name = DEFAULT_REWARD[task]
    if domain is None or task not in WEAK_TASKS:
        return name
    train = domain.splits.get("train") or []
    for kind, weak in (("points", "points"), ("counts", "count")):
        n = sum(s.label_kind == kind for s in train)
        if n:
            if reporter is not None:
                reporter.log(f"reward: default is {weak}, which scores the {n} {KIND_WORDS[kind]} training images "
                             f"as well as the boxed ones (set reward to {name} to train stage 3 on boxed images only)")  # fmt: skip
            return weak
    return name
