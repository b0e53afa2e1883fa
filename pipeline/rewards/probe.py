"""Check a reward before paying for a GPU job: score ground truth against perturbed copies.

``probe_reward`` runs a reward on a few ground truths of a dataset against predictions that
are exact, shifted, missing an object, or carry an extra one, and summarises each case (mean,
min, max, spread). A good reward ranks ``exact`` highest and separates the others; a reward
that scores everything alike gives GRPO no signal. Used by ``dreamforge reward test`` and
``POST /api/rewards/test``.
"""

from __future__ import annotations

import copy
import random
import statistics
import urllib.parse
from typing import Any

CASES = ("exact", "shifted", "missing", "extra")


def _shift_box(b: list[float], dx: float, dy: float, w: int, h: int) -> list[float]:
    return [min(max(b[0] + dx, 0), w), min(max(b[1] + dy, 0), h), min(max(b[2] + dx, 0), w), min(max(b[3] + dy, 0), h)]


def perturb(gt: dict[str, Any], case: str, rng: random.Random) -> dict[str, Any]:
    """A prediction derived from ``gt``: ``exact`` (a copy), ``shifted`` (every object moved by
    a fifth of its size), ``missing`` (one object dropped), ``extra`` (one object added). A
    caption is changed alike: its words rotated, its second half dropped, a phrase added."""
    out = copy.deepcopy(gt)
    w, h = int(gt["image"]["width"]), int(gt["image"]["height"])
    n = len(out.get("boxes") or out.get("masks") or out.get("keypoints") or [])
    if case == "exact":
        return out
    if case == "shifted":
        for i, b in enumerate(out.get("boxes") or []):
            dx, dy = (b[2] - b[0]) / 5, (b[3] - b[1]) / 5
            out["boxes"][i] = _shift_box(b, dx, dy, w, h)
            if i < len(out.get("masks") or []):
                out["masks"][i] = [v + (dx if k % 2 == 0 else dy) for k, v in enumerate(out["masks"][i])]
            if i < len(out.get("keypoints") or []):
                out["keypoints"][i] = [[p[0] + dx, p[1] + dy, *p[2:]] for p in out["keypoints"][i]]
        out["points"] = [p[:2] for inst in out.get("keypoints") or [] for p in inst if len(p) < 3 or p[2] > 0]
        if out.get("text"):  # a caption, even of an image whose objects are boxed too (the caption reward reads text only)
            words = out["text"].split()
            out["text"] = " ".join(words[1:] + words[:1])
        return out
    if case == "missing":
        if n:
            k = rng.randrange(n)
            for key in ("boxes", "labels", "masks", "keypoints"):
                if k < len(out.get(key) or []):
                    del out[key][k]
            out["points"] = [p[:2] for inst in out.get("keypoints") or [] for p in inst if len(p) < 3 or p[2] > 0]
        if out.get("text"):
            words = out["text"].split()
            out["text"] = " ".join(words[: max(1, len(words) // 2)])
        return out
    if case == "extra":
        bw, bh = max(2, w // 6), max(2, h // 6)
        x, y = rng.randrange(0, max(1, w - bw)), rng.randrange(0, max(1, h - bh))
        box = [x, y, x + bw, y + bh]
        if gt.get("boxes") is not None and (n or not gt.get("text")):
            out.setdefault("boxes", []).append(box)
            out.setdefault("labels", []).append((gt.get("labels") or ["object"])[0])
            if gt.get("masks"):
                out["masks"].append([x, y, x + bw, y, x + bw, y + bh, x, y + bh])
            if gt.get("keypoints"):
                k = len(gt["keypoints"][0])
                out["keypoints"].append([[x + bw / 2, y + bh / 2, 2]] * k)
        if gt.get("text") or gt.get("boxes") is None:
            out["text"] = (out.get("text", "") + " and an extra thing").strip()
        return out
    raise ValueError(f"unknown case {case!r}; the cases are {', '.join(CASES)}")


def case_scores(reward, targets: list[dict[str, Any]], seed: int = 0) -> dict[str, list[float]]:
    """Each case's scores, one per target in order (so ``[s[i] for s in result.values()]`` is
    target ``i``'s group of answers, as GRPO would see them). Raises ``RewardError`` on any
    failure of the reward (a reward under test never scores a failure 0)."""
    rng = random.Random(seed)
    if hasattr(reward, "prepare"):  # as a job does before stage 3 (the points reward's size prior)
        reward.prepare(targets)
    out = {}
    for case in CASES:
        outs = [perturb(t, case, rng) for t in targets]
        out[case] = [float(x) for x in reward.score(outs, [copy.deepcopy(t) for t in targets])]
    return out


def probe_reward(reward, targets: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per case: ``{case, n, mean, min, max, std}`` (see :func:`case_scores`)."""
    return case_rows(case_scores(reward, targets, seed))


def case_rows(by_case: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The summary row of each case's scores."""
    rows = []
    for case, scores in by_case.items():
        rows.append({
            "case": case, "n": len(scores), "mean": round(statistics.fmean(scores), 4),
            "min": round(min(scores), 4), "max": round(max(scores), 4),
            "std": round(statistics.pstdev(scores), 4) if len(scores) > 1 else 0.0,
        })  # fmt: skip
    return rows


def dataset_targets(uri: str, task: str, samples: int) -> list[dict[str, Any]]:
    """The first ``samples`` fully labelled ground truths of a dataset (train split first), as
    stage 3 gives them to a reward (``reward_target``: with clicks and counts); the cases are
    perturbed boxes, so clicked or counted images cannot serve. Of a synthetic set only those
    are generated: a sample depends on the seed and its index alone, not on ``n``."""
    from pipeline.data import load_dataset, parse_synthetic_uri
    from pipeline.rewards.base import reward_target

    if uri.startswith("synthetic://"):
        parts = urllib.parse.urlsplit(uri)
        query = dict(urllib.parse.parse_qsl(parts.query), n=str(min(parse_synthetic_uri(uri)["n"], samples)))
        uri = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    ds = load_dataset(uri, task, keep_images=False)  # the targets are all it needs: bounded memory
    pool = [s for split in ("train", "val", "test") for s in ds.splits.get(split, []) if s.label_kind == "full"]
    return [reward_target(s.target, task) for s in pool[:samples]]


def load_any_reward(spec: str, task: str = "detect", **js_kw: Any):
    """A built-in by name, or a JavaScript reward (``.js`` path or ``example:NAME``), checked."""
    from pipeline.config import reward_problem
    from pipeline.rewards.builtin import DEFAULT_REWARD, get_reward

    if spec.endswith(".js") or spec.startswith("example:"):
        from pipeline.rewards.js import check_reward, load_js_reward

        reward = load_js_reward(spec, **js_kw)
        check_reward(reward, task)
        return reward
    problem = reward_problem(spec, task)
    if problem:  # e.g. the points reward on a keypoints dataset: a table of numbers that mean nothing
        raise ValueError(problem)
    return get_reward(DEFAULT_REWARD[task] if spec == "default" else spec)
