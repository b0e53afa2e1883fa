"""Routing by label kind: SFT, validation and evaluation see fully labelled images only; stage 3
sees every image its reward can score; a split without fully labelled images fails clearly."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.config import ConfigError, build_config
from pipeline.data import load_dataset
from pipeline.data.errors import DataError
from pipeline.job import run_job
from pipeline.reporter import MetricsFileReporter
from pipeline.structures import Dataset, Sample, empty_target
from tests.conftest import tiny_job_config

pytestmark = pytest.mark.slow


def clicked(s: Sample) -> Sample:
    """``s`` as if its objects had only been clicked (box centres, with their categories)."""
    t = s.target
    s.target = {**empty_target(s.width, s.height), "points": [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in t["boxes"]],
                "point_labels": list(t["labels"]), "counts": dict(Counter(t["labels"]))}  # fmt: skip
    s.label_kind = "points"
    return s


def counted(s: Sample) -> Sample:
    s.target = {**empty_target(s.width, s.height), "counts": dict(Counter(s.target["labels"]))}
    s.label_kind = "counts"
    return s


def datasets(cfg) -> tuple[Dataset, Dataset]:
    domain = load_dataset(cfg.data.dataset, cfg.task, seed=cfg.seed, fractions=tuple(cfg.data.split))
    warm = load_dataset(cfg.data.warm_start_dataset, cfg.task, seed=cfg.seed, fractions=(1.0, 0.0, 0.0))
    train = domain.splits["train"]
    for s in train[4:10]:
        clicked(s)
    for s in train[10:]:
        counted(s)
    for s in domain.splits["test"][:3] + domain.splits["val"][:1]:
        clicked(s)
    for s in warm.splits["train"][::2]:
        clicked(s)
    return domain, warm


def logs(out) -> list[str]:
    return [e["message"] for e in map(json.loads, (out / "events.jsonl").read_text().splitlines()) if e.get("type") == "log"]


def test_sft_and_evaluation_see_boxed_images_and_stage_3_the_clicked_ones_too(tmp_path):
    cfg = build_config(tiny_job_config(reward="points", evaluate={"max_samples": None}, export={"quantization": "none"}))
    domain, warm = datasets(cfg)
    kinds = Counter(s.label_kind for s in domain.splits["train"])
    assert kinds["full"] >= 2 and kinds["points"] == 6 and kinds["counts"] >= 1
    out = tmp_path / "job"
    reporter = MetricsFileReporter(out / "events.jsonl")
    rec = run_job(cfg, out, reporter=reporter, data=(domain, warm))
    reporter.close()
    st = rec["stages"]
    full = lambda split: sum(s.label_kind == "full" for s in split)  # noqa: E731
    assert st["warm_start"]["examples"] == full(warm.splits["train"]) < len(warm.splits["train"])
    assert st["domain"]["examples"] == kinds["full"]
    # the points reward scores boxed and clicked images, not counted ones
    assert st["reward"]["examples"] == kinds["full"] + kinds["points"]
    messages = logs(out)
    assert f"stage 3 trains on {kinds['full'] + 6} images: {kinds['full']} boxed, 6 clicked" in messages
    assert f"reward points: prepared on the {kinds['full']} fully labelled training images" in messages
    ev = rec["evaluation"]
    assert ev["n"] == full(domain.splits["test"]) == len(domain.splits["test"]) - 3
    assert ev["selection"]["n"] == full(domain.splits["val"])
    assert 0.0 <= ev["models"]["reward"]["reward_score"] <= 1.0
    assert ev["train_fit"]["n"] == kinds["full"]


def test_a_job_without_fully_labelled_held_out_images_fails_before_training(tmp_path):
    cfg = build_config(tiny_job_config(reward="points"))
    domain, warm = datasets(cfg)
    for split in ("val", "test"):
        for s in domain.splits[split]:
            if s.label_kind == "full":
                clicked(s)
    with pytest.raises(DataError, match="evaluation needs fully labelled images in the val/test split"):
        run_job(cfg, tmp_path / "job", data=(domain, warm))
    assert not (tmp_path / "job" / "stages").exists()  # nothing trained


def test_stage_3_without_an_image_its_reward_can_score_names_the_reward(tmp_path):
    cfg = build_config(tiny_job_config(reward="count", rl={"label_kinds": ["counts"]}))
    domain, warm = datasets(cfg)
    for s in domain.splits["train"]:
        if s.label_kind == "counts":
            clicked(s)
    with pytest.raises(ConfigError, match=r"reward: stage 3 has no training images its reward can score: the 'count' "
                                          r"reward scores counted images and the training split holds"):  # fmt: skip
        run_job(cfg, tmp_path / "job", stages=[3], data=(domain, warm))


def test_a_counted_dataset_runs_rft_against_the_default_count_reward_through_the_runner(tmp_path):
    # The traffic-camera preset's situation in miniature: counted images only beside the boxed
    # ones, reward "default" (so count), stage 3 by RFT, all through the real loader.
    cfg = build_config(tiny_job_config(
        kind="traffic-camera", warm_start={"enabled": False}, evaluate={"max_samples": None},
        export={"quantization": "none"}, data={"dataset": "synthetic://traffic-camera?n=40&seed=1&counts=12",
                                              "split": [0.5, 0.17, 0.33]},
        rl={"algorithm": "rft", "max_steps": 2, "batch_size": 8, "num_generations": 4, "lr": 1e-3, "rft_threshold": 0.0},
    ))  # fmt: skip
    out = tmp_path / "job"
    reporter = MetricsFileReporter(out / "events.jsonl")
    rec = run_job(cfg, out, reporter=reporter)
    reporter.close()
    assert rec["reward"] == "count"
    st = rec["stages"]["reward"]
    assert st["algorithm"] == "rft" and st["sampled"] == 2 * 12  # each round samples the counted images only
    messages = logs(out)
    assert any(m.startswith("reward: default is count, which scores the 12 counted training images") for m in messages)
    boxed = st["examples"] - st["kept"]
    assert boxed == 2 * rec["stages"]["domain"]["examples"]  # each round also trains on the boxed truth
    assert "reward_score" in rec["evaluation"]["models"]["reward"]
