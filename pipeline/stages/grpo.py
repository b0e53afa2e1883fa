"""Stage 3: reinforcement learning against the job's reward with TRL's GRPOTrainer.

Rows carry the prompt (with the image), the image, and the ground truth as a JSON column that
TRL passes to the reward as a keyword list. The reward sees canonical structures in original
image pixels through ``as_trl_reward``; continuous rewards matter (a 0/1 reward left half the
groups without variance, FACTS.md). Defaults follow what won the probes: temperature 1.0,
beta 0 (no reference copy), loss "dapo".
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from pipeline.codec import Codec
from pipeline.config import RLConfig
from pipeline.rewards.base import as_trl_reward
from pipeline.stages.common import (
    Context,
    ReporterCallback,
    StageCancelled,
    StageClock,
    StagePaused,
    checkpoint_schedule,
    drop_checkpoints,
    grpo_rows,
    load_for_training,
    resume_point,
    save_model,
    time_cosine,
    with_images,
)
from pipeline.stages.resume import ExactResume
from pipeline.stages.watch import reward_watch
from pipeline.structures import Sample


class ResumableGRPOTrainer(ExactResume, GRPOTrainer):
    pass


def train_grpo(
    ctx: Context,
    stage: str,
    in_model: Path,
    samples: list[Sample],
    codec: Codec,
    rl: RLConfig,
    out_model: Path,
) -> dict:
    # One recipe read top to bottom (model, reward, rows, GRPOConfig, callbacks, train, save),
    # as TRL's GRPO example is; ~80 lines because GRPOConfig's arguments are spelled out.
    if not samples:
        raise ValueError(f"stage {stage}: the training split is empty")
    model, processor = load_for_training(ctx, stage, in_model, rl, codec.special_tokens())
    reward_fn = as_trl_reward(ctx.reward, codec)
    rows = grpo_rows(samples, codec)
    train = with_images(rows, samples, processor)
    prompts_per_step = max(1, rl.batch_size // rl.num_generations)
    steps_per_epoch = math.ceil(len(rows) / prompts_per_step)
    # As in the supervised stages, epochs stay a ceiling under a time budget: whichever ends first
    # ends the stage (a budget from the job's budget_minutes must not turn 1 epoch into hours).
    max_steps = rl.max_steps or max(1, math.ceil(rl.epochs * steps_per_epoch))
    args = GRPOConfig(
        output_dir=str(ctx.resume_dir(stage)),
        per_device_train_batch_size=rl.batch_size,
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length or codec.max_new_tokens(),
        temperature=rl.temperature,
        beta=rl.beta,
        loss_type=rl.loss_type,
        learning_rate=rl.lr,
        max_steps=max_steps,
        weight_decay=0.0,
        bf16=ctx.device.bf16,
        fp16=ctx.device.fp16,
        use_cpu=ctx.device.use_cpu,
        gradient_checkpointing=False,
        logging_steps=2,
        save_strategy="no",  # saving is driven by the checkpoint timer below
        save_total_limit=2,  # the newest may be cut off mid-save; keep the one before it
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=ctx.cfg.seed,
        data_seed=ctx.cfg.seed,
        log_completions=False,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=rl.lr, weight_decay=0.0)
    clock = StageClock.resumed(ctx, stage, rl.max_seconds)
    scheduler = time_cosine(optimizer, max_seconds=rl.max_seconds, clock=clock, total_steps=max_steps, warmup_steps=2)
    callback = ReporterCallback(ctx.reporter, stage, rl.max_seconds, clock=clock)
    watch = reward_watch(ctx, stage, codec, rl, processor)
    trainer = ResumableGRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=train,
        processing_class=processor,
        optimizers=(optimizer, scheduler),
        callbacks=[callback, checkpoint_schedule(25), *([watch] if watch else [])],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through the reporter
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_point(ctx, stage))
    seconds = time.monotonic() - t0
    if callback.cancelled:
        raise StageCancelled(f"stage {stage} cancelled")
    if callback.paused:
        raise StagePaused(f"stage {stage} paused at step {trainer.state.global_step}")
    if watch is not None and watch.finish(trainer.model, trainer.state.global_step):
        ctx.reporter.log(f"keeping the weights of step {watch.best_step}: validation {watch.key} {watch.best:.3f}, the best "
                         f"of {len(watch.curve)} watch checks", stage=stage)  # fmt: skip
    with ctx.publish():
        save_model(trainer.model, processor, out_model, base=in_model, device=ctx.device, tokens=codec.special_tokens())
    drop_checkpoints(ctx, stage)
    return {**(watch.summary() if watch is not None else {}),
        "train_seconds": round(seconds, 2),
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "examples": len(rows),
        "reward_seconds": round(reward_fn.seconds, 3),
    }

