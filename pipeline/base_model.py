"""The job's base model: the model id or folder the config names, or DreamForge's own tiny
model built from random weights for this job's vocabulary, location tokens and data (its
image layout chosen by ``vision_layout``)."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import BUILTIN_PATCHES, CurriculumConfig
from pipeline.models.loading import TINY_MODEL
from pipeline.stages.common import Context, fresh_dir
from pipeline.structures import Dataset


def _vocabulary(*datasets: Dataset | None) -> list[str]:
    words: set[str] = set()
    for ds in datasets:
        if ds is None:
            continue
        words.update(w for c in ds.categories for w in c.split())
        for split in ds.splits.values():
            for s in split[:2000]:
                words.update(re.findall(r"[a-z]+", s.target.get("text", "").lower()))
    return sorted(words)


def vision_layout(cfg: CurriculumConfig, ds: Dataset) -> tuple[str, str]:
    """``(layout, why)`` of the built-in model (``vision_layout`` in the config)."""
    if cfg.vision_layout != "auto":
        return cfg.vision_layout, "set in the config"
    if cfg.task == "caption" or len(ds.categories) != 1:
        return "patch_tokens", f"{len(ds.categories)} categories: patch tokens tell them apart better"
    if cfg.image_size % BUILTIN_PATCHES:
        return "patch_tokens", f"image_size {cfg.image_size} is not a multiple of {BUILTIN_PATCHES}"
    return "one_token", "one category: where each object is matters more than telling categories apart"


def prepare_base_model(ctx: Context) -> Path:
    cfg = ctx.cfg
    if cfg.model != TINY_MODEL:
        return Path(cfg.model) if Path(cfg.model).exists() else cfg.model  # type: ignore[return-value]
    base = ctx.out / "base-model"
    if (base / "dreamforge_model.json").exists():
        return base
    from pipeline.models.tiny import build_tiny_vlm

    tokens = list(dict.fromkeys(ctx.domain_codec.special_tokens() + (ctx.warm_codec.special_tokens() if ctx.warm_codec else [])))
    layout, why = vision_layout(cfg, ctx.domain)
    ctx.reporter.log(f"vision_layout: {layout} ({why})")
    tmp = base.with_name("base-model.partial")
    fresh_dir(tmp)
    if layout == "one_token":
        # Idefics3's pixel shuffle folds all 8x8 patches into ONE image token, each patch in
        # its own slice of the vector, so where an object is reads linearly from the token.
        # With LLaVA's patch tokens a model trained from random weights must first learn to
        # attend to the object's token, and on objects under a patch it never did (one small
        # blob per image: 0.02 held-out IoU against 0.16; benchmarks/results/2026-12-07-real-images).
        shape = dict(family="idefics3", patch=cfg.image_size // BUILTIN_PATCHES, merge=BUILTIN_PATCHES)
    else:
        # 16 image tokens: patch 8 (64 tokens) learned slower per second on a CPU, and so did
        # a wider/deeper text model (curriculum probes, README "What we tried").
        shape = dict(family="llava", patch=max(8, cfg.image_size // 4))
    build_tiny_vlm(
        tmp,
        special_tokens=tokens,
        extra_words=_vocabulary(ctx.domain, ctx.warm),
        image_size=cfg.image_size,
        seed=cfg.seed,
        **shape,
    )
    if base.exists():
        fresh_dir(base).rmdir()
    tmp.rename(base)
    return base
