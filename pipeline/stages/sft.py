"""Stages 1 and 2: supervised fine-tuning with TRL's SFTTrainer.

Prompt/completion rows with ``completion_only_loss`` so only the answer carries loss, and
``max_length=None`` because truncation must never cut image tokens (FACTS.md). The one change
to TRL's loss: location tokens get a Gaussian target over neighbouring bins
(``loc_loss.py``), which is what lets a tiny model learn geometry within minutes on a CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback
from trl import SFTConfig, SFTTrainer

from pipeline.codec import Codec
from pipeline.config import StageConfig, SupervisedConfig
from pipeline.stages.common import (
    Context,
    ReporterCallback,
    StageCancelled,
    StageClock,
    StagePaused,
    checkpoint_schedule,
    drop_checkpoints,
    fully_labelled,
    load_for_training,
    resume_point,
    save_model,
    sft_rows,
    time_cosine,
    with_images,
)
from pipeline.stages.loc_loss import soft_location_loss
from pipeline.stages.resume import ExactResume
from pipeline.stages.seq2seq import LocationAwareSeq2SeqTrainer, Seq2SeqCollator, seq2seq_rows
from pipeline.stages.validation import ValidationCallback, check_interval, check_seconds
from pipeline.structures import Sample


class LocationAwareSFTTrainer(ExactResume, SFTTrainer):
    def __init__(self, *args, loc_ids: list[int], loc_sigma: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._loc_ids = torch.tensor(loc_ids, dtype=torch.long)  # empty for formats without location tokens
        self._loc_sigma = loc_sigma

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loc_ids = self._loc_ids.to(outputs.logits.device)
        loss = soft_location_loss(outputs.logits, labels, loc_ids, self._loc_sigma)
        return (loss, outputs) if return_outputs else loss


def train_sft(
    ctx: Context,
    stage: str,
    in_model: Path,
    samples: list[Sample],
    codec: Codec,
    stage_cfg: StageConfig,
    out_model: Path,
    *,
    loc_sigma: float = 1.0,
    epoch_examples: int | None = None,
    online: list[str] | None = None,
) -> dict:
    """Fine-tune ``in_model`` on ``samples``; save the merged model to ``out_model``.

    ``epoch_examples``: how many of ``samples`` make an epoch when some are augmented copies
    (an epoch counts each labelled image once, so augmenting does not lengthen the stage).
    ``online``: augmentations drawn at each read (``pipeline.online_augment``).

    Long (~90 lines) on purpose: it reads top to bottom as one recipe (model, rows, schedule,
    TrainingArguments, callbacks, train, save), as TRL's own example scripts do; each step
    is a call into ``common``, and splitting further would only pass a dozen locals around."""
    if not samples:
        raise ValueError(f"stage {stage}: the training split is empty")
    model, processor = load_for_training(ctx, stage, in_model, stage_cfg, codec.special_tokens())
    seq2seq = bool(model.config.is_encoder_decoder)
    rows = seq2seq_rows(samples, codec) if seq2seq else sft_rows(samples, codec)
    augment, tracker = _online(ctx, samples, codec, online, seq2seq)
    train = with_images(rows, samples, processor, augment)
    bs = min(stage_cfg.batch_size, len(rows))
    steps_per_epoch = math.ceil((epoch_examples or len(rows)) / bs)
    max_steps = stage_cfg.max_steps or max(1, math.ceil(stage_cfg.epochs * steps_per_epoch), stage_cfg.min_steps or 0)
    # With a time budget as well, the epochs stay a ceiling: whichever ends first ends the stage
    # (time_cosine decays over both), and validation may end it before either.
    args = SFTConfig(
        output_dir=str(ctx.resume_dir(stage)),
        per_device_train_batch_size=bs,
        learning_rate=stage_cfg.lr,
        max_steps=max_steps,
        num_train_epochs=max(stage_cfg.epochs, 1),
        weight_decay=0.0,
        bf16=ctx.device.bf16,
        fp16=ctx.device.fp16,
        use_cpu=ctx.device.use_cpu,
        gradient_checkpointing=False,  # the CPU default in TRL costs 8x for nothing (FACTS.md)
        logging_steps=10,
        save_strategy="no",  # saving is driven by the checkpoint timer below
        save_total_limit=2,  # the newest may be cut off mid-save; keep the one before it
        report_to=[],
        max_length=None,
        completion_only_loss=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=ctx.cfg.seed,
        data_seed=ctx.cfg.seed,
    )
    loc_ids = processor.tokenizer.convert_tokens_to_ids(codec.location_tokens())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=stage_cfg.lr, weight_decay=0.0)
    # A step-bounded stage warms up over 5 % of its steps; one bounded by time alone cannot know them.
    warmup = min(50, max(1, max_steps // 20)) if stage_cfg.max_steps or not stage_cfg.max_seconds else 20
    clock = StageClock.resumed(ctx, stage, stage_cfg.max_seconds)
    scheduler = time_cosine(optimizer, max_seconds=stage_cfg.max_seconds, clock=clock, total_steps=max_steps, warmup_steps=warmup)
    callback = ReporterCallback(ctx.reporter, stage, stage_cfg.max_seconds, clock=clock)
    planned = stage_cfg.max_steps or max(1, math.ceil(stage_cfg.epochs * steps_per_epoch), stage_cfg.min_steps or 0)
    validation = _validation(ctx, stage, codec, stage_cfg, processor, planned=planned)
    common = dict(model=model, args=args, train_dataset=train, optimizers=(optimizer, scheduler),
                  callbacks=[callback, checkpoint_schedule(None), *([validation] if validation else []),
                             *([tracker] if tracker else [])],
                  loc_ids=loc_ids, loc_sigma=loc_sigma)  # fmt: skip
    if seq2seq:
        trainer = LocationAwareSeq2SeqTrainer(**common, data_collator=Seq2SeqCollator(processor, codec))
    else:
        trainer = LocationAwareSFTTrainer(**common, processing_class=processor)
    trainer.remove_callback(PrinterCallback)  # progress goes through the reporter
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_point(ctx, stage))
    seconds = time.monotonic() - t0
    if callback.cancelled:
        raise StageCancelled(f"stage {stage} cancelled")
    if callback.paused:
        raise StagePaused(f"stage {stage} paused at step {trainer.state.global_step}")
    info = {
        "train_seconds": round(seconds, 2),
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "examples": len(rows),
    }
    if validation:
        if validation.finish(trainer.model, trainer.state.global_step):
            ctx.reporter.log(f"keeping the weights of step {validation.best_step}: validation {validation.key} "
                             f"{validation.best:.3f}, the best of {len(validation.curve)} checks", stage=stage)  # fmt: skip
        info.update(validation.summary())
    with ctx.publish():
        save_model(trainer.model, processor, out_model, base=in_model, device=ctx.device, tokens=codec.special_tokens())
    drop_checkpoints(ctx, stage)
    return info


def _online(ctx: Context, samples: list[Sample], codec: Codec, names: list[str] | None, seq2seq: bool):
    """``(augment, epoch tracker)`` for :func:`~pipeline.stages.common.with_images`, or ``(None, None)``."""
    if not names:
        return None, None
    from pipeline.models.loading import TINY_MODEL
    from pipeline.online_augment import MAX_SIDE, EpochTracker, OnlineAugment

    # the built-in model's processor shrinks every image to image_size: mosaic no bigger
    side = ctx.cfg.image_size if ctx.cfg.model == TINY_MODEL and isinstance(ctx.cfg.image_size, int) else MAX_SIDE
    augmenter = OnlineAugment(samples, names, ctx.cfg.seed, ctx.domain.keypoint_names, max_side=side)

    def augment(i: int, image_of) -> tuple[Any, dict[str, Any]]:
        image, target = augmenter(i, image_of)
        text = codec.encode(target)
        return image, ({"target": text} if seq2seq else {"completion": [{"role": "assistant", "content": text}]})

    return augment, EpochTracker(augmenter)


def _validation(
    ctx: Context, stage: str, codec: Codec, stage_cfg: StageConfig, processor, *, planned: int
) -> ValidationCallback | None:
    """The stage's validation check, on its own dataset's validation split (the generic set's for
    the warm start), when the config asks for one and the split and the schedule leave room."""
    if not isinstance(stage_cfg, SupervisedConfig):
        return None
    dataset = ctx.warm if stage == "warm_start" else ctx.domain
    val = fully_labelled((dataset.splits.get("val") if dataset else None) or [])[: stage_cfg.val_samples]
    every = check_interval(planned, stage_cfg.val_checks)
    every_s = check_seconds(stage_cfg.max_seconds, stage_cfg.val_checks) if not stage_cfg.max_steps else None
    if not val or (every is None and every_s is None):
        return None
    return ValidationCallback(reporter=ctx.reporter, stage=stage, samples=val, codec=codec, task=ctx.cfg.task,
                              processor=processor, every=every, every_s=every_s, patience=stage_cfg.patience,
                              stop_from=stage_cfg.stop_from, batch_size=ctx.cfg.evaluate.batch_size)  # fmt: skip
