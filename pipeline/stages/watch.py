"""Reward-hacking watch during RL: the training reward against a validation slice.

A policy can raise its reward without getting better at the task: it finds what the reward
over-pays (more boxes than there are objects when extras cost too little, an answer format the
parser is lenient with). The reward alone cannot show that; held-out images scored by the task's
own metric can. Every ``rl.watch_every`` steps this callback greedy-decodes a small slice of the
validation split and reports ``val_<metric>``, ``val_parse_rate`` and ``val_boxes_per_image``
beside the training reward (the dashboard draws them on the reward chart). It warns, loudly, when

- the training reward rose while the validation metric fell at each of the last
  ``rl.watch_checks`` checks, or
- the model answers with more than twice as many boxes per image as the ground truth holds;

and with ``rl.watch_stop`` it stops the stage there. Either way the stage keeps the weights that
validated best (``ValidationCallback``'s snapshot), never the hacked ones.

GRPO runs it as a trainer callback every ``rl.watch_every`` steps; RFT calls :meth:`RewardWatch.check`
after each round that trained, beside the round's mean best reward, and keeps the round's model
that validated best (``pipeline/stages/rft.py``).
"""

from __future__ import annotations

from typing import Any

from pipeline.codec import Codec
from pipeline.config import RLConfig
from pipeline.stages.common import Context, fully_labelled
from pipeline.stages.validation import ValidationCallback

BOX_DRIFT = 2.0  # boxes per image, as a multiple of the ground truth's, that counts as drift


class RewardWatch(ValidationCallback):
    def __init__(self, *, every: int, checks: int, stop: bool, **kw: Any) -> None:
        # No patience: RL's own budget ends the stage; the watch stops it only for hacking.
        super().__init__(every=every, every_s=None, patience=10**9, **kw)
        self.checks, self.stop = checks, stop
        self.gt_boxes = sum(len(s.target.get("boxes") or []) for s in self.samples) / max(1, len(self.samples))
        self.reward: float | None = None  # the latest training reward TRL logged
        self.trail: list[tuple[float, float]] = []  # (training reward, validation metric) per check
        self.warnings: list[str] = []
        self.boxes = 0.0  # boxes per image at the last check

    def _due(self, step: int) -> bool:
        return step - self.last_step >= (self.every or 0) > 0

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and isinstance(logs.get("reward"), int | float):
            self.reward = float(logs["reward"])

    def score(self, model) -> dict[str, float]:
        scores = super().score(model)
        preds = self.last_predictions
        self.boxes = sum(len(p.get("boxes") or []) for p in preds) / max(1, len(preds))
        return {**scores, "val_boxes_per_image": round(self.boxes, 4)}

    def check(self, model, step: int, max_steps: int | None = None, *, keep: bool = True,
              reward: float | None = None) -> bool:  # fmt: skip
        """:meth:`ValidationCallback.check` beside the training ``reward`` (GRPO: the latest TRL
        logged; RFT: the round's), warning of hacking; True when the stage should stop."""
        stop = super().check(model, step, max_steps, keep=keep)
        reward = reward if reward is not None else self.reward
        self.trail.append((reward if reward is not None else float("nan"), self.curve[-1][1]))
        why = self.hacking(self.boxes)
        if why:
            self.warnings.append(f"step {step}: {why}")
            self.reporter.metric(self.stage, step, {"reward_hacking": 1.0})
            action = "stopping with the weights that validated best" if self.stop else "set rl.watch_stop to stop here"
            self.reporter.log(f"REWARD HACKING? at step {step}: {why}; {action}", level="warning", stage=self.stage)
            if self.stop:
                self.stopped_early = stop = True
        return stop

    def hacking(self, boxes: float) -> str | None:
        """Why the last checks look like reward hacking, else None."""
        k = self.checks
        last = self.trail[-(k + 1):]
        if len(last) == k + 1 and all(b[0] > a[0] and b[1] < a[1] for a, b in zip(last, last[1:], strict=False)):
            return (f"the training reward rose {last[0][0]:.3f} → {last[-1][0]:.3f} over {k} checks while validation "
                    f"{self.key} fell {last[0][1]:.3f} → {last[-1][1]:.3f}")  # fmt: skip
        if self.gt_boxes > 0 and boxes > BOX_DRIFT * self.gt_boxes:
            return (f"the model answers {boxes:.1f} boxes per validation image where the ground truth has "
                    f"{self.gt_boxes:.1f} (over {BOX_DRIFT:g}×)")  # fmt: skip
        return None

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "watch_warnings": self.warnings[:20]}


def reward_watch(ctx: Context, stage: str, codec: Codec, rl: RLConfig, processor) -> RewardWatch | None:
    """The reward-hacking watch on the domain's validation split, when configured and there is one."""
    val = fully_labelled(ctx.domain.splits.get("val") or [])[: rl.watch_samples]
    if not rl.watch_every or not val:
        return None
    return RewardWatch(every=rl.watch_every, checks=rl.watch_checks, stop=rl.watch_stop, reporter=ctx.reporter, stage=stage,
                       samples=val, codec=codec, task=ctx.cfg.task, processor=processor,
                       batch_size=ctx.cfg.evaluate.batch_size)  # fmt: skip
