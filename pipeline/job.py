"""Run a curriculum: the four stages in order, resuming at the first unfinished one.

Each stage reads the previous stage's checkpoint and writes its own under
``OUTPUT/stages/<stage>/`` with a ``DONE.json`` marker written last, so a job that dies
anywhere resumes at its first unfinished stage. The service (``dreamforge``) drives this same
function with a MongoDB reporter.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.augment import ONLINE, STATIC
from pipeline.base_model import prepare_base_model, vision_layout  # noqa: F401 — re-exported
from pipeline.budget import with_stage_budget
from pipeline.card import write_model_card
from pipeline.codec import Codec
from pipeline.config import STAGES, ConfigError, CurriculumConfig, config_hash  # noqa: F401 — re-exported
from pipeline.data import label_summary, load_dataset
from pipeline.data.errors import DataError
from pipeline.device import pick_device
from pipeline.fence import Fence
from pipeline.geometry import default_sigmas
from pipeline.job_checks import (  # noqa: F401 — check_answer_length re-exported
    check_answer_length,
    check_fits,
    log_object_sizes,
    refuse_grpo_on_encoder_decoder,
)
from pipeline.models.loading import TINY_MODEL
from pipeline.objects import auto_max_objects
from pipeline.ranks import is_main, main_first, wait_for_everyone
from pipeline.reporter import BaseReporter, Reporter
from pipeline.rewards.builtin import default_reward, get_reward
from pipeline.sizing import sized
from pipeline.stage_table import BY_NUMBER
from pipeline.stages.common import Context, fresh_dir, fully_labelled, is_done, mark_done, read_done
from pipeline.structures import KIND_WORDS, Dataset, Sample


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_js_reward(name: str) -> bool:
    return name.endswith(".js") or name.startswith("example:")


def resolve_reward(cfg: CurriculumConfig, reporter: Reporter | None = None, domain: Dataset | None = None):
    """The job's reward; a JavaScript reward is started in its sandbox and checked on a
    sample now, so a broken one fails the job before any training. ``"default"`` depends on
    the labels of ``domain`` when given (:func:`default_reward`)."""
    name = default_reward(cfg.task, domain, reporter) if cfg.reward == "default" else cfg.reward
    if is_js_reward(name):
        from pipeline.rewards.js import JsLimits, JsReward, check_reward, load_js_reward
        from pipeline.sealed import parse_reward_ref

        rl = cfg.rl
        limits = JsLimits(batch_timeout_s=rl.reward_timeout_s, sample_timeout_ms=rl.reward_sample_timeout_ms,
                          heap_mb=rl.reward_memory_mb)  # fmt: skip

        def warn(e) -> None:
            if reporter is not None:
                reporter.log(f"{e} (scored 0)", level="warning", stage="reward")

        kw = {"seed": cfg.seed, "on_error": rl.reward_errors, "limits": limits, "on_sample_error": warn}
        stored = parse_reward_ref(name)
        if stored is None:
            reward = load_js_reward(name, **kw)
        elif cfg.reward_source is None:  # a hand-written config naming a stored reward, not a sealed one
            raise ConfigError(f"reward: {name!r} names a reward stored with a job; its source comes only with "
                              "the job's sealed config")  # fmt: skip
        else:  # checked against the sha256 in its name when the sealed config was opened
            reward = JsReward(cfg.reward_source, stored[1], **kw)
        check_reward(reward, cfg.task)
        return reward
    try:
        if name == "oks" and domain is not None:  # COCO's sigmas for COCO's person skeleton
            return get_reward(name, sigmas=default_sigmas(domain.keypoint_names))
        return get_reward(name)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"reward: {e}") from None


def make_codec(cfg: CurriculumConfig, ds: Dataset, reporter: Reporter | None = None) -> Codec:
    cfg = sized(cfg, ds)  # a no-op for the job's own (already sized) config
    if reporter is not None:
        log_object_sizes(cfg, ds, reporter)
    from pipeline.codecs.auto import codec_for_model

    model = None if cfg.model == TINY_MODEL else cfg.model
    try:
        codec, why = codec_for_model(model, cfg.codec, cfg.task, ds.categories, num_bins=cfg.num_bins,
                                     max_objects=cfg.data.max_objects or auto_max_objects(ds, reporter),
                                     keypoint_names=ds.keypoint_names or None)  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"codec: {e}") from None
    if reporter is not None:
        reporter.log(f"output format {codec.format}: {why}")
    return codec


def load_data(cfg: CurriculumConfig, stages: set[str], reporter: Reporter) -> tuple[Dataset, Dataset | None]:
    domain = load_dataset(cfg.data.dataset, cfg.task, seed=cfg.seed, fractions=tuple(cfg.data.split))
    for w in domain.warnings:
        reporter.log(w, level="warning")
    warm = None
    if "warm_start" in stages and cfg.warm_start.enabled:
        warm = load_dataset(cfg.data.warm_start_dataset, cfg.task, seed=cfg.seed, fractions=(1.0, 0.0, 0.0))
        for w in warm.warnings:
            reporter.log(w, level="warning")
    return domain, warm


def run_job(
    cfg: CurriculumConfig,
    out: str | Path,
    *,
    stages: list[int] | None = None,
    reporter: Reporter | None = None,
    fence: Fence | None = None,
    data: tuple[Dataset, Dataset | None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the curriculum into ``out``; return the metrics record. With a
    ``fence`` (the service's runs), every model and ``DONE.json`` is written only while this
    process's attempt still owns the job (``pipeline.fence``). ``data``: the domain and warm-start
    datasets already loaded (benchmarks and tests that build their own), instead of the config's."""
    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or BaseReporter()
    wanted = {BY_NUMBER[i].name for i in (stages or list(BY_NUMBER))}
    claim_output(cfg, out)
    ctx, base = prepare_context(cfg, out, reporter, fence, wanted, data)
    stage_info = run_stages(ctx, wanted, base)
    record = {
        "name": cfg.name,
        "task": cfg.task,
        "model": cfg.model,
        "dataset": cfg.data.dataset,
        "reward": getattr(ctx.reward, "name", str(ctx.reward)),
        "device": ctx.device.kind,
        "stages": stage_info,
        "wall_seconds": round(time.monotonic() - t_start, 2),
    }
    evaluation = stage_info.get("evaluate", {}).get("evaluation")
    if evaluation:
        record["evaluation"] = evaluation
    if is_main():
        with ctx.publish():
            if evaluation:
                write_model_card(out, ctx.cfg, record)
            (out / "metrics.json").write_text(json.dumps(record, indent=1))
    if hasattr(ctx.reward, "close"):
        ctx.reward.close()  # the JavaScript reward's worker process
    return record


def claim_output(cfg: CurriculumConfig, out: Path) -> None:
    """Write the job's config into ``out``; refuse a folder that holds finished stages of another
    config (resuming those would mix two jobs)."""
    chash = config_hash(cfg)
    cfg_file = out / "config.json"
    if cfg_file.exists():
        previous = json.loads(cfg_file.read_text())
        if previous.get("_hash") != chash and any(is_done(out / "stages" / s) for s in STAGES):
            raise ConfigError(
                f"{out} holds a job with a different config; resume needs the same config "
                "(use a new --output, or delete the folder to start over)"
            )
    if is_main():  # under accelerate launch, one process writes (pipeline.ranks)
        cfg_file.write_text(json.dumps({**cfg.model_dump(mode="json", by_alias=True), "_hash": chash}, indent=1))


def prepare_context(cfg: CurriculumConfig, out: Path, reporter: Reporter, fence: Fence | None, wanted: set[str],
                    data: tuple[Dataset, Dataset | None] | None) -> tuple[Context, Path]:  # fmt: skip
    """Everything the stages share, checked before any of them trains: the device, the data, the
    reward (started and tried), the codecs, the held-out set, the base model and its fit."""
    seed_everything(cfg.seed)
    device = pick_device()
    reporter.log(f"device {device.kind}, precision {str(device.dtype).removeprefix('torch.')}")
    domain, warm = data if data is not None else load_data(cfg, wanted, reporter)
    cfg = sized(cfg, domain, reporter)  # image_size, num_bins: auto
    reward = resolve_reward(cfg, reporter, domain)
    reporter.log(
        f"dataset {domain.name}: " + "; ".join(f"{k} {label_summary(v)}" for k, v in domain.splits.items())
    )
    ctx = Context(
        cfg=cfg,
        device=device,
        reporter=reporter,
        out=out,
        domain=domain,
        domain_codec=make_codec(cfg, domain, reporter),
        warm=warm,
        warm_codec=make_codec(cfg, warm) if warm else None,
        reward=reward,
        fence=fence,
    )
    refuse_grpo_on_encoder_decoder(cfg, wanted)
    if cfg.evaluate.enabled:  # whichever stage this process runs: fail before training, not after it
        from pipeline.stages.evaluate import held_out

        held_out(ctx)
    if hasattr(reward, "prepare"):  # e.g. the points reward's box-size prior, before stage 3 and evaluation
        boxed = fully_labelled(domain.splits.get("train") or [])
        reward.prepare(boxed)
        reporter.log(f"reward {reward.name}: prepared on the {len(boxed)} fully labelled training images")
    with main_first():  # the main process builds the tiny base model; the others then find it
        base = prepare_base_model(ctx)
    check_answer_length(ctx, base)
    check_fits(ctx, base, wanted)
    return ctx, base


def run_stages(ctx: Context, wanted: set[str], base: Path) -> dict[str, Any]:
    """Each stage in order: a finished one is read back (resume), one not wanted or disabled is
    skipped, the others run; returns what each stage reported."""
    cfg, reporter = ctx.cfg, ctx.reporter
    checkpoints: dict[str, Path] = {"base": base}
    stage_info: dict[str, Any] = {}
    previous = base
    for stage in STAGES:
        sdir = ctx.stage_dir(stage)
        if is_done(sdir):
            info = read_done(sdir)
            stage_info[stage] = {**info, "resumed": True}
            if stage != "evaluate" and (sdir / "model").exists():
                checkpoints[stage] = previous = sdir / "model"
            if stage in wanted:  # the service runs one stage a process: the others are not news
                reporter.stage_state(stage, "skipped", reason="already finished")
                reporter.progress(stage, 1.0)
            continue
        if stage not in wanted:
            stage_info[stage] = {"state": "skipped"}
            continue
        if not cfg.stage(stage).enabled:
            stage_info[stage] = {"state": "skipped"}
            reporter.stage_state(stage, "skipped", reason="disabled in the config")
            continue
        stage_info[stage] = run_stage(ctx, stage, previous, checkpoints, stage_info)
        if stage != "evaluate":
            checkpoints[stage] = previous = sdir / "model"
    return stage_info


def run_stage(ctx: Context, stage: str, previous: Path, checkpoints: dict[str, Path],
              stage_info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Run one stage into its emptied folder and publish its ``DONE.json``; returns its info."""
    cfg, reporter, sdir = ctx.cfg, ctx.reporter, ctx.stage_dir(stage)
    reporter.stage_state(stage, "running")
    reporter.progress(stage, 0.0)
    if is_main():
        with ctx.publish():  # a stale process must not empty the new owner's folder either
            fresh_dir(sdir)
    wait_for_everyone()  # nobody trains into the folder before it is emptied
    t0 = time.monotonic()
    if stage == "evaluate":  # one process evaluates and writes the release; the others wait below
        info = {"evaluation": _evaluate(ctx, checkpoints)} if is_main() else {}
    else:
        spent = sum(float(i.get("seconds") or 0.0) for i in stage_info.values())
        ctx.cfg, why = with_stage_budget(cfg, stage, spent)
        reporter.log(f"stage {stage} trains for at most {why}", stage=stage)
        try:
            info = _train(ctx, stage, previous)
        finally:
            ctx.cfg = cfg
        if stage == "reward" and hasattr(ctx.reward, "errors"):
            # samples a JavaScript reward failed on and that were scored 0 (reward_errors: zero)
            info["reward_errors"] = ctx.reward.errors
    info.update(state="completed", seconds=round(time.monotonic() - t0, 2))
    if ctx.fence is not None:
        info["attempt"] = ctx.fence.token  # which attempt of the job published the stage
    with ctx.publish():
        mark_done(sdir, info)
    wait_for_everyone()  # the next stage reads this one's model: all wait until it is saved
    reporter.stage_state(stage, "completed", seconds=info["seconds"])
    reporter.progress(stage, 1.0)
    return info


def _train(ctx: Context, stage: str, previous: Path) -> dict[str, Any]:
    cfg = ctx.cfg
    out_model = ctx.checkpoint(stage)
    if stage == "warm_start":
        from pipeline.stages.sft import train_sft

        assert ctx.warm is not None and ctx.warm_codec is not None
        return train_sft(ctx, stage, previous, fully_labelled(ctx.warm.splits["train"]), ctx.warm_codec,
                         cfg.warm_start, out_model)  # fmt: skip
    if stage == "domain":
        from pipeline.stages.sft import train_sft

        labelled = fully_labelled(ctx.domain.splits["train"])
        if not labelled:
            raise DataError(f"dataset {ctx.domain.name}: domain SFT needs fully labelled training images and has "
                            f"none ({kind_counts(ctx.domain.splits['train'])}); box every object of some images, "
                            "or disable the domain stage")  # fmt: skip
        return train_sft(ctx, stage, previous, augmented_train(ctx, stage), ctx.domain_codec, cfg.domain, out_model,
                         epoch_examples=len(labelled), online=online_augments(ctx, stage))  # fmt: skip
    from pipeline.stages.grpo import train_grpo
    from pipeline.stages.rft import train_rft

    train = train_rft if cfg.rl.algorithm == "rft" else train_grpo
    return train(ctx, stage, previous, reward_train(ctx, stage), ctx.domain_codec, cfg.rl, out_model)


def kind_counts(samples: list[Sample]) -> str:
    """``"40 boxed, 300 clicked"``: how many images of each label kind."""
    n: dict[str, int] = {}
    for s in samples:
        n[s.label_kind] = n.get(s.label_kind, 0) + 1
    return ", ".join(f"{v} {KIND_WORDS.get(k, k)}" for k, v in n.items()) or "no images"


def reward_train(ctx: Context, stage: str) -> list[Sample]:
    """Stage 3's images: every training image whose label kind the reward can score
    (``rl.label_kinds``, else the reward's own ``label_kinds``); the boxed ones with the
    config's augmentations."""
    kinds = ctx.cfg.rl.label_kinds or getattr(ctx.reward, "label_kinds", ("full",))
    train = ctx.domain.splits["train"]
    weak = [s for s in train if s.label_kind != "full" and s.label_kind in kinds]
    samples = (augmented_train(ctx, stage) if "full" in kinds else []) + weak
    name = getattr(ctx.reward, "name", "reward")
    if not samples:
        raise ConfigError(
            f"reward: stage 3 has no training images its reward can score: the {name!r} reward scores "
            f"{', '.join(KIND_WORDS.get(k, k) for k in kinds)} images and the training split holds "
            f"{kind_counts(train)}; choose a reward for those labels (points, count), or set rl.label_kinds"
        )  # fmt: skip
    ctx.reporter.log(f"stage 3 trains on {len(samples)} images: {kind_counts(samples)}", stage=stage)
    return samples


def augmented_train(ctx: Context, stage: str) -> list:
    """The fully labelled images of the domain training split, with the config's augmentations
    (``pipeline.augment``)."""
    labelled = fully_labelled(ctx.domain.splits["train"])
    names = [n for n in ctx.cfg.data.augment if n in STATIC]
    if ctx.cfg.task == "caption" and "hflip" in names:
        names.remove("hflip")
        ctx.reporter.log("data.augment: hflip skipped, captions name left and right", stage=stage, level="warning")
    if not names:
        return labelled
    from pipeline.augment import augment

    samples = augment(labelled, names, ctx.domain.keypoint_names)
    ctx.reporter.log(f"data.augment: {', '.join(names)}: {len(labelled)} labelled images + "
                     f"{len(samples) - len(labelled)} augmented copies", stage=stage)  # fmt: skip
    return samples


def online_augments(ctx: Context, stage: str) -> list[str]:
    """The config's augmentations drawn at each read (``pipeline.online_augment``); none for
    captions, which name left, right, top and bottom."""
    names = [n for n in ctx.cfg.data.augment if n in ONLINE]
    if names and ctx.cfg.task == "caption":
        if "augment" in ctx.cfg.data.model_fields_set:  # the default's mosaic skips silently
            ctx.reporter.log(f"data.augment: {', '.join(names)} skipped, captions name left, right, top and bottom",
                             stage=stage, level="warning")  # fmt: skip
        return []
    if names:
        ctx.reporter.log(f"data.augment: {', '.join(names)} drawn afresh each time a training image is read",
                         stage=stage)  # fmt: skip
    return names


def _evaluate(ctx: Context, checkpoints: dict[str, Path]) -> dict[str, Any]:
    from pipeline.stages.evaluate import run_evaluate

    return run_evaluate(ctx, checkpoints)
