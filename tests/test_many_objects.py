"""Shelves and crowds: 60 objects in one image, through the codec, the rewards, the evaluation
and a job (issue 24). ``benchmarks/many_objects.py`` measures what each object costs."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from pipeline.codec import Codec
from pipeline.config import ConfigError, build_config
from pipeline.data import load_dataset
from pipeline.metrics import evaluate
from pipeline.rewards.builtin import get_reward
from tests.conftest import tiny_job_config

SIDE, CELL, N = 128, 16, 60  # a 8 × 8 grid of 16 px cells, 60 of them holding a 10 px object


def crowded_coco(folder, images: int = 8, seed: int = 0):
    """A COCO folder of ``images`` shelves with ``N`` small objects each, two categories."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "box"}]}
    for i in range(images):
        im = Image.new("RGB", (SIDE, SIDE), (40, 40, 40))
        cells = rng.sample(range((SIDE // CELL) ** 2), N)
        for c in cells:
            x, y = (c % 8) * CELL + 3, (c // 8) * CELL + 3
            cat = 1 + (c % 2)
            im.paste((220, 60, 60) if cat == 1 else (60, 200, 90), (x, y, x + 10, y + 10))
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": cat,
                                        "bbox": [x, y, 10, 10], "area": 100, "iscrowd": 0})  # fmt: skip
        im.save(folder / "images" / f"{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": SIDE, "height": SIDE})
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    return crowded_coco(tmp_path_factory.mktemp("crowded") / "shelf")


def test_sixty_objects_round_trip_and_score_as_the_ground_truth(crowded):
    ds = load_dataset(crowded, "detect")
    sample = ds.splits["train"][0]
    gt = sample.target
    assert len(gt["boxes"]) == N
    codec = Codec("detect", ds.categories, num_bins=32, max_objects=64)
    text = codec.encode(gt)
    decoded, parsed = codec.decode(text, sample.width, sample.height)
    assert parsed and len(decoded["boxes"]) == N
    assert sorted(decoded["labels"]) == sorted(gt["labels"])
    for b in decoded["boxes"]:  # each within one bin (4 px) of a ground-truth box
        assert min(max(abs(p - q) for p, q in zip(b, g, strict=True)) for g in gt["boxes"]) <= SIDE / 32
    assert len(text.split()) < codec.max_new_tokens()  # the decoding cap leaves room for all 60
    for name in ("iou", "f1"):
        reward = get_reward(name)
        half = {**decoded, "boxes": decoded["boxes"][: N // 2], "labels": decoded["labels"][: N // 2]}
        whole, part = reward.score([decoded, half], [gt, gt])
        assert whole > 0.6 and part < whole - 0.2, (name, whole, part)  # half the shelf scores clearly lower
    m = evaluate([decoded], [gt], [True], "detect", ds.categories)
    assert m["f1_50"] > 0.8 and m["mean_count_error"] == 0 and m["label_accuracy"] == 1.0
    # the default cap (16) would cut them: the job says so and how to raise it
    capped, parsed = Codec("detect", ds.categories, num_bins=32, max_objects=16).decode(text, SIDE, SIDE)
    assert len(capped["boxes"]) == 16 and not parsed


def test_a_job_trains_and_evaluates_sixty_objects_per_image(crowded, tmp_path):
    from pipeline.job import run_job

    cfg = build_config(tiny_job_config(data={"dataset": str(crowded), "max_objects": 64, "split": [0.5, 0.25, 0.25]},
                                       rl={"enabled": False}, evaluate={"max_samples": 2, "batch_size": 2},
                                       export={"quantization": "none"},  # 390-token answers: each decode costs
                                       domain={"max_steps": 2, "batch_size": 2, "val_checks": 0}))  # fmt: skip
    record = run_job(cfg, tmp_path / "out", stages=[2, 4])
    assert record["stages"]["domain"]["state"] == "completed"
    ev = record["evaluation"]
    assert ev["n"] == 2 and set(ev["models"]) >= {"base", "domain"}


def test_answers_longer_than_the_model_can_hold_are_refused_before_training(crowded, tmp_path):
    from pipeline.job import make_codec, run_job
    from pipeline.models.tiny import build_tiny_vlm

    raw = tiny_job_config(data={"dataset": str(crowded), "max_objects": 100}, rl={"enabled": False},
                          domain={"max_steps": 1, "batch_size": 2})  # fmt: skip
    ds = load_dataset(crowded, "detect")
    model = build_tiny_vlm(tmp_path / "short", family="llava", special_tokens=make_codec(build_config(raw), ds).special_tokens(),
                           extra_words=ds.categories)  # fmt: skip
    c = json.loads((model / "config.json").read_text())
    c["text_config"]["max_position_embeddings"] = 512  # a model with a short context
    (model / "config.json").write_text(json.dumps(c))
    with pytest.raises(ConfigError, match=r"data.max_objects: 100 objects make answers of up to \d+ tokens; .* more "
                                          r"than the model's 512\. Lower data.max_objects"):  # fmt: skip
        run_job(build_config({**raw, "model": str(model)}), tmp_path / "out", stages=[2])
    assert not (tmp_path / "out" / "stages" / "domain" / "DONE.json").exists()
