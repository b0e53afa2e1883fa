"""Every task runs through all four stages with its built-in reward and metric."""

import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO

from pipeline.config import build_config
from pipeline.job import run_job
from pipeline.metrics import primary_metric
from tests.conftest import tiny_job_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("task", "reward", "extra_metric"),
    [("segment", "mask_iou", "mask_iou"), ("keypoints", "oks", "oks"), ("caption", "caption", "caption_f1")],
)
def test_task_runs_all_four_stages(task, reward, extra_metric, tmp_path):
    kind = {"segment": "generic", "keypoints": "traffic-camera", "caption": "medical-scan"}[task]
    cfg = build_config(tiny_job_config(task=task, kind=kind))
    record = run_job(cfg, tmp_path / "out")
    assert record["reward"] == reward
    assert all(record["stages"][s]["state"] == "completed" for s in ("warm_start", "domain", "reward", "evaluate"))
    ev = record["evaluation"]
    assert ev["primary_metric"] == primary_metric(task) == extra_metric
    for name in ("base", "warm_start", "domain", "reward"):
        assert 0.0 <= ev["models"][name][extra_metric] <= 1.0
    assert (tmp_path / "out" / "model" / "dreamforge_codec.json").exists()
    if task == "caption":
        assert not (tmp_path / "out" / "predictions_coco.json").exists()
        return
    # the released model's held-out answers in COCO's results format, beside metrics.json
    assert ev["coco_export"]["model"] == ev["release"]["stage"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "out" / "ground_truth_coco.json"))
        results = json.loads((tmp_path / "out" / "predictions_coco.json").read_text())
        if results:  # a tiny model may answer nothing; loadRes refuses an empty list
            gt.loadRes(results)
    assert len(gt.getImgIds()) == ev["n"] and len(results) == ev["coco_export"]["predictions_n"]
    released = ev["models"][ev["release"]["stage"]]
    assert {"ap", "ap50", "ap_per_class", {"segment": "mask_ap", "keypoints": "kp_ap"}[task]} <= set(released)
