"""Stage 3, second algorithm: rejection-sampling fine-tuning (RFT, as in RAFT).

Each round samples ``num_generations`` answers per training image with the current model,
scores them with the job's reward through the adapter GRPO uses (``as_trl_reward``, so
built-in, weak and JavaScript rewards score alike), keeps each image's best answer when its
reward reaches ``rft_threshold``, and trains on those answers with the supervised stage's
trainer (``train_sft``). That is SFT's throughput, which the literature finds competitive with
GRPO (FACTS.md); the reward only has to rank answers, not give a gradient. Fully labelled images
are not sampled: their ground truth is a better answer than any sample, so each round trains on
it beside the kept answers of the weakly labelled (clicked, counted) images. With weak labels
this is self-training filtered by the reward; on a fully boxed dataset it is SFT.

Time: with ``max_seconds`` each round gets an equal share of what is left; sampling stops at
``rft_sample_share`` of it (images come in a new order each round, so rounds see different
ones) and training gets the rest, so a round that samples fast trains longer. ``max_steps`` is
split over the rounds; otherwise each round trains ``epochs`` over its kept answers, or until
its time is up, whichever ends first (a round that ends early leaves its time to the next).

Reward-hacking watch (``pipeline/stages/watch.py``, as GRPO's): after each round that trained, its
model is scored on the validation slice beside the round's mean best reward; the stage publishes
the round's model that validated best, and with ``rl.watch_stop`` stops at hacking.

Resume: a round is the unit. Its kept answers are written before it trains, its model and
record after; a restarted stage skips finished rounds, retrains the interrupted round on the
same answers from its newest trainer checkpoint, and keeps only the budget the earlier
attempts left.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.codec import Codec
from pipeline.config import RLConfig, SupervisedConfig
from pipeline.models.loading import ensure_tokens, load_model
from pipeline.predict import generate_texts
from pipeline.rewards.base import as_trl_reward
from pipeline.stages.common import Context, StageCancelled, grpo_rows, save_model
from pipeline.stages.sft import train_sft
from pipeline.stages.watch import RewardWatch, reward_watch
from pipeline.structures import Sample

MIN_TRAIN_SECONDS = 1.0  # a round left with less than this skips its training


class PseudoLabels(list):
    """The pseudo-labelled samples ``pseudo_label`` kept, and what it took to get them."""

    def __init__(self, kept: list[Sample], indices: list[int], *, sampled: int, best: list[float],
                 zero_variance: int, unparsed: int, seconds: float) -> None:  # fmt: skip
        super().__init__(kept)
        self.indices = indices  # position of each kept sample in the input list
        self.sampled = sampled  # images sampled (fewer than given when the deadline came first)
        self.best = best  # each sampled image's best reward (empty without a reward)
        self.zero_variance = zero_variance  # images whose answers all scored the same
        self.unparsed = unparsed  # images none of whose answers parsed (never kept)
        self.seconds = seconds


@torch.no_grad()
def pseudo_label(
    model,
    processor,
    samples: list[Sample],
    codec: Codec,
    reward_fn: Callable[..., list[float]] | None = None,
    *,
    n: int = 1,
    temperature: float = 1.0,
    threshold: float | None = None,
    greedy: bool = False,
    batch_size: int = 32,
    deadline: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PseudoLabels:
    """The model's own answers as labels: ``n`` answers per image (sampled at ``temperature``,
    or one greedy answer), decoded; the best by ``reward_fn`` (a ``TrlReward``, scored against
    each sample's own target as GRPO scores it) is kept when it reaches ``threshold``.
    Only answers that parse are candidates; without a reward (self-training) the first is
    kept, unfiltered.

    Kept samples are copies with ``label_kind="full"`` and the decoded answer as ``target``.
    Sampling stops at ``deadline`` (``time.monotonic()``), checked before each batch of
    ``batch_size`` answers; ``on_batch(images_done)`` runs after each batch (progress,
    cancellation: it may raise).
    """
    t0 = time.monotonic()
    n = 1 if greedy else n
    per_call = max(1, batch_size // n)
    kept: list[Sample] = []
    indices: list[int] = []
    best: list[float] = []
    zero_variance = unparsed = sampled = 0
    for start in range(0, len(samples), per_call):
        if deadline is not None and time.monotonic() >= deadline:
            break
        chunk = samples[start : start + per_call]
        texts = generate_texts(model, processor, [s.image for s in chunk], codec, batch_size=len(chunk) * n,
                               num_samples=n, temperature=None if greedy else temperature)  # fmt: skip
        scores: list[float] | None = None
        if reward_fn is not None:
            rows = grpo_rows(chunk, codec)
            scores = reward_fn(texts, gt=[r["gt"] for r in rows for _ in range(n)],
                               width=[r["width"] for r in rows for _ in range(n)],
                               height=[r["height"] for r in rows for _ in range(n)])  # fmt: skip
        for k, sample in enumerate(chunk):
            decoded = [codec.decode(t, sample.width, sample.height) for t in texts[k * n : (k + 1) * n]]
            answers = [target for target, _ in decoded]
            rewards = scores[k * n : (k + 1) * n] if scores is not None else None
            # Only answers in the output format: an unparsed one decodes to a partial or empty
            # target, or keeps a label that is no category; either would teach the model a lie.
            candidates = [j for j, (_, ok) in enumerate(decoded) if ok]
            if rewards is not None:
                best.append(max(rewards))
                zero_variance += n > 1 and max(rewards) - min(rewards) <= 1e-9
            if not candidates:
                unparsed += 1
                continue
            j = max(candidates, key=lambda c: rewards[c]) if rewards is not None else candidates[0]
            if threshold is not None and rewards is not None and rewards[j] < threshold:
                continue
            kept.append(dataclasses.replace(sample, target=answers[j], label_kind="full"))
            indices.append(start + k)
        sampled += len(chunk)
        if on_batch is not None:
            on_batch(sampled)
    return PseudoLabels(kept, indices, sampled=sampled, best=best, zero_variance=zero_variance, unparsed=unparsed,
                        seconds=time.monotonic() - t0)  # fmt: skip


class _RoundReporter:
    """The job's reporter as one round's ``train_sft`` sees it: its progress mapped into the
    round's slice of the stage, its steps counted on from the earlier rounds'."""

    def __init__(self, inner, lo: float, hi: float, step0: int) -> None:
        self.inner, self.lo, self.hi, self.step0 = inner, lo, hi, step0

    def progress(self, stage: str, fraction: float) -> None:
        self.inner.progress(stage, self.lo + (self.hi - self.lo) * fraction)

    def metric(self, stage: str, step: int, values: dict[str, float]) -> None:
        self.inner.metric(stage, step + self.step0, values)

    def __getattr__(self, name: str) -> Any:  # log, stage_state, should_stop, close
        return getattr(self.inner, name)


def train_rft(
    ctx: Context,
    stage: str,
    in_model: Path,
    samples: list[Sample],
    codec: Codec,
    rl: RLConfig,
    out_model: Path,
) -> dict:
    if not samples:
        raise ValueError(f"stage {stage}: the training split is empty")
    rounds_dir = ctx.out / "stages" / f"{stage}.rounds"  # beside the stage folder, which a restart empties
    reward_fn = as_trl_reward(ctx.reward, codec)
    rounds = rl.rft_rounds
    history: list[dict[str, Any]] = []
    current: Path | str = in_model
    watch = reward_watch(ctx, stage, codec, rl, processor=None)  # the processor comes with the first round's model
    best: Path | None = None  # the round's model that validated best
    for r in range(1, rounds + 1):
        rdir = rounds_dir / f"round-{r}"
        if (rdir / "DONE.json").exists():
            history.append(json.loads((rdir / "DONE.json").read_text()))
            ctx.reporter.log(f"rft round {r}/{rounds}: finished before the restart", stage=stage)
        else:
            history.append(_round(ctx, stage, current, samples, codec, rl, reward_fn, r, history, rdir))
        if not history[-1]["steps"]:
            continue
        current = rdir / "model"
        if watch is None:
            continue
        # a restarted stage checks its finished rounds again: the watch's trail is in memory only
        stop = _watch_round(ctx, watch, current, codec, history)
        best = current if watch.best_step == watch.curve[-1][0] else best  # as GRPO's snapshot, before the verdict
        if stop:
            ctx.reporter.log(f"rft: stopping after round {r} of {rounds}", level="warning", stage=stage)
            break
    current = best or current
    info = {**_summary(history, reward_fn), **(watch.summary() if watch is not None and watch.curve else {})}
    truth = sum(x.label_kind == "full" for x in samples)
    if info["steps"] and not info["kept"] and info["sampled"]:
        info["note"] = (f"kept no answer of {info['sampled']} sampled images (rl.rft_threshold {rl.rft_threshold}); "
                        f"trained on the {truth} fully labelled images only")  # fmt: skip
        ctx.reporter.log(f"rft {info['note']}", level="warning", stage=stage)
    with ctx.publish():
        if info["steps"]:
            shutil.copytree(current, out_model, dirs_exist_ok=True)
        else:
            # Nothing reached the threshold: the stage passes its input on, and says why.
            best = max((h["best_reward"] for h in history if h["best_reward"] is not None), default=None)
            unparsed = sum(h["unparsed"] for h in history)
            info["note"] = (f"kept no answer of {info['sampled']} sampled images: {unparsed} had no answer in the output "
                            f"format, and no parsed answer of the others reached rl.rft_threshold {rl.rft_threshold}"
                            + (f" (the best reward was {best:.3f})" if best is not None else "")
                            + "; the model is the stage's input, unchanged. Lower rl.rft_threshold, or train stage 2 "
                            "longer so that more answers parse")  # fmt: skip
            ctx.reporter.log(f"rft {info['note']}", level="warning", stage=stage)
            model, processor = load_model(in_model, ctx.device)
            ensure_tokens(model, processor, codec.special_tokens())
            save_model(model, processor, out_model)
        shutil.rmtree(rounds_dir, ignore_errors=True)
    return info


def _watch_round(ctx: Context, watch: RewardWatch, model_dir: Path, codec: Codec, history: list[dict[str, Any]]) -> bool:
    """The reward watch on the model a round trained, beside the round's mean best reward (that of
    the answers it trained on); True when the stage should stop."""
    model, processor = load_model(model_dir, ctx.device)
    ensure_tokens(model, processor, codec.special_tokens())
    watch.processor = watch.processor or processor
    last = history[-1]
    reward = last["best_sum"] / last["sampled"] if last["sampled"] else None
    return watch.check(model, sum(h["steps"] for h in history), keep=False, reward=reward)


def _round(
    ctx: Context,
    stage: str,
    current: Path | str,
    samples: list[Sample],
    codec: Codec,
    rl: RLConfig,
    reward_fn,
    r: int,
    history: list[dict[str, Any]],
    rdir: Path,
) -> dict[str, Any]:
    """Sample (or reload the answers an interrupted attempt kept), train, record round ``r``."""
    rounds = rl.rft_rounds
    t0 = time.monotonic()
    spent = sum(h["seconds"] for h in history)
    budget = (rl.max_seconds - spent) / (rounds - r + 1) if rl.max_seconds else None
    lo, hi = (r - 1) / rounds, r / rounds
    kept_file = rdir / "kept.json"
    earlier = 0.0  # seconds an interrupted attempt spent sampling this round
    if kept_file.exists():
        saved = json.loads(kept_file.read_text())
        pairs = zip(saved["indices"], saved["targets"], strict=True)
        kept = [dataclasses.replace(samples[i], target=t, label_kind="full") for i, t in pairs]
        stats = saved["stats"]
        earlier = stats["sample_seconds"]
        ctx.reporter.log(f"rft round {r}/{rounds}: retraining on the {len(kept)} answers kept before the restart", stage=stage)
    else:
        labels = _sample(ctx, stage, current, samples, codec, rl, reward_fn, r, budget, lo, hi)
        kept = list(labels)
        stats = {"sampled": labels.sampled, "kept": len(kept), "zero_variance": labels.zero_variance, "unparsed": labels.unparsed,
                 "best_sum": sum(labels.best), "best_reward": max(labels.best, default=None),
                 "sample_seconds": round(labels.seconds, 2)}  # fmt: skip
        rdir.mkdir(parents=True, exist_ok=True)
        with ctx.publish():
            kept_file.write_text(json.dumps({"indices": labels.indices, "targets": [s.target for s in kept], "stats": stats}))
        share = len(kept) / max(stats["sampled"], 1)
        ctx.reporter.log(
            f"rft round {r}/{rounds}: sampled {stats['sampled']} images × {rl.num_generations} answers in "
            f"{stats['sample_seconds']:.1f} s; kept {len(kept)} ({share:.0%}) with reward >= {rl.rft_threshold}; mean best "
            f"reward {stats['best_sum'] / max(stats['sampled'], 1):.3f}; {stats['zero_variance']} images scored all answers alike, "
            f"{stats['unparsed']} had no answer in the output format",
            stage=stage,
        )  # fmt: skip
    truth = [x for x in samples if x.label_kind == "full"]
    step0 = sum(h["steps"] for h in history)
    ctx.reporter.metric(stage, step0, {"rft_kept_share": len(kept) / max(stats["sampled"], 1),
                                       "rft_mean_best_reward": stats["best_sum"] / max(stats["sampled"], 1)})  # fmt: skip
    steps_left = rl.max_steps - step0 if rl.max_steps else None
    # As in the other stages, epochs stay a ceiling under a time budget (whichever ends first).
    steps = math.ceil(steps_left / (rounds - r + 1)) if steps_left else None
    # what the round has left after loading and sampling (this attempt's, and an earlier one's)
    train_budget = budget - earlier - (time.monotonic() - t0) if budget is not None else None
    trained: dict[str, Any] = {"steps": 0, "train_seconds": 0.0, "examples": 0}
    if not kept and not truth:
        ctx.reporter.log(f"rft round {r}/{rounds}: no answer reached rl.rft_threshold {rl.rft_threshold}; "
                         "nothing to train on this round", level="warning", stage=stage)  # fmt: skip
    elif (train_budget is not None and train_budget < MIN_TRAIN_SECONDS) or steps_left == 0:
        ctx.reporter.log(f"rft round {r}/{rounds}: no budget left to train", level="warning", stage=stage)
    else:
        # A supervised stage without validation checks: the kept answers are the whole signal.
        cfg = SupervisedConfig(epochs=rl.epochs, max_seconds=train_budget, lr=rl.lr, lora=rl.lora, lora_r=rl.lora_r, qlora=rl.qlora,
                               batch_size=rl.batch_size, max_steps=steps, val_checks=0)  # fmt: skip
        sub = dataclasses.replace(ctx, reporter=_RoundReporter(ctx.reporter, lo + (hi - lo) / 2, hi, step0))
        trained = train_sft(sub, stage, Path(current), truth + kept, codec, cfg, rdir / "model")
    record = {"round": r, **stats, "kept": len(kept), "steps": trained["steps"],
              "train_seconds": trained["train_seconds"], "examples": trained["examples"],
              "seconds": round(earlier + time.monotonic() - t0, 2)}  # fmt: skip
    with ctx.publish():
        (rdir / "DONE.json").write_text(json.dumps(record))
    ctx.reporter.progress(stage, hi)
    return record


def _sample(ctx, stage, current, samples, codec, rl, reward_fn, r, budget, lo, hi):
    """Round ``r``'s answers from the model at ``current``, images in the round's own order."""
    order = [i for i, x in enumerate(samples) if x.label_kind != "full"]  # the boxed train on their truth
    random.Random(ctx.cfg.seed * 1009 + r).shuffle(order)
    if not order:
        return PseudoLabels([], [], sampled=0, best=[], zero_variance=0, unparsed=0, seconds=0.0)
    model, processor = load_model(current, ctx.device)
    ensure_tokens(model, processor, codec.special_tokens())
    window = rl.rft_sample_share * budget if budget is not None else None
    deadline = time.monotonic() + window if window is not None else None
    mid = lo + (hi - lo) / 2

    def on_batch(done: int) -> None:
        if ctx.reporter.should_stop():
            raise StageCancelled(f"stage {stage} cancelled")
        part = done / len(order)
        if deadline is not None and window > 0:
            part = max(part, 1 - (deadline - time.monotonic()) / window)
        ctx.reporter.progress(stage, lo + (mid - lo) * min(part, 1.0))

    labels = pseudo_label(model, processor, [samples[i] for i in order], codec, reward_fn,
                          n=rl.num_generations, temperature=rl.temperature, threshold=rl.rft_threshold,
                          batch_size=max(rl.batch_size, ctx.cfg.evaluate.batch_size), deadline=deadline,
                          on_batch=on_batch)  # fmt: skip
    labels.indices = [order[i] for i in labels.indices]
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return labels


def _summary(history: list[dict[str, Any]], reward_fn) -> dict[str, Any]:
    sampled = sum(h["sampled"] for h in history)
    kept = sum(h["kept"] for h in history)
    return {
        "algorithm": "rft",
        "rounds": len(history),
        "sampled": sampled,
        "kept": kept,
        "kept_share": round(kept / sampled, 4) if sampled else 0.0,
        "mean_best_reward": round(sum(h["best_sum"] for h in history) / sampled, 4) if sampled else None,
        "zero_variance_share": round(sum(h["zero_variance"] for h in history) / sampled, 4) if sampled else None,
        "unparsed_share": round(sum(h["unparsed"] for h in history) / sampled, 4) if sampled else None,
        "sample_seconds": round(sum(h["sample_seconds"] for h in history), 2),
        "train_seconds": round(sum(h["train_seconds"] for h in history), 2),
        "steps": sum(h["steps"] for h in history),
        "examples": sum(h["examples"] for h in history),
        "reward_seconds": round(reward_fn.seconds, 3),
        "round_stats": [{k: h[k] for k in ("round", "sampled", "kept", "steps", "seconds")} for h in history],
    }
