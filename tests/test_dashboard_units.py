"""The dashboard's pure helpers: curve extraction, thinning, time estimates, key metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from dashboard import jobview as page
from dashboard import ui
from dashboard.api import describe
from pipeline.stage_table import STAGES


def test_curves_drop_end_of_stage_summaries_when_the_stage_logged_steps():
    points = [
        {"stage": "domain", "step": 1, "values": {"loss": 2.0}},
        {"stage": "domain", "step": 2, "values": {"loss": 1.0}},
        {"stage": "domain", "step": 2, "values": {"train_loss": 1.5, "train_runtime": 3.0}},  # summary
        {"stage": "warm_start", "step": 6, "values": {"train_loss": 5.5, "train_runtime": 1.0}},  # only a summary
        {"stage": "reward", "step": 1, "values": {"reward": 0.3, "loss": 0.0}},
    ]
    loss = page.curves(points, ("loss", "train_loss"))
    assert list(zip(loss["stage"], loss["step"], loss["value"])) == [("domain", 1, 2.0), ("domain", 2, 1.0), ("reward", 1, 0.0),
                                                                      ("warm_start", 6, 5.5)]  # fmt: skip
    reward = page.curves(points, ("reward",))
    assert list(reward["value"]) == [0.3]


def test_thin_keeps_the_ends_and_caps_the_points():
    df = pd.DataFrame({"step": range(5000), "value": range(5000)})
    out = page.thin(df, 2000)
    assert len(out) <= 2001 and out["step"].iloc[0] == 0 and out["step"].iloc[-1] == 4999
    assert out["step"].is_monotonic_increasing
    assert len(page.thin(df.head(10), 2000)) == 10


def test_remaining_time_extrapolates_progress():
    start = datetime.now(UTC) - timedelta(seconds=100)
    stages = {s: {"started_at": None} for s in STAGES}
    stages["warm_start"]["started_at"] = start.isoformat()
    final = ("succeeded", "failed")
    elapsed, remaining = page.timing({"status": "running", "progress": 25.0, "stages": stages}, final)
    assert 99 <= elapsed <= 110 and 290 <= remaining <= 330  # 25 % in 100 s: 300 s to go
    assert page.timing({"status": "running", "progress": 0.0, "stages": stages}, final)[1] is None
    assert page.timing({"status": "queued", "progress": 0.0, "stages": {s: {} for s in STAGES}}, final) == (None, None)
    assert page.timing({"status": "failed", "progress": 40.0, "stages": stages}, final)[1] == 0.0  # finished: nothing left


def test_key_metric_prefers_the_held_out_metric_then_the_running_stage():
    done = {"result": {"primary_metric": "mean_iou", "models": {"base": {"mean_iou": 0.1}, "reward": {"mean_iou": 0.6}}}}
    assert ui.key_metric(done) == ("mean_iou", 0.6)
    running = {"stage": "reward", "metrics": {"reward": {"step": 3, "reward": 0.42, "loss": 0.1}}}
    assert ui.fmt_metric(running) == "reward 0.420"
    assert ui.fmt_metric({"stage": None, "metrics": {}}) == "–"


def test_models_table_orders_stages_and_keeps_numbers_only():
    rows = ui.models_table({"models": {"4bit": {"mean_iou": 0.5}, "base": {"mean_iou": 0.1, "note": "x"},
                                       "reward": {"mean_iou": 0.55}, "domain": {"mean_iou": 0.4}}})  # fmt: skip
    assert [r["model"] for r in rows] == ["base", "domain SFT", "reward RL", "4-bit"]
    assert rows[0] == {"model": "base", "mean_iou": 0.1}


def test_api_errors_read_as_one_line_with_field_paths():
    assert describe([{"loc": ["body", "rl", "beta"], "msg": "must be >= 0"}, {"loc": [], "msg": "bad"}]) == "rl.beta: must be >= 0; bad"
    assert describe("job x not found") == "job x not found"


def test_the_dashboard_never_imports_a_database_driver():
    """It speaks HTTP only, so it can be deployed where the database is unreachable."""
    import subprocess
    import sys

    code = ("import sys, dashboard.api, dashboard.stream, dashboard.ui, dashboard.jobview; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pymongo', 'gridfs', 'dreamforge', 'torch')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fit_caption_flags_memorisation_only_past_the_gap():
    assert ui.fit_caption({"primary_metric": "mean_iou"}) == ""
    fit = {"n": 42, "domain": {"mean_iou": 0.90, "gap": 0.65}, "reward": {"mean_iou": 0.89, "gap": 0.62}}
    line = ui.fit_caption({"primary_metric": "mean_iou", "train_fit": fit})
    assert line.startswith("reward RL on 42 of its training images: mean_iou 0.890 (+0.620 vs held-out)")
    assert "memorised" in line
    ok = {"n": 64, "domain": {"mean_iou": 0.62, "gap": 0.05}}
    line = ui.fit_caption({"primary_metric": "mean_iou", "train_fit": ok})
    assert line.startswith("domain SFT on 64") and "memorised" not in line


def test_stage_knob_defaults_are_the_curriculums_own():
    from pipeline.config import CurriculumConfig

    cfg, defaults = CurriculumConfig(), ui.stage_defaults()
    assert list(defaults) == ["warm_start", "domain", "rl"]  # config sections of the trained stages
    for section, d in defaults.items():
        for knob in ("epochs", "max_steps", "lr"):
            assert d[knob] == getattr(getattr(cfg, section), knob), (section, knob)
    assert (defaults["rl"]["num_generations"], defaults["rl"]["batch_size"]) == (cfg.rl.num_generations, cfg.rl.batch_size)


def test_try_it_draws_station_answers_where_they_point():
    from PIL import Image

    from dashboard.tryit import COLOUR, draw_answer

    blank = Image.new("RGB", (200, 100), (0, 0, 0))
    drawn, said = draw_answer(blank, {"objects": [{"x_min": 0.25, "y_min": 0.2, "x_max": 0.75, "y_max": 0.8, "label": "can"}]})
    assert said == "1 object found" and drawn.size == (200, 100)
    assert drawn.getpixel((50, 50)) == COLOUR and drawn.getpixel((149, 50)) == COLOUR  # the box's left and right edges
    assert drawn.getpixel((100, 50)) == (0, 0, 0) and drawn.getpixel((10, 10)) == (0, 0, 0)  # inside and outside: untouched
    drawn, said = draw_answer(blank, {"points": [{"x": 0.5, "y": 0.5}, {"x": 0.1, "y": 0.1}]})
    assert said == "2 points found" and drawn.getpixel((100, 50)) == (0, 0, 0)
    assert COLOUR in {drawn.getpixel((100 + dx, 50)) for dx in range(-6, 7)}
    assert draw_answer(blank, {"caption": "a shelf"})[1] == "caption: a shelf"
    assert draw_answer(blank, {"objects": []})[1] == "0 objects found"
