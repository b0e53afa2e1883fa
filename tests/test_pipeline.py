"""End-to-end: the runner trains a tiny model through all four stages, resumes, and exports."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.stage_table import BY_NAME
from tests.conftest import PY, ROOT, tiny_job_config

pytestmark = pytest.mark.slow


def run(args, cwd=ROOT, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([PY, "-m", "pipeline.run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def detect_job(tmp_path_factory):
    d = tmp_path_factory.mktemp("job")
    cfg = d / "dreamforge.config.json"
    cfg.write_text(json.dumps(tiny_job_config()))
    res = run(["--config", str(cfg), "--stages", "1", "2", "3", "4", "--output", str(d / "out"), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    return d / "out", res


def test_four_stage_job_writes_metrics_checkpoints_and_both_exports(detect_job):
    out, res = detect_job
    m = json.loads((out / "metrics.json").read_text())
    assert [s for s in m["stages"] if m["stages"][s]["state"] == "completed"] == [
        "warm_start", "domain", "reward", "evaluate"
    ]
    ev = m["evaluation"]
    assert set(ev["models"]) == {"base", "warm_start", "domain", "reward", "4bit"}
    for metrics in ev["models"].values():
        for key in ("mean_iou", "map50", "f1_50", "parse_rate"):
            assert 0.0 <= metrics[key] <= 1.0
        confusion = metrics["confusion_matrix"]  # per class, with background, in metrics.json
        assert confusion["labels"][-1] == "background" and len(confusion["matrix"]) == len(confusion["labels"])
    rel = ev["release"]
    assert rel["size_ratio"] > 1.2  # the language model shrank; vision stays 16-bit
    assert rel["release_format"] in ("nf4", "16-bit")
    for stage in ("warm_start", "domain", "reward"):
        assert (out / "stages" / stage / "model" / "config.json").exists()
        assert m["stages"][stage]["train_seconds"] > 0
    assert (out / "model" / "README.md").read_text().startswith("---")
    # the domain-trained models are also scored on their own training images (memorisation)
    fit = ev["train_fit"]
    assert fit["split"] == "train" and 0 < fit["n"] <= 64
    for stage in ("domain", "reward"):
        held = ev["models"][stage]["mean_iou"]
        assert 0.0 <= fit[stage]["mean_iou"] <= 1.0
        assert fit[stage]["gap"] == pytest.approx(fit[stage]["mean_iou"] - held, abs=1e-4)
    assert f"On {fit['n']} of its training images the reward model" in (out / "MODEL_CARD.md").read_text()
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["mean_iou"]["reward"] == pytest.approx(ev["models"]["reward"]["mean_iou"], abs=5e-5)  # rounded
    # the release was chosen on validation, among every trained stage, and each surface says which
    sel = ev["selection"]
    assert sel["split"] == "val" and sel["n"] > 0 and list(sel["models"]) == ["base", "warm_start", "domain", "reward"]
    trained = ["warm_start", "domain", "reward"]  # the base model is scored for the verdict, never released
    best = max(trained, key=lambda n: (sel["models"][n]["mean_iou"], sel["models"][n].get("reward_score", 0), trained.index(n)))
    assert rel["stage"] == best and rel["reason"].startswith(BY_NAME[best].title)
    assert summary["released"] == rel["reason"] and f"Released: {rel['reason']}." in (out / "MODEL_CARD.md").read_text()
    # 4 domain steps cannot teach anything: the job says so, with causes it checked, on every surface
    verdict = ev["verdict"]
    assert verdict["verdict"] == "did_not_learn" and verdict["split"] == "val" and verdict["n"] == sel["n"]
    causes = " ".join(c["cause"] for c in verdict["causes"])
    assert "the domain stage ran 4 optimizer steps" in causes and f"the val split has {sel['n']} images" in causes
    # how alike the released model's answers for different images are, next to their labels
    same = ev["answer_sameness"]
    assert 0.0 <= same["answers"] <= 1.0 and 0.0 <= same["labels"] <= 1.0 and same["pairs"] == min(400, ev["n"] * (ev["n"] - 1) // 2)
    assert summary["verdict"] == "did_not_learn" and "**Verdict: did not learn: " in (out / "MODEL_CARD.md").read_text()
    # the job's own reward (iou, the default) scores every model too
    assert all(0.0 <= ev["models"][n]["reward_score"] <= 1.0 for n in ("base", "warm_start", "domain", "reward"))


def test_sft_stages_change_the_weights_and_rl_follows_its_advantages(detect_job):
    out, _ = detect_job
    chain = [out / "base-model", *(out / "stages" / s / "model" for s in ("warm_start", "domain"))]
    for before, after in zip(chain, chain[1:]):
        a, b = weights(before), weights(after)
        changed = [k for k in a if not torch.equal(a[k], b[k])]
        assert len(changed) > len(a) // 2, f"{after.parent.name} changed only {len(changed)}/{len(a)} tensors"
    # GRPO moves the policy only where a group's rewards differ: with every group at zero
    # spread the advantages are all zero and the weights must stay put (beta = 0).
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    spread = [e["frac_reward_zero_std"] for e in events if e.get("stage") == "reward" and "frac_reward_zero_std" in e]
    assert spread, "GRPO logged no reward statistics"
    a, b = weights(chain[-1]), weights(out / "stages" / "reward" / "model")
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    if min(spread) < 1.0:
        assert changed, "some groups had a reward spread but no weight moved"
    else:
        assert not changed, "all groups had zero spread yet the weights moved"


def test_exports_reload_through_the_auto_classes(detect_job):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out, _ = detect_job
    full = AutoModelForImageTextToText.from_pretrained(out / "model")
    AutoProcessor.from_pretrained(out / "model")
    a, b = weights(out / "model"), weights(out / "stages" / "reward" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    q = AutoModelForImageTextToText.from_pretrained(out / "model-4bit", device_map="cpu")
    kinds = {type(m).__name__ for n, m in q.named_modules() if "language_model" in n}
    assert "Linear4bit" in kinds
    vision = {type(m).__name__ for n, m in q.named_modules() if "vision_tower" in n}
    assert "Linear4bit" not in vision  # vision tower kept in 16-bit
    del full, q


def test_rerun_resumes_and_retrains_nothing(detect_job, tmp_path):
    out, _ = detect_job
    marks = {s: (out / "stages" / s / "DONE.json").stat().st_mtime for s in ("warm_start", "domain", "reward")}
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_job_config()))
    res = run(["--config", str(cfg), "--output", str(out), "--quiet"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert {s: (out / "stages" / s / "DONE.json").stat().st_mtime for s in marks} == marks
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    skipped = [e["stage"] for e in events if e.get("type") == "stage" and e["state"] == "skipped"]
    assert {"warm_start", "domain", "reward", "evaluate"} <= set(skipped)


def test_resume_with_a_different_config_is_refused(detect_job, tmp_path):
    out, _ = detect_job
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_job_config(seed=5)))
    res = run(["--config", str(cfg), "--output", str(out), "--quiet"])
    assert res.returncode == 2
    assert "different config" in res.stderr


def _reward_stage_running(out: Path) -> bool:
    events = out / "events.jsonl"
    if not events.exists():
        return False
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "metric" and e.get("stage") == "reward":
            return True
    return False


def test_worker_killed_mid_stage_resumes_at_that_stage(tmp_path):
    cfg = tmp_path / "c.json"
    # an RL stage on a time budget, long enough for the kill to land inside it
    cfg.write_text(json.dumps(tiny_job_config(rl={"max_steps": None, "max_seconds": 8, "epochs": 10_000})))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [PY, "-m", "pipeline.run", "--config", str(cfg), "--output", str(out), "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not _reward_stage_running(out):
        assert proc.poll() is None, "the job ended before the kill"
        assert time.monotonic() < deadline, "the reward stage never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {s: (out / "stages" / s / "DONE.json").exists() for s in ("warm_start", "domain", "reward")}
    assert done == {"warm_start": True, "domain": True, "reward": False}
    marks = {s: (out / "stages" / s / "DONE.json").stat().st_mtime for s in ("warm_start", "domain")}
    res = run(["--config", str(cfg), "--output", str(out), "--quiet", "--stages", "1", "2", "3"])
    # the killed stage is retrained from the domain checkpoint; the finished ones are kept
    assert res.returncode == 0, res.stderr[-2000:]
    assert {s: (out / "stages" / s / "DONE.json").stat().st_mtime for s in marks} == marks
    assert json.loads((out / "stages" / "reward" / "DONE.json").read_text())["steps"] >= 1


def test_predict_cli_prints_the_structure_and_draws_it(detect_job, tmp_path):
    out, _ = detect_job
    from pipeline.data import generate

    img = tmp_path / "shelf.png"
    generate("retail-shelf", 1, seed=99).splits["train"][0].image.save(img)
    drawn = tmp_path / "drawn.png"
    res = subprocess.run(
        [PY, "-m", "dreamforge.cli", "predict", str(out / "model-4bit"), str(img), "--draw", str(drawn)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["quantized"] is True
    assert set(result["prediction"]) >= {"boxes", "labels", "image"}
    assert result["prediction"]["image"] == {"width": 64, "height": 64}
    from PIL import Image

    assert Image.open(drawn).size == (256, 256)


def test_predict_cli_names_a_missing_model(tmp_path):
    res = subprocess.run(
        [PY, "-m", "dreamforge.cli", "predict", str(tmp_path), str(tmp_path / "x.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 1
    assert "dreamforge_codec.json" in res.stderr and "Traceback" not in res.stderr


def test_bad_dataset_fails_with_a_message_naming_it(tmp_path):
    bad = tmp_path / "ds"
    bad.mkdir()
    (bad / "annotations.json").write_text('{"images": [], "annotations": [')
    res = run(["--dataset", str(bad), "--output", str(tmp_path / "out"), "--quiet"])
    assert res.returncode == 2
    assert "annotations.json" in res.stderr and "Traceback" not in res.stderr


def test_memorisation_warning_names_both_numbers(detect_job):
    """A model that does much better on its training images than on held-out ones gets a
    warning that says so, with both numbers (threshold forced low: the tiny job is too short
    to memorise)."""
    from pipeline.config import CurriculumConfig
    from pipeline.device import pick_device
    from pipeline.job import load_data, make_codec, resolve_reward
    from pipeline.reporter import BaseReporter
    from pipeline.stages.common import Context
    from pipeline.stages.evaluate import train_fit

    class Logs(BaseReporter):
        def __init__(self):
            self.lines = []

        def log(self, message, *, level="info", stage=None):
            self.lines.append((level, message))

    out, _ = detect_job
    saved = json.loads((out / "config.json").read_text())
    saved.pop("_hash")
    cfg = CurriculumConfig.model_validate(saved)
    rep = Logs()
    domain, _ = load_data(cfg, {"domain"}, rep)
    ctx = Context(cfg=cfg, device=pick_device(), reporter=rep, out=out, domain=domain,
                  domain_codec=make_codec(cfg, domain), reward=resolve_reward(cfg))  # fmt: skip
    record = json.loads((out / "metrics.json").read_text())["evaluation"]
    checkpoints = {s: out / "stages" / s / "model" for s in ("domain", "reward")}
    fit = train_fit(ctx, checkpoints, record, warn_gap=-1.0)
    assert fit["reward"]["mean_iou"] == pytest.approx(record["train_fit"]["reward"]["mean_iou"])  # deterministic
    warnings = [m for level, m in rep.lines if level == "warning"]
    assert len(warnings) == 1 and "memorised" in warnings[0]
    assert f"{fit['reward']['mean_iou']:.2f}" in warnings[0] and f"{record['models']['reward']['mean_iou']:.2f}" in warnings[0]
    assert 'data.augment: ["hflip"]' in warnings[0]  # the job did not mirror: the warning says how
    rep.lines.clear()
    both = cfg.data.model_copy(update={"augment": ["hflip", "mosaic"]})
    mirrored = Context(**{**ctx.__dict__, "cfg": cfg.model_copy(update={"data": both})})
    train_fit(mirrored, checkpoints, record, warn_gap=-1.0)
    warnings = [m for level, m in rep.lines if level == "warning"]
    assert len(warnings) == 1 and "memorised" in warnings[0] and "data.augment" not in warnings[0]
    rep.lines.clear()
    train_fit(ctx, checkpoints, record)  # the real threshold: a tiny job has not memorised anything
    assert not [m for level, m in rep.lines if level == "warning"] or record["train_fit"]["reward"]["gap"] > 0.3


def test_mirrored_copies_double_the_examples_not_the_steps(tmp_path):
    # 12 labelled images at batch 8 make 2 steps an epoch; with data.augment the stage trains
    # on 24 (12 mirrored), and an epoch still counts the 12 labelled ones
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_job_config(domain={"max_steps": None, "epochs": 1},
                                              data={**tiny_job_config()["data"], "augment": ["hflip"]})))  # fmt: skip
    res = run(["--config", str(cfg), "--stages", "1", "2", "--output", str(tmp_path / "out"), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["stages"]["domain"]["examples"] == 24 and m["stages"]["domain"]["steps"] == 2
    events = (tmp_path / "out" / "events.jsonl").read_text()
    assert "hflip: 12 labelled images + 12 augmented copies" in events


def test_domain_stage_trains_at_least_min_steps_on_a_few_images(tmp_path):
    # 12 training images at batch 8: one epoch is 2 steps; min_steps lifts it to 5 (a few-label
    # set needs more passes), and max_steps would still win over both
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_job_config(domain={"max_steps": None, "epochs": 1, "min_steps": 5})))
    res = run(["--config", str(cfg), "--stages", "1", "2", "--output", str(tmp_path / "out"), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["stages"]["domain"]["examples"] == 12 and m["stages"]["domain"]["steps"] == 5


def _stalled_domain(tmp_path, **domain) -> tuple[dict, list[dict]]:
    """Stages 1 and 2 with a domain stage that cannot improve (lr 1e-9, patience 1): its
    metrics and the job's events."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_job_config(domain={"lr": 1e-9, "patience": 1, **domain})))
    res = run(["--config", str(cfg), "--stages", "1", "2", "--output", str(tmp_path / "out"), "--quiet"])
    assert res.returncode == 0, res.stderr[-3000:]
    dom = json.loads((tmp_path / "out" / "metrics.json").read_text())["stages"]["domain"]
    return dom, [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]


def test_domain_stage_validates_keeps_its_best_weights_and_stops_when_validation_stalls(tmp_path):
    """A check every 20 steps; at lr 1e-9 nothing improves, so patience 1 stops the stage at the
    second check and the stage keeps the weights of the first, which validated best."""
    dom, events = _stalled_domain(tmp_path, max_steps=100, val_checks=5, stop_from=0)
    assert dom["steps"] == 40 and dom["stopped_early"] and dom["val_checks"] == 2 and dom["val_best_step"] == 20
    curve = [(e["step"], e) for e in events if e.get("type") == "metric" and "val_mean_iou" in e]
    assert [s for s, _ in curve] == [20, 40] and all(0 <= v["val_parse_rate"] <= 1 for _, v in curve)
    logs = [e["message"] for e in events if e.get("type") == "log"]
    assert any("has not improved for 1 checks" in m for m in logs)
    assert any("keeping the weights of step 20" in m for m in logs)


def test_a_domain_stage_that_has_not_started_learning_is_not_stopped_for_stalling(tmp_path):
    """The same stall, but validation never reached stop_from: patience does not end the stage,
    which trains to its max_steps and says why."""
    dom, events = _stalled_domain(tmp_path, max_steps=60, val_checks=3, stop_from=1.0)
    assert dom["steps"] == 60 and not dom["stopped_early"] and dom["val_checks"] == 3
    logs = [e.get("message", "") for e in events]
    said = [m for m in logs if "has not reached 1.0 yet" in m]
    assert len(said) == 1 and "trains on to its budget instead of stopping early" in said[0]
