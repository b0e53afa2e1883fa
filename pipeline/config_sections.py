"""The sections of ``dreamforge.config.json`` below the curriculum itself: each stage's settings,
the data, evaluation and export, and the checks they share (Modal's GPUs, what each built-in
reward can score). ``pipeline.config`` re-exports every name: import them from there.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pipeline.gate import BaselineModel
from pipeline.structures import WEAK_TASKS

TINY_MODEL = "dreamforge-tiny"  # the built-in model, built locally (pipeline.models.tiny)
PRESETS = ("generic", "medical-scan", "retail-shelf", "traffic-camera")
# The shipped JavaScript examples, by name: ``example:NAME`` resolves only to these, so a name can
# never walk out of the examples folder (``example:../../x``).
EXAMPLE_REWARDS = ("f1_class_penalty", "iou", "medical_miss_penalty", "retail_facings")
# Caps that keep every number inside what the trainers, numpy seeding and BSON's int64 can hold.
MAX_STEPS = 10_000_000

# Modal's GPU types and how many of each one container may have (modal.com/docs/guide/gpu,
# "Specifying GPU type" and "Specifying GPU count"; A10G is the A10's older name, still accepted).
# Modal's client only upper-cases the string and splits off the count
# (modal/_utils/function_utils.py, parse_gpu_config): an unknown type or a count of 0 would fail
# only at spawn, on the GPU, as an infrastructure failure. Checking here makes it a 422 at submit.
MODAL_GPUS = {"T4": 8, "L4": 8, "A10": 4, "A10G": 4, "L40S": 8, "A100": 8, "A100-40GB": 8, "A100-80GB": 8,
              "RTX-PRO-6000": 8, "H100": 8, "H100!": 8, "H200": 8, "B200": 8, "B200+": 8}  # fmt: skip


def modal_gpu(v: str | None) -> str | None:
    """A ``compute`` hint checked against Modal's GPU list: ``"h100:2"`` → ``"H100:2"``."""
    if v is None:
        return v
    name, sep, count = v.partition(":")
    kind = name.strip().upper()
    if kind not in MODAL_GPUS:
        raise ValueError(f"{v!r} is not a Modal GPU; write one of {', '.join(MODAL_GPUS)}, with an optional count, "
                         "e.g. 'H100:2'")  # fmt: skip
    if not sep:
        return kind
    most = MODAL_GPUS[kind]
    if not count.strip().isdigit() or not 1 <= int(count) <= most:
        raise ValueError(f"{v!r}: the GPU count after ':' must be a whole number from 1 to {most} for {kind}, "
                         f"e.g. '{kind}:2'")  # fmt: skip
    return f"{kind}:{int(count)}"
MAX_STAGE_SECONDS = 7 * 86400
SEED_MAX = 2**32 - 1  # numpy's seeding range
AUTO_MAX_OBJECTS = 16  # each object costs ~5 generated tokens: a longer answer slows every step


class RewardScope(NamedTuple):
    tasks: tuple[str, ...] | None  # the tasks it fits; None: any
    label_kinds: tuple[str, ...]  # the images it can score (Sample.label_kind)


# What each built-in reward can score. Kept here, not beside the rewards, so the config refuses a
# mismatch without importing the training code (the dashboard and the Action read this module);
# the reward classes (pipeline.rewards.labelled and .weak) take their declarations from this table.
BOXED = RewardScope(None, ("full",))
REWARD_SCOPES: dict[str, RewardScope] = {
    **dict.fromkeys(("iou", "f1", "mask_iou", "oks", "format", "caption"), BOXED),
    "points": RewardScope(WEAK_TASKS, ("full", "points")),
    "count": RewardScope(WEAK_TASKS, ("full", "points", "counts")),
    "default": BOXED,  # every task's default reward scores boxed (fully labelled) images
}


def reward_problem(name: str, task: str, label_kinds: list[str] | tuple[str, ...] | None = None) -> str | None:
    """Why built-in reward ``name`` cannot serve a ``task`` job training stage 3 on
    ``label_kinds`` images (None: its own kinds), or None when it can (and for a JavaScript
    reward, which scores whatever it is given)."""
    scope = REWARD_SCOPES.get(name)
    if scope is None:
        return None
    if scope.tasks is not None and task not in scope.tasks:
        return f"the {name!r} reward scores {' and '.join(scope.tasks)} tasks only, not {task}"
    extra = [k for k in label_kinds or () if k not in scope.label_kinds]
    if extra:
        return (f"the {name!r} reward cannot score images labelled {', '.join(map(repr, extra))}: it scores "
                f"{', '.join(map(repr, scope.label_kinds))} images")  # fmt: skip
    return None


class _Strict(BaseModel):
    # allow_inf_nan=False: Infinity or NaN is a typo or an attack, never a setting; without it
    # NaN slips past every gt/lt bound (all comparisons with NaN are false).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class StageConfig(_Strict):
    """Hyperparameters of one training stage."""

    enabled: bool = Field(True, description="Run this stage. A disabled stage passes its input checkpoint on.")
    epochs: float = Field(1.0, gt=0, le=10_000, description="Passes over the stage's training split.")
    max_steps: int | None = Field(
        None, gt=0, le=MAX_STEPS, description="Stop after this many optimizer steps (overrides epochs)."
    )
    max_seconds: float | None = Field(
        None, gt=0, le=MAX_STAGE_SECONDS, description="Wall-clock budget for the stage's training loop; training stops cleanly when spent."
    )
    lr: float = Field(1e-3, gt=0, lt=1, description="Peak learning rate (linear warm-up, cosine decay).")
    batch_size: int = Field(16, ge=1, le=4096, description="Examples per optimizer step (completions for RL).")
    lora: bool | Literal["auto"] = Field(
        "auto",
        description="Train LoRA adapters on the language model instead of all weights. auto: on above 1B "
        "parameters, where full fine-tuning (~8 bytes a parameter with AdamW, plus activations) outgrows a "
        "16-24 GB GPU. The adapters are saved beside the merged model (model/adapter/).",
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank when lora is on.")
    qlora: bool = Field(
        False,
        description="QLoRA: load the model's language weights in 4-bit NF4 (bitsandbytes) and train LoRA adapters on "
        "top; the vision tower, projector and lm_head stay 16-bit (export.keep_16bit). The saved model is the "
        "16-bit base with the adapters merged in.",
    )

    @model_validator(mode="after")
    def _qlora_is_lora(self) -> StageConfig:
        if self.qlora and self.lora is False:
            raise ValueError("qlora trains LoRA adapters on a 4-bit base: set lora to true or 'auto', or qlora to false")
        return self
    compute: str | None = Field(
        None,
        description="Compute hint for the stage, a Modal GPU string such as 'T4', 'A10G', 'H100' or 'H100:2'; "
        "ignored by the local executor.",
        examples=["A10G", "H100:2"],
    )

    @field_validator("compute")
    @classmethod
    def _gpu_string(cls, v: str | None) -> str | None:
        return modal_gpu(v)


class SupervisedConfig(StageConfig):
    """A supervised stage (warm-start, domain): also checks its own validation split as it trains,
    keeps the best weights it saw, and stops when validation stops improving."""

    val_checks: int = Field(
        10, ge=0, le=1000,
        description="Validation checks over the stage (at most one every 20 steps); 0 turns them off. Each check "
        "decodes val_samples images and reports val_<primary metric> and val_parse_rate as metrics.",
    )  # fmt: skip
    min_steps: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="Train at least this many optimizer steps when the epochs give fewer: a domain set of a few "
        "dozen images needs more passes than a big one (ignored with max_steps).",
    )
    val_samples: int = Field(32, ge=1, le=10_000, description="Validation images decoded per check.")
    patience: int = Field(
        6, ge=1, le=1000,
        description="Stop early after this many checks in a row without a better validation score; the best "
        "weights seen are the stage's result. A 30-image validation split plateaus while held-out scores still "
        "rise (real coins: 0.485 / 0.473 with 6 against 0.490 / 0.448 / 0.440 with 3, same tiles).",
    )  # fmt: skip
    stop_from: float = Field(
        0.05, ge=0, le=1,
        description="Stop early only once the best validation score has reached this: a stage still below it "
        "has not started learning, and stalling there is not the end of learning (one small object per image: "
        "validation IoU sat at 0.03 for 560 steps, then rose to 0.16 by step 800). It then trains until its "
        "epochs or max_seconds end. 0: patience counts from the first check.",
    )  # fmt: skip


class WarmStartConfig(SupervisedConfig):
    """Stage 1. No early stopping by default: the generic set's validation plateau says nothing
    about transfer (a warm start cut from 780 to 660 steps cost stage 2 0.137 IoU, measured)."""

    lr: float = Field(2e-3, gt=0, lt=1, description="Peak learning rate (linear warm-up, cosine decay).")
    max_steps: int | None = Field(900, gt=0, le=MAX_STEPS, description="Stop after this many optimizer steps (overrides epochs).")
    val_checks: int = Field(0, ge=0, le=1000, description="Validation checks on the generic set's validation split; 0: none.")


class DomainConfig(SupervisedConfig):
    """Stage 2. Epochs are a ceiling: validation or the time budget ends the stage first, so a few
    dozen images get hundreds of steps and thousands of images stop at the budget."""

    lr: float = Field(5e-4, gt=0, lt=1, description="Peak learning rate (linear warm-up, cosine decay).")
    epochs: float = Field(400.0, gt=0, le=10_000, description="Passes over the training split, at most.")
    max_seconds: float | None = Field(
        300.0, gt=0, le=MAX_STAGE_SECONDS,
        description="Wall-clock budget for the stage's training loop (default: 5 minutes on a 2-core CPU); "
        "null for none.",
    )  # fmt: skip


class RLConfig(StageConfig):
    """The reward stage: TRL GRPO, or rejection-sampling fine-tuning, against the job's reward."""

    algorithm: Literal["grpo", "rft"] = Field(
        "grpo", description="grpo: TRL's GRPO. rft: rejection-sampling fine-tuning: sample num_generations answers "
        "per image, keep the best when its reward clears rft_threshold, and train on those with SFT.",
    )  # fmt: skip
    rft_threshold: float = Field(
        0.3, ge=-1e6, le=1e6,
        description="rft: the least reward an image's best sampled answer needs to be trained on; images whose "
        "answers all score below it are left out of that round.",
    )  # fmt: skip
    rft_rounds: int = Field(
        2, ge=1, le=100,
        description="rft: sample-then-train rounds; each round samples with the model the previous round trained "
        "and gets an equal share of what is left of the stage's budget.",
    )  # fmt: skip
    rft_sample_share: float = Field(
        0.5, gt=0, lt=1,
        description="rft with max_seconds: the most of each round's time spent sampling (images are sampled in a "
        "new order each round until it is spent); the rest trains on the kept answers.",
    )  # fmt: skip
    label_kinds: list[Literal["full", "points", "counts", "none"]] | None = Field(
        None, min_length=1,
        description="Which images stage 3 trains on, by what their labels hold (full boxes, points, counts, none). "
        "Default: every kind the reward can score (a JavaScript reward: full only).",
    )  # fmt: skip

    lr: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate of the policy (rft: of its supervised steps).")
    batch_size: int = Field(16, ge=2, le=4096, description="Completions per step; a multiple of num_generations.")
    num_generations: int = Field(8, ge=2, le=256, description="Samples per prompt (the GRPO group size).")
    beta: float = Field(0.0, ge=0, le=100, description="KL penalty towards the reference model (0 = none, no reference copy).")
    temperature: float = Field(1.0, gt=0, le=4, description="Sampling temperature of the rollouts.")
    max_completion_length: int | None = Field(
        None, ge=1, le=32_768, description="Token cap of a rollout; default: what the longest valid answer needs."
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="TRL GRPO loss variant.")
    watch_every: int = Field(
        25, ge=0, le=MAX_STEPS,
        description="grpo: every this many steps, score watch_samples validation images beside the training reward "
        "and warn of reward hacking (pipeline/stages/watch.py); rft: after every round; 0: no watch.",
    )  # fmt: skip
    watch_samples: int = Field(16, ge=1, le=10_000, description="Validation images the reward-hacking watch decodes.")
    watch_checks: int = Field(
        3, ge=1, le=100, description="Consecutive checks with the reward rising and validation falling that count as hacking."
    )
    watch_stop: bool = Field(
        False, description="Stop the stage when the watch sees reward hacking (the weights that validated best are kept)."
    )
    reward_errors: Literal["fail", "zero"] = Field(
        "fail", description="A JavaScript reward that fails on a sample: fail the job, or score it 0 and count it."
    )
    reward_timeout_s: float = Field(10.0, gt=0, le=600, description="Time limit of one batch of JavaScript reward calls.")
    reward_sample_timeout_ms: float = Field(1000.0, gt=0, le=600_000, description="Time limit of one JavaScript reward call.")
    reward_memory_mb: int = Field(
        256, ge=16, le=4096,
        description="Memory limit of the JavaScript reward: its V8 heap plus buffers and strings; "
        "the sandbox adds 64 MiB for its harness.",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _no_min_steps(cls, data: Any) -> Any:
        # min_steps was once accepted here and ignored (GRPO's TRL trainer plans its own steps):
        # an unset one, as configs dumped back then carry, is dropped; a set one is refused.
        if isinstance(data, dict) and "min_steps" in data:
            if data["min_steps"] is not None:
                raise ValueError("min_steps applies to the supervised stages (warm_start, domain) only; the RL "
                                 "stage trains for epochs, max_steps or max_seconds: remove rl.min_steps")
            data = {k: v for k, v in data.items() if k != "min_steps"}
        return data

    @model_validator(mode="after")
    def _group_divides_batch(self) -> RLConfig:
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of num_generations {self.num_generations}; "
                f"use batch_size {self.num_generations * max(1, self.batch_size // self.num_generations)}"
            )
        return self


class EvalConfig(_Strict):
    enabled: bool = Field(True, description="Evaluate and package (always on for a release).")
    split: Literal["test", "val"] = Field("test", description="Held-out split the metrics are computed on.")
    max_samples: int | None = Field(None, ge=1, le=10_000_000, description="Evaluate at most this many held-out images.")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per generation batch.")
    compute: str | None = Field(None, description="Compute hint (Modal GPU string) for evaluation and export.")
    baseline: BaselineModel | None = Field(
        None, description="A model scored beside this job's on the same held-out images: the service sets it to the "
        "default branch's released model for a branch's preview (its gate). Does not change what is trained.",
    )  # fmt: skip

    @field_validator("compute")
    @classmethod
    def _gpu_string(cls, v: str | None) -> str | None:
        return modal_gpu(v)
    min_gain: float = Field(
        0.05, ge=0, le=1,
        description="The released model must beat the base model's primary metric on validation by this much, "
        "or the job ends with a 'did not learn' verdict.",
    )  # fmt: skip
    min_parse_rate: float = Field(
        0.5, ge=0, le=1,
        description="Below this share of answers in the output format, the job ends with a 'did not learn' verdict.",
    )  # fmt: skip
    min_f1: float = Field(
        0.1, ge=0, le=1,
        description="Tasks with boxes: below this F1@0.5 of the released model on validation (it finds almost none "
        "of the objects with a box overlapping them by half), the job ends with a 'did not learn' verdict, however "
        "much its mean IoU rose over the base model's.",
    )  # fmt: skip


class ExportConfig(_Strict):
    quantization: Literal["nf4", "fp4", "none"] = Field("nf4", description="Weight format of the release model.")
    keep_16bit: list[str] = Field(
        default_factory=lambda: [
            "model.visual",
            "model.vision_tower",
            "model.vision_model",
            "model.multi_modal_projector",
            "model.connector",
            "lm_head",
        ],
        description="Module name prefixes kept in 16-bit (vision tower and projector: fully 4-bit small VLMs break).",
    )
    max_metric_drop: float = Field(
        0.02,
        ge=0,
        le=1,
        description="If the 4-bit model's primary metric falls more than this below full precision, the release "
        "artifact stays the 16-bit model and the job says so.",
    )


class DataConfig(_Strict):
    dataset: str = Field(
        "synthetic://retail-shelf?n=128&seed=1",
        max_length=2048,
        description="The domain dataset: folder, .zip, s3://, gs://, gridfs:// or synthetic://KIND?n=N&seed=S.",
    )
    warm_start_dataset: str = Field(
        "synthetic://generic?n=4000&seed=7", max_length=2048, description="Generic data for the warm-start stage."
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/val/test fractions when the dataset gives no split."
    )
    max_objects: int | None = Field(
        None, ge=1, le=100,
        description="Most objects per answer (the decoding cap). Unset: the most objects in one training image "
        f"of the dataset, at most {AUTO_MAX_OBJECTS} (the job logs the choice and warns about images holding more).",
    )  # fmt: skip
    augment: list[Literal["hflip", "mosaic", "rot90"]] = Field(
        default_factory=lambda: ["mosaic"],
        description="Augmentations of the domain training images. 'mosaic': each time stage 2 reads "
        "an image, it becomes a random window of a 2x2 mosaic of it and three other training images, so objects "
        "move and meet new neighbours; the model cannot memorise ~100 images. 'rot90': one of the image's 8 "
        "orientations at each read, for images without an up (overhead, microscopy, astronomy). 'hflip' adds a "
        "mirrored copy of each labelled image in stages 2 and 3 (boxes, masks, points and left/right keypoint "
        "names follow); an epoch still counts each labelled image once. Leave mirroring off where it changes "
        "the meaning (reading text or signs, left/right anatomy). Captions skip all three; [] turns them off.",
    )

    @field_validator("split")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split {list(v)} must be three non-negative fractions summing to 1, e.g. [0.8, 0.1, 0.1]")
        return v


