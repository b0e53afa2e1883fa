"""What a job checks before it trains, so a mistake costs seconds, not a stage: the longest
answer fits the model's positions, each stage fits its GPU, GRPO is not asked of an
encoder-decoder model, and the objects are large enough to be located.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import ConfigError, CurriculumConfig
from pipeline.models.loading import TINY_MODEL
from pipeline.objects import bins_for, smaller_sides
from pipeline.reporter import Reporter
from pipeline.stages.common import Context
from pipeline.structures import Dataset


def check_answer_length(ctx: Context, base: Path) -> None:
    """The longest answer the codec allows (``data.max_objects`` objects), after the image and the
    prompt, must fit the model's positions; else a job with many objects per image would fail
    (or be cut) mid-stage. Said now, naming the field to change."""
    import json

    from pipeline.estimate import model_shape

    try:
        raw = json.loads((Path(base) / "config.json").read_text())
    except (OSError, ValueError):
        return  # a hub model not on this disk yet: the stage itself will read its limits
    text = raw.get("text_config") or raw
    limit = text.get("max_position_embeddings") or raw.get("max_position_embeddings")
    found = model_shape(str(base))
    if not limit or found is None:
        return
    answer = ctx.domain_codec.max_new_tokens()
    need = found[1] + answer
    if need > int(limit):
        raise ConfigError(f"data.max_objects: {ctx.domain_codec.max_objects} objects make answers of up to {answer} tokens; "
                          f"with the image and the prompt that is about {need} positions, more than the model's "
                          f"{limit}. Lower data.max_objects, or tile the images so each holds fewer objects")  # fmt: skip


def check_fits(ctx: Context, base: Path, stages: set[str]) -> None:
    """Each training stage's memory and time, said before training; a stage that cannot fit
    its GPU (its ``compute`` hint, else this machine's card) fails the job now, with the numbers."""
    from pipeline.estimate import GIB, stage_estimates

    cuda = torch.cuda.get_device_properties(0).total_memory / GIB if ctx.device.kind == "cuda" else None
    for e in stage_estimates(ctx.cfg, base, stages, cuda, ctx.domain_codec.max_new_tokens()):
        ctx.reporter.log(e.line(), stage=e.stage)
        if not e.fits():
            raise ConfigError(f"{e.line()}: it does not fit. Turn lora on for this stage, lower its batch_size, or "
                              f"choose a larger GPU (compute)")  # fmt: skip


def refuse_grpo_on_encoder_decoder(cfg: CurriculumConfig, stages: set[str]) -> None:
    """TRL's GRPO generates and scores decoder-only sequences; an encoder-decoder (Florence-2)
    trains stage 3 by rejection sampling, whose steps are supervised (``pipeline.stages.seq2seq``)."""
    if cfg.model == TINY_MODEL or "reward" not in stages or not cfg.rl.enabled or cfg.rl.algorithm != "grpo":
        return
    from pipeline.codecs.auto import read_vocab

    try:
        vocab = read_vocab(cfg.model)
    except ValueError:
        return  # make_codec has said what it could not read
    if vocab.encoder_decoder:
        raise ConfigError(f"rl.algorithm: {vocab.model_type} is an encoder-decoder model, which TRL's GRPO cannot "
                          "train; set rl.algorithm to 'rft' (rejection sampling, supervised steps) or disable rl")  # fmt: skip


def log_object_sizes(cfg: CurriculumConfig, ds: Dataset, reporter: Reporter) -> None:
    """What the model can resolve of these objects: their sizes against one location bin and
    the built-in model's input size, said before training rather than after a failed job."""
    small = smaller_sides(ds.splits.get("train") or [])
    if not small:
        return
    p10, p50 = small[len(small) // 10], small[len(small) // 2]
    bin_frac = 1 / cfg.num_bins
    line = (f"objects: the smaller side of a box is {p50:.1%} of the image at the median and {p10:.1%} at the "
            f"10th percentile; a location bin is {bin_frac:.1%} (num_bins {cfg.num_bins})")  # fmt: skip
    if cfg.model == TINY_MODEL:
        line += f", and the built-in model sees {cfg.image_size} px images ({p10 * cfg.image_size:.1f} px for the small ones)"
    under = sum(side < bin_frac for side in small)
    if under > 0.2 * len(small):
        reporter.log(f"{line}: {under} of {len(small)} boxes are under one bin, and their corners cannot be told apart. "
                     f"Raise num_bins (e.g. {bins_for(p10)}) or tile the images",
                     level="warning")  # fmt: skip
    else:
        reporter.log(line)
