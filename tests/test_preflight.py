"""Preflight (issue 20): each dataset, reward and cost problem found before training, with its
fix; the CLI's exit code; ``POST /api/preflight`` over HTTP with the tenant's dataset ids."""

from __future__ import annotations

import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import PY, ROOT, tiny_job_config
from PIL import Image
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.local.stack import start_stack
from pipeline.config import build_config
from pipeline.preflight import STEP_TIMES, run_preflight

SIDE = 64  # px; with num_bins 32 a location bin is 2 px


def _image(seed: int) -> Image.Image:
    """A smooth random picture (an 8×8 field upscaled): structured like a photo, unlike noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    return small.resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def leaky_dataset(root: Path) -> Path:
    """train.json / test.json: test repeats train's a0 pixel for pixel and a1 resized and saved as
    JPEG; most training boxes are 1 px (under one 2-px bin); a2 holds 5 objects; one box lies
    outside its image."""
    root.mkdir(parents=True)
    cats = [{"id": 1, "name": "cola"}, {"id": 2, "name": "soap"}]
    splits = {"train": [], "test": []}
    for i in range(8):
        _image(i).save(root / f"a{i}.png")
        splits["train"].append((f"a{i}.png", SIDE, SIDE))
    _image(0).save(root / "t0.png")  # an exact copy under another name
    _image(1).resize((56, 56), Image.Resampling.BILINEAR).save(root / "t1.jpg", quality=85)  # a near copy
    for i in (100, 101):
        _image(i).save(root / f"t{i}.png")
    splits["test"] = [("t0.png", SIDE, SIDE), ("t1.jpg", 56, 56), ("t100.png", SIDE, SIDE), ("t101.png", SIDE, SIDE)]
    for split, files in splits.items():
        images, anns = [], []
        for k, (name, w, h) in enumerate(files, 1):
            images.append({"id": k, "file_name": name, "width": w, "height": h})
            boxes = [[10, 10, 1, 1], [30, 30, 20, 20]]  # one tiny, one fine
            if name == "a2.png":
                boxes = [[2 + 10 * j, 5, 1, 1] for j in range(5)]
            if name == "a3.png":
                boxes.append([60, 60, 30, 30])  # leaves the 64×64 image
            for b in boxes:
                anns.append({"id": len(anns) + 1, "image_id": k, "category_id": 1 + len(anns) % 2, "bbox": b})
        (root / f"{split}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def _config(dataset: str, **over) -> dict:
    return tiny_job_config(data={"dataset": dataset, "max_objects": 2}, **over)


def _by_check(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    return leaky_dataset(tmp_path_factory.mktemp("pf") / "leaky")


def test_leakage_small_boxes_and_crowded_images_are_each_reported_with_their_fix(leaky):
    report = run_preflight(build_config(_config(str(leaky), num_bins=32)))
    found = _by_check(report)
    leak = {f["severity"]: f for f in found["leakage"]}
    assert "t0.png (test) = a0.png (train)" in leak["error"]["message"] and "remove" in leak["error"]["fix"]
    assert "t1.jpg (test) = a1.png (train)" in leak["warning"]["message"]
    assert [p["file"] for p in report["dataset"]["duplicates"]["exact"]] == ["t0.png"]
    assert [p["file"] for p in report["dataset"]["duplicates"]["near"]] == ["t1.jpg"]
    (small,) = found["box_sizes"]
    assert small["severity"] == "warning" and "smaller than one location bin" in small["message"]
    assert re.search(r"raise num_bins to \d+", small["fix"])
    assert report["dataset"]["box_sizes"]["under_one_bin"] > 0.5
    (crowded,) = found["max_objects"]
    assert "1 of 8 training images hold more objects than data.max_objects=2 (up to 5)" in crowded["message"]
    assert crowded["fix"] == "set data.max_objects to 5"
    (outside,) = found["boxes"]
    assert "outside" in outside["message"] and outside["fix"]
    assert report["ok"] is False and report["errors"] == 1
    assert report["findings"][0]["severity"] == "error"  # errors first
    # num_bins auto: preflight reads the boxes with the bins the job will choose for them
    auto = run_preflight(build_config(_config(str(leaky))))
    assert auto["dataset"]["box_sizes"]["num_bins"] == 64 and "box_sizes" not in _by_check(auto)


def test_a_clean_dataset_has_no_leakage_and_no_error():
    report = run_preflight(build_config(tiny_job_config(data={"dataset": "synthetic://retail-shelf?n=200&seed=1"})))
    checks = _by_check(report)
    assert "leakage" not in checks and "max_objects" not in checks and "box_sizes" not in checks
    assert report["ok"] and report["dataset"]["duplicates"]["exact"] == report["dataset"]["duplicates"]["near"] == []
    assert report["reward"]["zero_variance_share"] == 0.0


def test_a_reward_that_scores_every_answer_alike_is_an_error_for_grpo():
    cfg = build_config(tiny_job_config(reward="format"))  # well-formedness: every perturbation is well formed
    report = run_preflight(cfg, samples=8)
    (flat,) = [f for f in report["findings"] if f["check"] == "reward"]
    assert flat["severity"] == "error" and "100 % of GRPO groups have zero variance" in flat["message"]
    assert report["reward"]["zero_variance_share"] == 1.0 and not report["ok"]
    rft = build_config(tiny_job_config(reward="format", rl={"algorithm": "rft"}))
    assert [f["severity"] for f in run_preflight(rft, samples=8)["findings"] if f["check"] == "reward"] == ["warning"]


def test_every_step_time_cites_a_benchmark_file_holding_its_numbers():
    for row in STEP_TIMES:
        path, _, rest = row["source"].partition(": ")
        record = json.loads((ROOT / path).read_text())
        seconds_key, seconds, steps_key = re.match(r"(\w+) ([\d.]+) / (\S+)", rest).groups()
        assert record[seconds_key] == float(seconds), row
        steps = record[steps_key] if steps_key in record else int(steps_key)
        assert row["seconds_per_step"] == pytest.approx(float(seconds) / steps, rel=0.02), row


def test_cost_per_stage_on_its_gpu_and_unknown_models_are_not_guessed():
    cfg = build_config(tiny_job_config(warm_start={"enabled": True}, rl={"compute": "T4", "max_steps": 10}))
    cost = run_preflight(cfg, default_gpu={"warm_start": "L40S", "domain": "L40S", "reward": "H100", "evaluate": "L4"})["cost"]
    rows = {r["stage"]: r for r in cost["stages"]}
    assert rows["reward"]["gpu"] == "T4" and rows["domain"]["gpu"] == "L40S"
    # 10 steps at 0.234 s (8 completions a step: half the measured 16) + a minute of start, at T4 + CPU prices
    assert rows["reward"]["seconds"] == pytest.approx(10 * 0.234 / 2 + 60, abs=0.1)
    assert rows["reward"]["usd"] == pytest.approx(rows["reward"]["seconds"] * (0.59 + 0.32) / 3600, rel=0.01)
    assert cost["complete"] and cost["usd"] == pytest.approx(sum(r["usd"] for r in rows.values()), abs=1e-3)
    short = build_config(tiny_job_config(budget_minutes=0.05, domain={"max_steps": 400}))
    (budget,) = [f for f in run_preflight(short)["findings"] if f["check"] == "budget"]
    assert "budget_minutes is 0.05" in budget["message"] and "raise budget_minutes to" in budget["fix"]
    hub = build_config(tiny_job_config(model="HuggingFaceTB/SmolVLM-256M-Instruct", domain={"max_seconds": None}))
    report = run_preflight(hub)
    assert not report["cost"]["complete"]
    assert any(f["check"] == "cost" and "no measured step time" in f["message"] for f in report["findings"])


def test_a_model_that_cannot_fit_its_gpu_is_an_error_naming_the_cause():
    seven_b = "Qwen/Qwen2.5-VL-7B-Instruct"
    # lora false: the default ("auto") would already train adapters on a 7B model
    cfg = build_config(tiny_job_config(model=seven_b, rl={"enabled": False}, domain={"compute": "L4", "batch_size": 8,
                                                                                    "lora": False}))  # fmt: skip
    report = run_preflight(cfg)
    (mem,) = [f for f in report["findings"] if f["check"] == "memory" and "stage domain" in f["message"]]
    assert mem["severity"] == "error" and not report["ok"]
    # 8.29e9 parameters in bf16: 15 GiB of weights and 46 GiB of gradients and Adam moments (bf16 too, as the
    # stages train on a GPU), against an L4's 22 GiB
    assert mem["message"].startswith("stage domain does not fit its L4: about 102 GiB at its peak against 22 GiB; most of "
                                     "it is gradients and AdamW's two moments (3 copies of the weights): 46 GiB"), mem
    assert mem["fix"].startswith("set lora: true") and "or a GPU with more memory (H200)" in mem["fix"]
    domain = {r["stage"]: r for r in report["cost"]["stages"]}["domain"]["memory"]
    assert domain["fits"] is False and domain["gpu_gib"] == 22.0
    # with LoRA the frozen 16-bit weights are 15 GiB, and the batch's activations are what overflows the L4
    lora = run_preflight(build_config(tiny_job_config(model=seven_b, rl={"enabled": False},
                                                      domain={"compute": "L4", "batch_size": 8, "lora": True})))
    (mem,) = [f for f in lora["findings"] if f["check"] == "memory" and "stage domain" in f["message"]]
    assert "most of it is activations (8 examples × 1224 tokens): 31 GiB" in mem["message"]
    assert "a lower batch_size" in mem["fix"] and "or a GPU with more memory (A100-80GB)" in mem["fix"]
    on_h100 = run_preflight(build_config(tiny_job_config(model=seven_b, rl={"enabled": False},
                                                         domain={"compute": "H100", "batch_size": 8, "lora": True})))
    assert not [f for f in on_h100["findings"] if f["check"] == "memory" and "stage domain" in f["message"]]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "dreamforge.cli", "preflight", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
                          timeout=120)  # fmt: skip


def test_cli_exits_1_on_an_error_finding_and_0_without(leaky, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_config(str(leaky))))
    res = _cli(str(bad))
    assert res.returncode == 1, res.stderr
    assert "leakage" in res.stdout and "t0.png (test)" in res.stdout and "fix them before training" in res.stdout
    good = tmp_path / "good.json"
    good.write_text(json.dumps(tiny_job_config()))
    res = _cli(str(good), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True
    res = _cli(str(good), "--dataset", str(tmp_path / "missing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "missing" in res.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("preflight"), workers=0, extra_env={"DREAMFORGE_ALLOW_LOCAL_PATHS": "0"})
    yield s
    s.stop()


def test_api_preflight_reads_the_projects_uploaded_dataset_only(stack, db, leaky):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in leaky.iterdir():
            z.write(p, p.name)
    _, other_key = create_project(db, "preflight-other")
    with api(stack) as c, api(stack, other_key) as theirs:
        r = c.post("/api/datasets", params={"name": "leaky"}, content=buf.getvalue())
        assert r.status_code == 201, r.text
        ds_id = r.json()["id"]
        r = c.post("/api/preflight", json={"config": _config("synthetic://generic?n=8&seed=1"), "dataset": ds_id})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["ok"] is False
        (leak,) = [f for f in report["findings"] if f["check"] == "leakage" and f["severity"] == "error"]
        assert "t0.png (test) = a0.png (train)" in leak["message"]
        assert "gridfs" not in r.text
        assert {row["stage"]: row["gpu"] for row in report["cost"]["stages"]}["reward"] == "H100"  # Modal's default
        r = theirs.post("/api/preflight", json={"config": _config(ds_id)})
        assert r.status_code == 404 and ds_id in r.text
        r = c.post("/api/preflight", json={"config": _config(str(leaky))})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["data", "dataset"]
        r = c.post("/api/preflight", json={"preset": "retail-shelf", "overrides": {"data": {"dataset": "synthetic://retail-shelf?n=64&seed=1"}}})
        assert r.status_code == 200 and r.json()["ok"] is True, r.text


def test_api_preflight_runs_a_stored_javascript_reward(stack):
    with api(stack) as c:
        r = c.post("/api/rewards", json={"name": "flat.js", "source": "function reward(out, gt) { return 0.5; }"})
        assert r.status_code == 201, r.text
        r = c.post("/api/preflight", json={"config": tiny_job_config(), "reward": r.json()["id"], "samples": 4})
        assert r.status_code == 200, r.text
        (flat,) = [f for f in r.json()["findings"] if f["check"] == "reward"]
        assert flat["severity"] == "error" and "flat.js" in flat["message"]
        r = c.post("/api/preflight", json={"config": tiny_job_config(), "reward": "rw_0000000000000000"})
        assert r.status_code == 404



def test_a_caption_reward_is_tried_on_changed_captions():
    # the synthetic captions' images carry boxes too: perturbing only the boxes left every caption exact
    cfg = build_config(tiny_job_config(task="caption", data={"dataset": "synthetic://generic?n=24&seed=1"}))
    reward = run_preflight(cfg, samples=8)["reward"]
    means = {r["case"]: r["mean"] for r in reward["cases"]}
    assert means["exact"] == 1.0 and means["missing"] < 0.9 and means["extra"] < 0.9
    assert reward["zero_variance_share"] == 0.0
