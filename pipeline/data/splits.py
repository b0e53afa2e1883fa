"""Dividing a dataset into train / val / test: by a stable hash of each file name, with tiny
sets repaired, weakly labelled images always in train, and a check that something is left
to evaluate on."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence

from pipeline.data.errors import DataError
from pipeline.structures import KIND_WORDS, Sample

SPLITS = ("train", "val", "test")


def split_samples(
    samples: list[Sample], *, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[Sample]]:
    """Split by a stable hash of ``seed`` and each file name (SHA-256, not ``hash()``,
    which is salted per process).

    The same file lands in the same split on every machine and run, whatever else is in the
    dataset. Tiny datasets are repaired so that train is never empty, and (when their
    fraction is not 0) test is non-empty from 2 images on and val from 3 on, by moving the
    image whose hash is nearest the missing split's range. Order inside a split follows the
    input order.

    Only fully labelled images are divided (and counted for the repairs): val and test are
    for evaluation, which needs every object labelled, so weakly labelled images (clicks,
    counts, unlabelled) all go to train, and adding them never moves a fully labelled image.
    """
    fractions = check_fractions(fractions)
    weak = [s for s in samples if s.label_kind != "full"]
    if weak:
        divided = split_samples([s for s in samples if s.label_kind == "full"], seed=seed, fractions=fractions)
        train = {id(s) for s in divided["train"]} | {id(s) for s in weak}
        return {**divided, "train": [s for s in samples if id(s) in train]}  # input order, as documented
    scores = [_hash_unit(seed, sample.file_name) for sample in samples]
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    assign = ["train" if u < cut_train else "val" if u < cut_val else "test" for u in scores]
    counts = Counter(assign)

    def move(index: int, split: str) -> None:
        counts[assign[index]] -= 1
        counts[split] += 1
        assign[index] = split

    n = len(samples)
    if n and not counts["train"]:
        move(min(range(n), key=scores.__getitem__), "train")  # lowest hash: nearest the train range
    for split, minimum in (("test", 2), ("val", 3)):
        # Only repair a split the caller asked for: fractions=(1, 0, 0) means "no test set".
        if n >= minimum and not counts[split] and fractions[SPLITS.index(split)] > 0:
            donors = [i for i in range(n) if counts[assign[i]] > 1]
            if donors:
                move(max(donors, key=scores.__getitem__), split)  # highest hash: nearest val/test
    return {split: [s for s, a in zip(samples, assign) if a == split] for split in SPLITS}


# How a summary names each label kind: "400 images: 40 boxed, 300 clicked, 60 counted".


def label_summary(samples: Sequence[Sample]) -> str:
    """How many images and, when any is weakly labelled, how many of each label kind.

    >>> label_summary([])
    '0 images'
    """
    kinds = Counter(s.label_kind for s in samples)
    head = f"{len(samples)} image{'' if len(samples) == 1 else 's'}"
    if set(kinds) <= {"full"}:
        return head  # no weak labels: "boxed" would be wrong for captions and keypoints
    return head + ": " + ", ".join(f"{kinds[k]} {word}" for k, word in KIND_WORDS.items() if kinds[k])


def check_evaluable(label: str, splits: dict[str, list[Sample]], held_out_wanted: bool) -> None:
    """Raise when a dataset with weak labels leaves val and test without a fully labelled image.

    Weak images always train (``split_samples``), so a dataset of mostly clicks can end with
    nothing to evaluate on; the job would fail only at stage 4, after the training time.
    ``held_out_wanted`` is False for a load that asks for no val or test (a warm-start set).
    """
    everything = [s for samples in splits.values() for s in samples]
    if not held_out_wanted or all(s.label_kind == "full" for s in everything):
        return
    if any(s.label_kind == "full" for split in ("val", "test") for s in splits.get(split, [])):
        return
    full = sum(s.label_kind == "full" for s in everything)
    where = (
        "none of its images is fully labelled" if not full
        else "its one fully labelled image went to train" if full == 1
        else f"its {full} fully labelled images all went to train"
    )  # fmt: skip
    raise DataError(
        f"{label}: evaluation needs fully labelled images in val or test, and {where} "
        f"({label_summary(everything)}); clicked, counted and unlabelled images always train — "
        "box every object of a few dozen more images"
    )



def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or sum(values) <= 0:
        raise ValueError(
            f"fractions={tuple(fractions)!r} must be three non-negative numbers "
            "(train, val, test), e.g. (0.8, 0.1, 0.1)"
        )
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total  # type: ignore[return-value]


def _hash_unit(seed: int, file_name: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

