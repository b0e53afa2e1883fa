"""What every stage shares: the stage context, dataset rows, the reporter callback, the
time-based schedule and checkpoint bookkeeping. Kept here so each stage module reads like its
algorithm."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pipeline.codec import Codec
from pipeline.config import CurriculumConfig, StageConfig
from pipeline.device import Device
from pipeline.ranks import is_main
from pipeline.reporter import Reporter
from pipeline.rewards.base import reward_target
from pipeline.structures import Dataset, Sample


class StageCancelled(RuntimeError):
    """The reporter asked the stage to stop (job cancelled)."""


class StagePaused(RuntimeError):
    """The reporter asked the stage to pause (a budget's cap): it saved a checkpoint to resume from."""


@dataclass
class Context:
    cfg: CurriculumConfig
    device: Device
    reporter: Reporter
    out: Path
    domain: Dataset
    domain_codec: Codec
    warm: Dataset | None = None
    warm_codec: Codec | None = None
    reward: Any = None  # pipeline.rewards.base.Reward
    fence: Any = None  # pipeline.fence.Fence when the service runs the stage; None standalone

    def publish(self) -> contextlib.AbstractContextManager:
        """Wrap every write of a model or ``DONE.json``: raises ``FenceLost`` when a newer
        attempt of the job owns the folder (``pipeline.fence``)."""
        return self.fence.publishing() if self.fence is not None else contextlib.nullcontext()

    def stage_dir(self, stage: str) -> Path:
        return self.out / "stages" / stage

    def checkpoint(self, stage: str) -> Path:
        return self.stage_dir(stage) / "model"

    def resume_dir(self, stage: str) -> Path:
        """Where a training stage keeps its resumable trainer checkpoints. Beside the stage
        folder, not inside it: a restarted stage empties its own folder first (``run_job``)."""
        return self.out / "stages" / f"{stage}.checkpoints"


def user_prompt(codec: Codec) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": codec.prompt()}]}]


def prompt_text(processor, codec: Codec) -> str:
    """The prompt as the model's processor wants it: through its chat template, or, for families
    with none (Florence-2, PaliGemma), the bare task prompt, which their processors wrap with the
    image tokens themselves (``Florence2Processor`` also expands its ``<OD>``-style task tags)."""
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(user_prompt(codec), add_generation_prompt=True)
    return codec.prompt()


def sft_rows(samples: list[Sample], codec: Codec) -> list[dict[str, Any]]:
    """Stage 1 and 2's rows, without their images (:func:`with_images` adds them as rows are read)."""
    prompt = user_prompt(codec)
    return [
        {
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": codec.encode(s.target)}],
        }
        for s in samples
    ]


IMAGE_INDEX = "image_index"  # the column that says which sample's image a row shows


def with_images(rows: list[dict[str, Any]], samples: list[Sample], processor: Any = None, augment: Any = None) -> Any:
    """A ``datasets.Dataset`` of ``rows`` whose ``image`` column is each sample's image, read
    when the trainer reads the row (``Dataset.with_transform``), not stored in the table.

    Why: ``Dataset.from_list`` with PIL images re-encodes every image as PNG bytes in memory,
    which a set of big photos cannot afford; here a lazily loaded sample decodes through the
    bounded cache (``pipeline.data.images``) and an eager one hands over its decoded image.
    Given the model's ``processor``, each image comes at the size the processor resizes it to
    (``pipeline.data.images.model_input_size``): a lazy one decodes straight to it (a big JPEG
    at reduced scale, ``LazyImage.decode``), a decoded one is resized. ``augment``: see
    :class:`~pipeline.data.images.RowImages`.
    """
    import datasets  # local: the stages import this module, and only training needs datasets

    from pipeline.data.images import RowImages

    table = datasets.Dataset.from_list([{**row, IMAGE_INDEX: i} for i, row in enumerate(rows)])
    return table.with_transform(RowImages(samples, processor, IMAGE_INDEX, augment))


def fully_labelled(samples: list[Sample]) -> list[Sample]:
    """The samples whose targets hold every object (``label_kind == "full"``): the only ones
    supervised training, validation and evaluation can use."""
    return [s for s in samples if s.label_kind == "full"]


def grpo_rows(samples: list[Sample], codec: Codec) -> list[dict[str, Any]]:
    """Stage 3's rows, without their images (:func:`with_images`). The ``gt`` column is
    :func:`reward_target`'s canonical structure, so every reward sees boxed, clicked and
    counted images alike."""
    prompt = user_prompt(codec)
    return [
        {"prompt": prompt, "gt": json.dumps(reward_target(s.target, codec.task)),
         "width": s.width, "height": s.height}  # fmt: skip
        for s in samples
    ]


class StageClock:
    """The seconds a stage has spent of its ``max_seconds`` budget, across restarts.

    A stage resumed from a checkpoint (a preempted Modal container, a killed worker) keeps the
    budget it had left rather than starting a fresh one: the seconds spent up to each
    checkpoint are saved in it (``CLOCK_FILE``) and read back at resume.
    """

    CLOCK_FILE = "dreamforge_clock.json"

    def __init__(self, max_seconds: float | None, spent_before: float = 0.0) -> None:
        self.max_seconds = max_seconds
        self.spent_before = float(spent_before)
        self.t0: float | None = None

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()

    def spent(self) -> float:
        return self.spent_before + (time.monotonic() - self.t0 if self.t0 is not None else 0.0)

    def fraction(self) -> float:
        """Share of the budget spent, 0 without a budget."""
        return min(self.spent() / self.max_seconds, 1.0) if self.max_seconds else 0.0

    def out_of_time(self) -> bool:
        return bool(self.max_seconds) and self.spent() >= self.max_seconds  # type: ignore[operator]

    def save(self, checkpoint: Path) -> None:
        if checkpoint.is_dir() and is_main():  # every rank's on_save calls it; one writes (pipeline.ranks)
            (checkpoint / self.CLOCK_FILE).write_text(json.dumps({"spent_seconds": round(self.spent(), 3)}))

    @classmethod
    def resumed(cls, ctx: Context, stage: str, max_seconds: float | None) -> StageClock:
        """The clock of ``stage``: what its newest checkpoint had spent, or a fresh one."""
        ckpt = newest_checkpoint(ctx.resume_dir(stage))
        spent = 0.0
        if ckpt is not None and (ckpt / cls.CLOCK_FILE).exists():
            with contextlib.suppress(ValueError, OSError, TypeError, KeyError):
                spent = max(0.0, float(json.loads((ckpt / cls.CLOCK_FILE).read_text())["spent_seconds"]))
        if spent and max_seconds:
            ctx.reporter.log(f"stage {stage} resumes with {max(0.0, max_seconds - spent):.0f} s of its "
                             f"{max_seconds:.0f} s budget left", stage=stage)  # fmt: skip
        return cls(max_seconds, spent)


def time_cosine(optimizer, *, max_seconds: float | None, total_steps: int, warmup_steps: int,
                clock: StageClock | None = None):  # fmt: skip
    """Linear warm-up then cosine decay, over steps or wall-clock time, whichever runs out first.

    A budget stops training mid-schedule; a step-based cosine would then end at a high
    learning rate. Decaying over elapsed time lands the schedule exactly on the budget, and
    over steps on the step ceiling when that comes first. ``clock`` carries the time a resumed
    stage had already spent, so the schedule picks up where it stopped.
    """
    clock = clock or StageClock(max_seconds)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        frac = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if clock.max_seconds:
            clock.start()
            frac = max(frac, clock.fraction())
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * max(frac, 0.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ReporterCallback(TrainerCallback):
    """Streams trainer logs to the reporter, enforces the time budget and cancellation."""

    def __init__(self, reporter: Reporter, stage: str, max_seconds: float | None, step_offset: int = 0,
                 clock: StageClock | None = None) -> None:  # fmt: skip
        self.reporter = reporter
        self.stage = stage
        self.max_seconds = max_seconds
        self.clock = clock or StageClock(max_seconds)
        self.cancelled = False
        self.paused = False
        self.step_offset = step_offset

    def on_train_begin(self, args, state, control, **kw):
        self.clock.start()

    def _fraction(self, state) -> float:
        return min(max(state.global_step / max(state.max_steps, 1), self.clock.fraction()), 1.0)

    def on_step_end(self, args, state, control, **kw):
        self.reporter.progress(self.stage, self._fraction(state))
        if self.reporter.should_stop():
            self.cancelled = True
            control.should_training_stop = True
        if self.clock.out_of_time():
            control.should_training_stop = True
        elif self.reporter.should_pause():  # a checkpoint to resume from exactly (stages/resume.py), then stop
            self.paused = True
            control.should_save = control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kw):
        self.clock.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs:
            return
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        values = {("lr" if k == "learning_rate" else k): v for k, v in values.items()}
        if values:
            self.reporter.metric(self.stage, state.global_step + self.step_offset, values)


class CheckpointTimer(TrainerCallback):
    """Asks the trainer for a resumable checkpoint every ``every_s`` seconds (and every
    ``every_steps`` steps when given).

    Modal restarts a preempted function on the same input and gives it about 30 s to exit,
    too little to save optimizer state then; so the state is saved ahead of time, and a
    restart loses at most one interval.
    """

    def __init__(self, every_s: float | None, every_steps: int | None = None) -> None:
        self.every_s = every_s
        self.every_steps = every_steps
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kw):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kw):
        due_time = self.every_s is not None and time.monotonic() - self.last >= self.every_s
        due_step = bool(self.every_steps) and state.global_step % self.every_steps == 0
        # Not when the stage is stopping (it runs after ReporterCallback): a budget's end saves the
        # final model anyway, and a stage stopped because a newer attempt owns the job must not
        # write, or rotate away, the checkpoints that attempt resumes from.
        if (due_time or due_step) and state.global_step < state.max_steps and not control.should_training_stop:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kw):
        self.last = time.monotonic()


def checkpoint_schedule(default_steps: int | None) -> CheckpointTimer:
    """The checkpoint timer from the environment: ``DREAMFORGE_CHECKPOINT_S`` (default 600 s;
    0 turns the timer off) and ``DREAMFORGE_CHECKPOINT_STEPS`` (default ``default_steps``)."""
    every_s = float(os.environ.get("DREAMFORGE_CHECKPOINT_S", 600)) or None
    steps = os.environ.get("DREAMFORGE_CHECKPOINT_STEPS")
    return CheckpointTimer(every_s, int(steps) if steps else default_steps)


_CKPT = re.compile(r"^checkpoint-(\d+)$")


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest complete trainer checkpoint in ``folder``. ``trainer_state.json`` is written
    after the weights and optimizer state, so a folder without it was cut off mid-save."""
    if not folder.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in folder.iterdir()
            if (m := _CKPT.match(p.name)) and (p / "trainer_state.json").exists()]  # fmt: skip
    return max(done)[1] if done else None


def resume_point(ctx: Context, stage: str) -> str | None:
    """The checkpoint to resume ``stage`` from (logged), or None to start at step 0."""
    ckpt = newest_checkpoint(ctx.resume_dir(stage))
    if ckpt is None:
        return None
    ctx.reporter.log(f"resuming stage {stage} from {ckpt.name}", stage=stage)
    return str(ckpt)


def drop_checkpoints(ctx: Context, stage: str) -> None:
    """A finished stage's final model is saved: its optimizer-state checkpoints are dead weight."""
    if not is_main():
        return
    shutil.rmtree(ctx.resume_dir(stage), ignore_errors=True)


def mark_done(stage_dir: Path, info: dict[str, Any]) -> None:
    if not is_main():
        return
    (stage_dir / "DONE.json").write_text(json.dumps(info, indent=1))


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / "DONE.json").exists()


def read_done(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / "DONE.json").read_text())


def fresh_dir(path: Path) -> Path:
    """An empty folder: a stage that died mid-way left partial files there."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def load_for_training(ctx: Context, stage: str, in_model: Path, stage_cfg: StageConfig, tokens: list[str]):
    """``(model, processor)`` ready to train: the codec's tokens added, LoRA adapters on when
    the stage wants them, and with ``qlora`` the language weights in 4-bit under them."""
    from pipeline.models.loading import ensure_tokens, four_bit_config, load_model

    quant = four_bit_config("nf4", ctx.device, ctx.cfg.export.keep_16bit) if stage_cfg.qlora else None
    model, processor = load_model(in_model, ctx.device, quantization_config=quant)
    ensure_tokens(model, processor, tokens)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        # fp32 norms and an input-grad hook, as QLoRA needs; checkpointing stays off (FACTS.md)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if lora_on(ctx, stage, stage_cfg, model):
        model = lora_wrap(model, stage_cfg)
    return model, processor


def lora_on(ctx: Context, stage: str, stage_cfg: StageConfig, model) -> bool:
    """Whether ``stage`` trains LoRA adapters (``lora: "auto"``: by the model's size), logged."""
    from pipeline.estimate import lora_wanted

    on, why = lora_wanted(stage_cfg.lora, model.num_parameters())
    if stage_cfg.qlora:
        on, why = True, "qlora: adapters over a 4-bit base"
    if stage_cfg.lora == "auto" or stage_cfg.qlora:
        ctx.reporter.log(f"stage {stage}: {'LoRA' if on else 'full fine-tuning'}, {why}", stage=stage)
    return on


def save_model(model, processor, path: Path, *, base: Path | None = None, device=None, tokens=()) -> None:
    """Save a plain, loadable model: LoRA adapters merged in (and kept beside it in
    ``adapter/`` for those who serve adapters). A QLoRA model is merged into its 16-bit
    ``base`` reloaded on ``device`` (with the codec's ``tokens``), not into the 4-bit weights.
    Under ``accelerate launch``, only the main process saves (``pipeline.ranks``)."""
    if not is_main():
        return
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(path / "adapter")
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model.base_model.model, "is_loaded_in_4bit", False):
            from peft import PeftModel

            from pipeline.models.loading import ensure_tokens, load_model

            full, _ = load_model(base, device)
            ensure_tokens(full, processor, list(tokens))
            model = PeftModel.from_pretrained(full, path / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(path)
    processor.save_pretrained(path)


def lora_wrap(model, stage_cfg: StageConfig):
    """LoRA on the language model's projections only (the vision tower stays frozen)."""
    from peft import LoraConfig, get_peft_model

    target = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    cfg = LoraConfig(r=stage_cfg.lora_r, lora_alpha=2 * stage_cfg.lora_r, lora_dropout=0.0, target_modules=target)
    return get_peft_model(model, cfg)
