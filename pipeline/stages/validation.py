"""Validation during a supervised stage: decode a fixed slice of the validation split every so
often, report the curve, keep the best weights, stop when it stops improving.

Why in the stage and not only at the end: with a few dozen labels the domain stage fits its
training images long before its step budget ends (train IoU 0.9 against 0.3 held out, measured),
and more steps past that point only cost time; with thousands of images it is still improving
when the budget ends. A fixed step count is wrong for one of them; the validation curve is right
for both.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from transformers import TrainerCallback

from pipeline.codec import Codec
from pipeline.metrics import evaluate, primary_metric
from pipeline.predict import predict_targets
from pipeline.reporter import Reporter
from pipeline.structures import Sample

MIN_INTERVAL = 20  # steps between checks: a check costs about as much as 10 training steps
MIN_DELTA = 0.002  # a better score by less than this is noise on a few dozen images


def check_interval(planned_steps: int, checks: int) -> int | None:
    """Steps between validation checks, or None when there is no room for one."""
    if checks <= 0 or planned_steps < 2 * MIN_INTERVAL:
        return None
    return max(MIN_INTERVAL, planned_steps // checks)


def check_seconds(max_seconds: float | None, checks: int) -> float | None:
    """With a time budget the step count is unknown ahead: check every budget / checks seconds."""
    return max_seconds / checks if max_seconds and checks > 0 else None


class ValidationCallback(TrainerCallback):
    """Every ``every`` steps: greedy-decode ``samples``, report ``val_<metric>`` and
    ``val_parse_rate``, snapshot the trainable weights when the score is the best so far,
    and stop after ``patience`` checks without improvement. At the end of training the best
    snapshot is put back, so the stage saves the weights that validated best."""

    def __init__(self, *, reporter: Reporter, stage: str, samples: list[Sample], codec: Codec, task: str,
                 processor: Any, every: int | None, every_s: float | None, patience: int,
                 stop_from: float = 0.0, batch_size: int = 32) -> None:  # fmt: skip
        self.reporter, self.stage, self.samples, self.codec, self.task = reporter, stage, samples, codec, task
        self.processor, self.every, self.every_s, self.patience = processor, every, every_s, patience
        self.batch_size, self.stop_from, self.waiting_said = batch_size, stop_from, False
        self.last_step, self.last_t = 0, time.monotonic()
        self.key = primary_metric(task)
        self.best: float = -math.inf
        self.best_step = 0
        self.bad = 0
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.curve: list[tuple[int, float]] = []
        self.stopped_early = False
        self.seconds = 0.0
        self.last_predictions: list = []  # of the latest check

    def score(self, model) -> dict[str, float]:
        t0 = time.monotonic()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                preds, parsed, _ = predict_targets(model, self.processor, self.samples, self.codec, batch_size=self.batch_size)
        finally:
            model.train(was_training)
        m = evaluate(preds, [s.target for s in self.samples], parsed, self.task, self.codec.categories)
        self.last_predictions = preds  # what subclasses read more from (the reward watch's boxes per image)
        self.seconds += time.monotonic() - t0
        return {f"val_{self.key}": float(m[self.key]), "val_parse_rate": float(m.get("parse_rate", 0.0))}

    def on_train_begin(self, args, state, control, **kw):
        self.last_step, self.last_t = state.global_step, time.monotonic()

    def _due(self, step: int) -> bool:
        if step - self.last_step < MIN_INTERVAL:
            return False
        by_steps = self.every is not None and step - self.last_step >= self.every
        # the time spent checking does not count: otherwise checks would eat their own interval
        by_time = self.every_s is not None and time.monotonic() - self.last_t >= self.every_s
        return by_steps or by_time

    def on_step_end(self, args, state, control, model=None, **kw):
        if model is not None and self._due(state.global_step) and self.check(model, state.global_step, state.max_steps):
            control.should_training_stop = True
        return control

    def check(self, model, step: int, max_steps: int | None = None, *, keep: bool = True) -> bool:
        """Score ``model`` as of ``step``, report it, snapshot it when it is the best so far
        (``keep``; a caller that keeps its own checkpoints, as RFT's rounds, passes False);
        True when the stage should stop."""
        values = self.score(model)
        self.last_step, self.last_t = step, time.monotonic()
        value = values[f"val_{self.key}"]
        self.curve.append((step, value))
        self.reporter.metric(self.stage, step, values)
        if value > self.best + MIN_DELTA or len(self.curve) == 1:
            self.best, self.best_step, self.bad = max(value, self.best), step, 0
            if keep:  # only trainable tensors change (LoRA: the adapters); copies live on the CPU
                self.snapshot = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
            return False
        self.bad += 1
        if self.bad >= self.patience and self.best < self.stop_from:
            if not self.waiting_said:
                self.waiting_said = True
                self.reporter.log(
                    f"validation {self.key} has not reached {self.stop_from} yet (best {self.best:.3f}): the stage has "
                    "not started learning, so it trains on to its budget instead of stopping early", stage=self.stage,
                )  # fmt: skip
            return False
        if self.bad >= self.patience and (max_steps is None or step < max_steps):
            self.stopped_early = True
            self.reporter.log(
                f"validation {self.key} has not improved for {self.bad} checks (best {self.best:.3f} at step "
                f"{self.best_step}); stopping at step {step} with the best weights", stage=self.stage,
            )  # fmt: skip
            return True
        return False

    def finish(self, model, step: int) -> bool:
        """Score the final weights too (unless the last check just did), then put the best
        snapshot back if training moved past it; True when it did."""
        if self.snapshot is None:
            return False
        if self.curve[-1][0] != step:
            values = self.score(model)
            self.curve.append((step, values[f"val_{self.key}"]))
            self.reporter.metric(self.stage, step, values)
            if values[f"val_{self.key}"] > self.best + MIN_DELTA:
                self.best, self.best_step = values[f"val_{self.key}"], step
        if self.best_step == step:
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.snapshot.items():
                params[name].copy_(value.to(params[name].device))
        return True

    def summary(self) -> dict[str, Any]:
        return {"val_metric": self.key, "val_best": round(self.best, 4) if self.curve else None,
                "val_best_step": self.best_step if self.curve else None, "val_checks": len(self.curve),
                "stopped_early": self.stopped_early, "val_seconds": round(self.seconds, 2)}  # fmt: skip
