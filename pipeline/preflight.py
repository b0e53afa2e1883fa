"""Preflight: what a curriculum will meet, said before it spends a GPU-second.

``preflight(cfg, ds, reward)`` reads the loaded domain dataset, tries the reward on its ground
truth, and estimates each stage's wall time and price on the stage's Modal GPU. Every problem
is a *finding* ``{check, severity, message, fix}`` with severity ``info``, ``warning`` or
``error``; ``dreamforge preflight`` exits 1 and ``POST /api/preflight`` answers ``ok: false``
when any finding is an error.

Duplicates across splits (leakage): pixel-identical images are exact duplicates (an error).
Near-duplicates (a warning) are found in two steps. The first is a 64-bit difference hash
(dHash: a 9×8 grayscale thumbnail, one bit per horizontal gradient); pairs within
``NEAR_BITS`` bits are candidates. The second is the Pearson correlation of 16×16 colour
thumbnails, which must reach ``NEAR_CORR``. ``imagehash`` is not a dependency, and numpy does
this in a few lines.

Colour matters: the synthetic shelves hold one layout with a red product or a blue one, and
grayscale thumbnails correlate at 0.997 for such a pair. The thresholds are set to raise no
false alarm on ``synthetic://retail-shelf?n=5000`` (3.8 million train × held-out pairs; among
the candidates, distinct images correlate up to 0.994). On those 64-px, flat images, a copy resized to ¾ and saved as
JPEG correlates at only 0.98 to 0.996, so such copies are not always caught. Photographs hold
more detail than those flat shelves.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from typing import Any

import numpy as np

from pipeline.config import REWARD_SCOPES, CurriculumConfig
from pipeline.cost import (  # noqa: F401 — the cost half of the report, importable from here too
    CPU_MEMORY_USD_PER_HOUR,
    GPU_USD_PER_HOUR,
    STEP_TIMES,
    cost_estimate,
    reward_name,
    step_time,
)
from pipeline.findings import SEVERITIES, finding
from pipeline.objects import auto_max_objects, bins_for, object_count, smaller_sides
from pipeline.sealed import parse_reward_ref
from pipeline.sizing import sized
from pipeline.structures import KIND_WORDS, WEAK_TASKS, Dataset, Sample

UNDER_BIN_SHARE = 0.2  # above this share of boxes under one bin, corners blur together (pipeline.verdict)
IMBALANCE = 10.0  # most / least objects of a class in training, above which the rare class is a warning
ZERO_VARIANCE_WARN = 0.3
TINY_SIDE, HUGE_SIDE = 32, 4096  # px: a smaller side under TINY_SIDE, or a larger side over HUGE_SIDE
NEAR_BITS, NEAR_CORR = 10, 0.995
SIZE_BUCKETS = ((0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, math.inf))  # a box's smaller side, in bins

def preflight(cfg: CurriculumConfig, ds: Dataset, reward: Any = None, *, samples: int = 32,
              default_gpu: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole report: ``{dataset, reward, cost, findings, errors, ok}``. ``reward`` is a
    loaded reward (None: not tried); ``default_gpu`` names each stage's GPU where the config
    gives no ``compute`` hint (the deployment's defaults)."""
    findings: list[dict[str, str]] = []
    cfg = sized(cfg, ds)  # image_size and num_bins as the job will choose them from this data
    report: dict[str, Any] = {"dataset": dataset_health(cfg, ds, findings)}
    report["reward"] = reward_health(cfg, ds, reward, findings, samples=samples) if reward is not None else None
    report["cost"] = cost_estimate(cfg, ds, findings, default_gpu or {})
    findings.sort(key=lambda f: -SEVERITIES.index(f["severity"]))
    report["findings"] = findings
    report["errors"] = sum(f["severity"] == "error" for f in findings)
    report["ok"] = report["errors"] == 0
    return report


def run_preflight(cfg: CurriculumConfig, *, label: str | None = None, reward: Any = None, samples: int = 32,
                  default_gpu: dict[str, str] | None = None) -> dict[str, Any]:
    """Load ``cfg.data.dataset`` as the job would (its seed and split), load the job's reward
    unless one is given (the service passes a stored JavaScript reward), and :func:`preflight`.
    ``label`` names the dataset in messages instead of its URI. Raises ``DataError``,
    ``RewardError`` or ``ValueError`` naming the problem."""
    from pipeline.data import load_dataset

    ds = load_dataset(cfg.data.dataset, cfg.task, seed=cfg.seed, fractions=tuple(cfg.data.split), label=label)
    own = reward is None and cfg.rl.enabled
    if own:
        reward = load_reward(cfg, ds)
    try:
        return preflight(cfg, ds, reward, samples=samples, default_gpu=default_gpu)
    finally:
        if own and hasattr(reward, "close"):
            reward.close()


# -- dataset ---------------------------------------------------------------------------------------
def dataset_health(cfg: CurriculumConfig, ds: Dataset, findings: list) -> dict[str, Any]:
    samples = [s for split in ds.splits.values() for s in split]
    train = ds.splits.get("train") or []
    out: dict[str, Any] = {"name": ds.name, "images": {k: len(v) for k, v in ds.splits.items()}}
    kinds = Counter(s.label_kind for s in samples)
    out["label_kinds"] = dict(kinds)
    _label_kinds(cfg, ds, kinds, findings)
    if not train:
        findings.append(finding("splits", "error", "the training split is empty", "add labelled images to the train split"))
    if not ds.splits.get(cfg.evaluate.split):
        findings.append(finding("splits", "error", f"the {cfg.evaluate.split} split is empty: nothing to score the model on",
                                f"add a {cfg.evaluate.split} split, or set data.split so that it gets images"))  # fmt: skip
    out["classes"] = _class_balance(ds, train, findings)
    out["box_sizes"] = _box_sizes(cfg, train, findings)
    out["objects_per_image"] = _objects(cfg, ds, train, findings)
    out["loader_warnings"] = _loader_warnings(ds, findings)
    out["duplicates"] = _duplicates(ds, findings)
    out["image_sizes"] = _image_sizes(samples, findings)
    return out


def load_reward(cfg: CurriculumConfig, ds: Dataset):
    """The job's reward, loaded and checked (a built-in, a ``.js`` path or ``example:NAME``)."""
    from pipeline.rewards.probe import load_any_reward

    return load_any_reward(reward_name(cfg, ds), cfg.task)


def _label_kinds(cfg: CurriculumConfig, ds: Dataset, kinds: Counter, findings: list) -> None:
    if cfg.task not in WEAK_TASKS:
        return  # every image of the other tasks is fully labelled
    line = ", ".join(f"{n} {KIND_WORDS[k]}" for k, n in kinds.items())
    findings.append(finding("label_kinds", "info", f"images by label: {line or 'none'}"))
    name = reward_name(cfg, ds)
    scope = REWARD_SCOPES.get(name)
    weak = {k: n for k, n in kinds.items() if k not in ("full", "none")}
    if scope is not None and cfg.rl.enabled and weak:
        unused = {k: n for k, n in weak.items() if k not in (cfg.rl.label_kinds or scope.label_kinds)}
        if unused:
            what = ", ".join(f"{n} {KIND_WORDS[k]}" for k, n in unused.items())
            findings.append(finding("label_kinds", "warning",
                                    f"stage 3's reward {name!r} cannot score {what} images: they train nothing",
                                    "use reward 'points' (clicks) or 'count' (counts and clicks) for them"))  # fmt: skip


def _class_balance(ds: Dataset, train: list[Sample], findings: list) -> dict[str, int]:
    counts = Counter({c: 0 for c in ds.categories})
    for s in train:
        if s.label_kind == "full":
            counts.update(s.target.get("labels") or [])
        elif s.label_kind == "points":
            counts.update(x for x in s.target.get("point_labels") or [] if x)
        elif s.label_kind == "counts":
            counts.update({k: int(v) for k, v in (s.target.get("counts") or {}).items()})
    if ds.task == "caption" or not counts:
        return dict(counts)
    unseen = [c for c, n in counts.items() if n == 0]
    if unseen:
        findings.append(finding("class_balance", "warning",
                                f"{len(unseen)} class(es) have no object in the training split: {', '.join(unseen[:5])}",
                                "label training images of them, or drop them from the categories"))  # fmt: skip
    seen = {c: n for c, n in counts.items() if n}
    if len(seen) > 1 and max(seen.values()) > IMBALANCE * min(seen.values()):
        rare = min(seen, key=seen.get)
        common = max(seen, key=seen.get)
        findings.append(finding("class_balance", "warning",
                                f"classes are imbalanced: {common!r} has {seen[common]} training objects, {rare!r} only {seen[rare]}",
                                f"label more images of {rare!r} (at least 1/{IMBALANCE:g} of the most common class)"))  # fmt: skip
    return dict(counts)


def _box_sizes(cfg: CurriculumConfig, train: list[Sample], findings: list) -> dict[str, Any]:
    sides = smaller_sides(train)
    in_bins = [x * cfg.num_bins for x in sides]
    hist = [{"bins": f"{lo}–{hi}" if hi != math.inf else f"{lo}+", "boxes": sum(lo <= b < hi for b in in_bins)}
            for lo, hi in SIZE_BUCKETS]  # fmt: skip
    under = sum(b < 1 for b in in_bins)
    share = under / len(sides) if sides else 0.0
    if share > UNDER_BIN_SHARE:
        p10 = sides[len(sides) // 10]
        findings.append(finding("box_sizes", "warning",
                                f"{under} of {len(sides)} training boxes ({share:.0%}) are smaller than one location bin "
                                f"(1/{cfg.num_bins} of the image): their corners cannot be told apart",
                                f"raise num_bins to {bins_for(p10)}, or tile the images so objects are larger"))  # fmt: skip
    return {"num_bins": cfg.num_bins, "histogram": hist, "under_one_bin": round(share, 4), "boxes": len(sides)}


def _objects(cfg: CurriculumConfig, ds: Dataset, train: list[Sample], findings: list) -> dict[str, Any]:
    cap = cfg.data.max_objects or auto_max_objects(ds)
    counts = [object_count(s) for s in train]
    over = [c for c in counts if c > cap]
    if over:
        most = max(over)
        fix = (f"set data.max_objects to {most}" if most <= 100 else
               "tile the images: an answer holds at most 100 objects")  # fmt: skip
        source = "data.max_objects" if cfg.data.max_objects else "the automatic data.max_objects"
        findings.append(finding("max_objects", "warning",
                                f"{len(over)} of {len(counts)} training images hold more objects than {source}={cap} "
                                f"(up to {most}): the rest cannot be answered", fix))  # fmt: skip
    return {"max_objects": cap, "most": max(counts, default=0), "over": len(over),
            "mean": round(statistics.fmean(counts), 2) if counts else 0.0}  # fmt: skip


def _loader_warnings(ds: Dataset, findings: list) -> dict[str, Any]:
    geometry = [w for w in ds.warnings if "outside" in w or "no area" in w or "degenerate" in w]
    other = [w for w in ds.warnings if w not in geometry]
    if geometry:
        findings.append(finding("boxes", "warning",
                                f"{len(geometry)} annotation(s) lie outside their image or have no area and were dropped; "
                                f"first: {geometry[0]}", "fix those annotations at their source and upload again"))  # fmt: skip
    if other:
        findings.append(finding("loader", "warning", f"{len(other)} other problem(s) while loading; first: {other[0]}",
                                "fix the files or annotations the messages name"))  # fmt: skip
    return {"out_of_bounds_or_degenerate": len(geometry), "other": len(other), "first": ds.warnings[:5]}


def _thumb(img) -> tuple[int, np.ndarray, str]:
    from PIL import Image

    g = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.float32)
    bits = (g[:, 1:] > g[:, :-1]).ravel()  # 8×8 horizontal gradients
    # in colour: the same shelf with a red product or a blue one is two images, not one
    t = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BOX), dtype=np.float32).ravel()
    t = (t - t.mean()) / (t.std() + 1e-3)
    exact = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest() + f"{img.size}"
    return int(np.packbits(bits).view(">u8")[0]), t, exact


def _duplicates(ds: Dataset, findings: list) -> dict[str, Any]:
    held = [k for k in ("val", "test") if ds.splits.get(k)]
    train = [s for s in ds.splits.get("train") or [] if s.pixels is not None]  # pixels: a lazy image is not decoded twice
    out: dict[str, Any] = {"method": f"dHash 64-bit within {NEAR_BITS} bits + 16×16 colour thumbnail correlation ≥ {NEAR_CORR}",
                           "exact": [], "near": []}  # fmt: skip
    if not train or not held:
        return out
    ta = [_thumb(s.image) for s in train]
    ha = np.array([h for h, _, _ in ta], dtype=np.uint64)
    va = np.stack([t for _, t, _ in ta])
    by_exact = {e: s.file_name for s, (_, _, e) in zip(train, ta, strict=True)}
    for split in held:
        for s in ds.splits[split]:
            if s.pixels is None:
                continue
            h, t, e = _thumb(s.image)
            if e in by_exact:
                out["exact"].append({"split": split, "file": s.file_name, "train_file": by_exact[e]})
                continue
            cand = np.nonzero(np.bitwise_count(ha ^ np.uint64(h)) <= NEAR_BITS)[0]
            if len(cand):
                corr = va[cand] @ t / t.size
                best = int(np.argmax(corr))
                if corr[best] >= NEAR_CORR:
                    out["near"].append({"split": split, "file": s.file_name, "train_file": train[cand[best]].file_name,
                                        "similarity": round(float(corr[best]), 4)})  # fmt: skip
    for kind, sev, what in (("exact", "error", "repeat"), ("near", "warning", "nearly repeat")):
        pairs = out[kind]
        if pairs:
            ex = ", ".join(f"{p['file']} ({p['split']}) = {p['train_file']} (train)" for p in pairs[:3])
            findings.append(finding("leakage", sev,
                                    f"{len(pairs)} held-out image(s) {what} training images, so held-out metrics overstate "
                                    f"the model: {ex}", "remove each from one of the splits (or re-split by scene/source)"))  # fmt: skip
    return out


def _image_sizes(samples: list[Sample], findings: list) -> dict[str, Any]:
    if not samples:
        return {}
    tiny = [s for s in samples if min(s.width, s.height) < TINY_SIDE]
    huge = [s for s in samples if max(s.width, s.height) > HUGE_SIDE]
    if tiny:
        findings.append(finding("image_sizes", "warning",
                                f"{len(tiny)} image(s) are under {TINY_SIDE} px on a side, e.g. {tiny[0].file_name} "
                                f"({tiny[0].width}×{tiny[0].height})", "use the original, larger images"))  # fmt: skip
    if huge:
        findings.append(finding("image_sizes", "info",
                                f"{len(huge)} image(s) are over {HUGE_SIDE} px on a side, e.g. {huge[0].file_name} "
                                f"({huge[0].width}×{huge[0].height}): loading is slow and the model sees them downscaled",
                                "downscale them before upload, or tile them when objects are small"))  # fmt: skip
    areas = sorted(samples, key=lambda s: s.width * s.height)
    return {"smallest": [areas[0].width, areas[0].height], "largest": [areas[-1].width, areas[-1].height],
            "tiny": len(tiny), "huge": len(huge)}  # fmt: skip


# -- reward ----------------------------------------------------------------------------------------
def reward_health(cfg: CurriculumConfig, ds: Dataset, reward: Any, findings: list, *, samples: int = 32) -> dict[str, Any]:
    """The reward on ground truth against perturbed copies (``pipeline.rewards.probe``), and the
    share of groups, one per image of its four answers, whose scores are all equal: GRPO's
    advantage is zero for such a group, so its image teaches nothing."""
    from pipeline.rewards.base import reward_target
    from pipeline.rewards.probe import CASES, case_rows, case_scores

    pool = [s for split in ("train", "val", "test") for s in ds.splits.get(split) or [] if s.label_kind == "full"]
    targets = [reward_target(s.target, cfg.task) for s in pool[:samples]]
    if not targets:
        findings.append(finding("reward", "warning", "no fully labelled image to try the reward on",
                                "label some images with boxes"))  # fmt: skip
        return {"samples": 0}
    stored = parse_reward_ref(cfg.reward)
    name = stored[1] if stored else reward_name(cfg, ds)
    by_case = case_scores(reward, targets, seed=cfg.seed)
    rows = case_rows(by_case)
    groups = [[by_case[c][i] for c in CASES] for i in range(len(targets))]
    zero = sum(max(g) - min(g) < 1e-9 for g in groups) / len(groups)
    if cfg.rl.enabled and zero >= 1.0:
        findings.append(finding("reward", "error" if cfg.rl.algorithm == "grpo" else "warning",
                                f"the reward {name!r} scores every perturbed answer of every image alike: "
                                "100 % of GRPO groups have zero variance, so RL learns nothing",
                                "use a reward that ranks exact above shifted, missing and extra answers (try "
                                "`dreamforge reward test`), or disable rl"))  # fmt: skip
    elif cfg.rl.enabled and zero >= ZERO_VARIANCE_WARN:
        findings.append(finding("reward", "warning",
                                f"{zero:.0%} of GRPO groups have zero variance: RL learns nothing from those images",
                                "make the reward tell the perturbations apart for those images"))  # fmt: skip
    means = {r["case"]: r["mean"] for r in rows}
    if means["exact"] < max(means.values()) - 1e-9:
        worse = max(means, key=means.get)
        findings.append(finding("reward", "warning", f"a {worse} answer scores higher than the exact one "
                                f"({means[worse]:.3f} > {means['exact']:.3f}): RL would learn the mistake",
                                "check the reward on `dreamforge reward test` and fix its ranking"))  # fmt: skip
    return {"name": name, "samples": len(targets), "cases": rows, "zero_variance_share": round(zero, 4)}
