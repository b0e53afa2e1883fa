"""Stage 3's second algorithm, rejection-sampling fine-tuning, through the real runner and in-process."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.reporter import BaseReporter
from tests.conftest import PY, ROOT, tiny_job_config

pytestmark = pytest.mark.slow


def _config(rl: dict) -> dict:
    # One category, one object per image and 80 domain steps: a small job whose samples parse
    # often enough (about half at temperature 0.5, measured on 2 seeds) for some answers to be kept.
    cfg = tiny_job_config(kind="medical-scan", reward="points", warm_start={"enabled": False},
                          domain={"max_steps": 80, "batch_size": 8, "lr": 0.003},
                          rl={"algorithm": "rft", "batch_size": 8, "num_generations": 4, "temperature": 0.5, **rl})  # fmt: skip
    # The last 16 images carry only clicks: the ones RFT samples (the boxed ones train on their truth).
    cfg["data"]["dataset"] = "synthetic://medical-scan?n=40&seed=1&max_objects=1&points=16"
    return cfg


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def rft_job(tmp_path_factory):
    d = tmp_path_factory.mktemp("rft")
    (d / "c.json").write_text(json.dumps(_config({"max_steps": 4, "lr": 1e-3, "rft_threshold": -1.0, "rft_rounds": 2})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([PY, "-m", "pipeline.run", "--config", str(d / "c.json"), "--stages", "2", "3",
                          "--output", str(d / "out"), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return d / "out"


def test_rft_job_samples_keeps_trains_and_writes_a_model(rft_job):
    info = json.loads((rft_job / "metrics.json").read_text())["stages"]["reward"]
    events = [json.loads(x) for x in (rft_job / "events.jsonl").read_text().splitlines()]
    line = next(e["message"] for e in events if e.get("message", "").startswith("dataset"))
    boxed, train = (int(x) for x in re.search(r"train \d+ images: (\d+) boxed, (\d+) clicked", line).groups())
    assert info["state"] == "completed" and info["algorithm"] == "rft" and info["rounds"] == 2
    assert info["sampled"] == 2 * train  # each round samples every clicked image, and no boxed one
    assert 0 < info["kept"] <= info["sampled"] and info["kept_share"] == pytest.approx(info["kept"] / (2 * train), abs=1e-4)
    # max_steps split over the rounds, 2 each; each round trains on the boxed truth and its kept answers
    assert info["steps"] == 4 and info["examples"] == info["kept"] + 2 * boxed
    assert [r["steps"] for r in info["round_stats"]] == [2, 2]
    assert 0 <= info["zero_variance_share"] <= 1 and info["mean_best_reward"] is not None
    assert info["sample_seconds"] > 0 and info["train_seconds"] > 0 and "note" not in info
    model = rft_job / "stages" / "reward" / "model"
    a, b = _weights(rft_job / "stages" / "domain" / "model"), _weights(model)
    assert any(not torch.equal(a[k], b[k]) for k in a), "RFT trained on kept answers but no weight moved"
    assert not (rft_job / "stages" / "reward.rounds").exists()  # the rounds' models are gone once published
    logs = [e["message"] for e in events if e.get("type") == "log" and e.get("stage") == "reward"]
    assert any(m.startswith(f"rft round 1/2: sampled {train} images × 4 answers") for m in logs)
    # the second round's training steps follow the first's in the metric series
    steps = [e["step"] for e in events if e.get("type") == "metric" and e.get("stage") == "reward"]
    assert steps == sorted(steps) and max(steps) >= 3


class _Lines(BaseReporter):
    def __init__(self):
        self.lines, self.fractions = [], []

    def log(self, message, *, level="info", stage=None):
        self.lines.append((level, message))

    def progress(self, stage, fraction):
        self.fractions.append(fraction)


def _context(out: Path, job: Path, rl: dict, reporter):
    from pipeline.config import build_config
    from pipeline.device import pick_device
    from pipeline.job import load_data, make_codec, resolve_reward
    from pipeline.stages.common import Context

    cfg = build_config(_config(rl))
    domain, _ = load_data(cfg, {"domain", "reward"}, reporter)
    return Context(cfg=cfg, device=pick_device(), reporter=reporter, out=out, domain=domain,
                   domain_codec=make_codec(cfg, domain), reward=resolve_reward(cfg))  # fmt: skip


def test_a_threshold_above_every_reward_keeps_nothing_and_says_so(rft_job, tmp_path):
    from pipeline.stages.rft import train_rft

    rep = _Lines()
    ctx = _context(tmp_path, rft_job, {"max_steps": None, "max_seconds": 6, "rft_threshold": 1000.0}, rep)
    domain_model = rft_job / "stages" / "domain" / "model"
    out_model = tmp_path / "model"
    clicked = [s for s in ctx.domain.splits["train"] if s.label_kind == "points"]
    info = train_rft(ctx, "reward", domain_model, clicked, ctx.domain_codec, ctx.cfg.rl, out_model)
    assert info["kept"] == 0 and info["steps"] == 0 and info["sampled"] > 0
    assert "rl.rft_threshold 1000.0" in info["note"] and "Lower rl.rft_threshold" in info["note"]
    assert f"kept no answer of {info['sampled']} sampled images: " in info["note"] and 0 <= info["unparsed_share"] < 1
    warnings = [m for level, m in rep.lines if level == "warning"]
    assert any("nothing to train on this round" in m for m in warnings)
    assert any(m.startswith("rft kept no answer") for m in warnings)
    a, b = _weights(domain_model), _weights(out_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the input, passed on unchanged
    assert rep.fractions == sorted(rep.fractions) and rep.fractions[-1] == 1.0

    # With boxed images beside them, the stage still trains on their truth, and says it kept nothing.
    rep = _Lines()
    ctx = _context(tmp_path / "with-boxes", rft_job, {"max_steps": 2, "rft_threshold": 1000.0}, rep)
    info = train_rft(ctx, "reward", domain_model, ctx.domain.splits["train"], ctx.domain_codec, ctx.cfg.rl,
                     tmp_path / "with-boxes" / "model")  # fmt: skip
    boxed = sum(s.label_kind == "full" for s in ctx.domain.splits["train"])
    assert info["kept"] == 0 and info["steps"] == 2 and info["examples"] == 2 * boxed
    assert any(level == "warning" and m.startswith("rft kept no answer") and f"on the {boxed} fully labelled" in m
               for level, m in rep.lines)  # fmt: skip


def test_pseudo_label_keeps_the_best_parsed_answer_scored_by_a_javascript_reward(rft_job):
    from pipeline.models.loading import load_model
    from pipeline.predict import predict_targets
    from pipeline.rewards.base import as_trl_reward
    from pipeline.rewards.js import JsLimits, load_js_reward
    from pipeline.stages.rft import pseudo_label

    ctx = _context(rft_job, rft_job, {}, _Lines())
    samples, codec = [s for s in ctx.domain.splits["train"] if s.label_kind == "full"], ctx.domain_codec
    model, processor = load_model(rft_job / "stages" / "domain" / "model", ctx.device)
    reward = load_js_reward("example:iou", limits=JsLimits(batch_timeout_s=5, sample_timeout_ms=1000, heap_mb=64))
    try:
        torch.manual_seed(0)
        labels = pseudo_label(model, processor, samples, codec, as_trl_reward(reward, codec), n=4, temperature=0.5, threshold=0.2)
        assert labels.sampled == len(samples) and len(labels.best) == len(samples)
        assert all(s.label_kind == "full" and s.target["labels"] == ["lesion"] for s in labels)
        originals = [samples[i] for i in labels.indices]
        scores = reward.score([s.target for s in labels], [s.target for s in originals])
        assert all(x >= 0.2 for x in scores)  # nothing below the threshold was kept
        assert all(x <= best + 1e-6 for x, best in zip(scores, [labels.best[i] for i in labels.indices]))
    finally:
        reward.close()
    # self-training: one greedy answer per image, unfiltered, the same answers evaluation decodes
    plain = pseudo_label(model, processor, samples, codec, greedy=True)
    targets, parsed, _ = predict_targets(model, processor, samples, codec)
    assert [s.target for s in plain] == [t for t, ok in zip(targets, parsed) if ok]
    assert plain.indices == [i for i, ok in enumerate(parsed) if ok] and plain.best == []


def test_a_time_budget_is_split_between_sampling_and_training(rft_job, tmp_path):
    from pipeline.stages.rft import train_rft

    # 4 s over 2 rounds; sampling may take 0.1 % of a round (2 ms): only the first batch of
    # images is sampled, and the rest of each round's 2 s trains on their answers (the epochs
    # are a ceiling far above what the budget allows)
    rl = {"max_steps": None, "epochs": 1000, "max_seconds": 4, "rft_threshold": -1.0, "rft_sample_share": 0.001, "lr": 1e-3}
    ctx = _context(tmp_path, rft_job, rl, _Lines())
    train = [s for s in ctx.domain.splits["train"] if s.label_kind == "points"]
    info = train_rft(ctx, "reward", rft_job / "stages" / "domain" / "model", train, ctx.domain_codec, ctx.cfg.rl,
                     tmp_path / "model")  # fmt: skip
    assert all(1 <= r["sampled"] < len(train) for r in info["round_stats"]), info["round_stats"]
    assert info["steps"] > 0 and info["sample_seconds"] < 1.5 and info["train_seconds"] > 1.5
    assert info["sample_seconds"] + info["train_seconds"] <= 4 + 1.0  # one step may run past the budget


class _CancelInRound2(_Lines):
    """Cancels the job once round 2 has sampled: the restart must not sample round 2 again."""

    stop = False

    def log(self, message, *, level="info", stage=None):
        super().log(message, level=level, stage=stage)
        self.stop = self.stop or message.startswith("rft round 2/2: sampled")

    def should_stop(self):
        return self.stop


def test_a_restarted_stage_keeps_finished_rounds_and_the_kept_answers(rft_job, tmp_path):
    from pipeline.stages.common import StageCancelled
    from pipeline.stages.rft import train_rft

    rl = {"max_steps": 4, "lr": 1e-3, "rft_threshold": -1.0}
    first = _CancelInRound2()
    ctx = _context(tmp_path, rft_job, rl, first)
    train, domain_model = ctx.domain.splits["train"], rft_job / "stages" / "domain" / "model"
    clicked = sum(s.label_kind == "points" for s in train)
    with pytest.raises(StageCancelled):
        train_rft(ctx, "reward", domain_model, train, ctx.domain_codec, ctx.cfg.rl, tmp_path / "model")
    rounds = tmp_path / "stages" / "reward.rounds"
    assert (rounds / "round-1" / "DONE.json").exists() and (rounds / "round-2" / "kept.json").exists()
    kept2 = len(json.loads((rounds / "round-2" / "kept.json").read_text())["indices"])
    again = _Lines()
    ctx = _context(tmp_path, rft_job, rl, again)
    info = train_rft(ctx, "reward", domain_model, train, ctx.domain_codec, ctx.cfg.rl, tmp_path / "model")
    logs = [m for _, m in again.lines]
    assert "rft round 1/2: finished before the restart" in logs
    assert f"rft round 2/2: retraining on the {kept2} answers kept before the restart" in logs
    assert not any(m.startswith("rft round") and "sampled" in m for m in logs)  # nothing sampled twice
    assert info["sampled"] == 2 * clicked and info["steps"] == 4 and info["round_stats"][1]["kept"] == kept2
    assert (tmp_path / "model" / "config.json").exists() and not rounds.exists()


class _Points(_Lines):
    def __init__(self):
        super().__init__()
        self.points: list[tuple[int, dict]] = []

    def metric(self, stage, step, values):
        self.points.append((step, values))


def test_the_reward_watch_scores_each_round_and_the_stage_keeps_the_round_that_validated_best(rft_job, tmp_path):
    from pipeline.models.loading import load_model
    from pipeline.stages.rft import train_rft
    from pipeline.stages.watch import reward_watch

    rep = _Points()
    rl = {"max_steps": 4, "lr": 1e-3, "rft_threshold": -1.0, "watch_every": 1, "watch_samples": 4}
    ctx = _context(tmp_path, rft_job, rl, rep)
    info = train_rft(ctx, "reward", rft_job / "stages" / "domain" / "model", ctx.domain.splits["train"], ctx.domain_codec,
                     ctx.cfg.rl, tmp_path / "model")  # fmt: skip
    key = f"val_{info['val_metric']}"
    checks = [(step, v) for step, v in rep.points if key in v]
    assert [step for step, _ in checks] == [2, 4] and all("val_boxes_per_image" in v for _, v in checks)
    assert info["val_checks"] == 2 and info["watch_warnings"] == [] and not info["stopped_early"]
    best = max(v[key] for _, v in checks)
    assert info["val_best"] == pytest.approx(best, abs=1e-4) and info["val_best_step"] in (2, 4)
    # the published model is the round that validated best: scored again, it gets the best score
    model, processor = load_model(tmp_path / "model", ctx.device)
    watch = reward_watch(ctx, "reward", ctx.domain_codec, ctx.cfg.rl, processor)
    assert watch.score(model)[key] == pytest.approx(info["val_best"], abs=1e-4)
