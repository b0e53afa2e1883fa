"""Rewards: the :class:`Reward` protocol, the built-in rewards and the TRL adapter."""

from pipeline.rewards.base import Reward, RewardError, TrlReward, as_trl_reward, completion_text
from pipeline.rewards.builtin import (
    BUILTIN_REWARDS,
    DEFAULT_REWARD,
    caption_f1,
    f1_at,
    get_reward,
    soft_iou,
    soft_mask_iou,
    soft_oks,
)

__all__ = [
    "BUILTIN_REWARDS",
    "DEFAULT_REWARD",
    "Reward",
    "RewardError",
    "TrlReward",
    "as_trl_reward",
    "caption_f1",
    "completion_text",
    "f1_at",
    "get_reward",
    "soft_iou",
    "soft_mask_iou",
    "soft_oks",
]
