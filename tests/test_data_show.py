"""``dreamforge data show``: the prompt and the exact target a model is trained on, per sample."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.codecs import make_format_codec
from pipeline.geometry import box_iou
from pipeline.models.tiny import build_tiny_vlm
from pipeline.show import show_samples
from tests.conftest import ROOT

DATA = "synthetic://retail-shelf?n=8&seed=1"
KEYS = {"file", "width", "height", "input_width", "input_height", "prompt", "target", "canonical"}


def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamforge.cli", "data", "show", DATA, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(("model", "fmt", "opts"), [
    ("qwen2_5_vl", "qwen-json", {"coords": "pixels"}),
    ("paligemma", "paligemma", {}),
    ("florence2", "florence", {}),
    ("dreamforge-tiny", "loc", {}),
])  # fmt: skip
def test_each_sample_has_its_prompt_and_exact_target(model, fmt, opts):
    rows, _ = show_samples(DATA, model, n=2)
    assert len(rows) == 2 and all(r.keys() == KEYS for r in rows)
    cats = ["cola", "water", "chips", "soap"]
    codec = make_format_codec(fmt, "detect", cats, max_objects=16, **opts)
    for r in rows:
        assert r["prompt"] == codec.prompt()
        out, ok = codec.decode(r["target"], r["width"], r["height"])  # the target is the format's own text
        assert ok and sorted(out["labels"]) == sorted(r["canonical"]["labels"])
        for got in out["boxes"]:
            assert max(box_iou(got, want) for want in r["canonical"]["boxes"]) > 0.8
    if fmt == "qwen-json":  # Qwen2.5-VL's pixels are those of the resized image
        assert (rows[0]["input_width"], rows[0]["input_height"]) == codec.input_size(rows[0]["width"], rows[0]["height"])


def test_a_model_folder_shows_the_prompt_through_its_chat_template(tmp_path):
    model = build_tiny_vlm(tmp_path / "q", family="qwen2_5_vl", layers=1)
    rows, why = show_samples(DATA, str(model), n=1)
    assert rows[0]["prompt"].startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Locate every")
    assert why.startswith("qwen-json: Qwen2.5-VL")


def test_the_command_prints_json_or_a_table():
    rows = json.loads(show("--model", "paligemma", "--n", "2", "--json").stdout)
    assert len(rows) == 2 and rows[0].keys() == KEYS
    res = show("--model", "florence2", "--n", "1")
    assert res.returncode == 0 and "output format florence: Florence-2" in res.stdout
    assert "prompt: '<OD>'" in res.stdout and "target: " in res.stdout and "<loc_" in res.stdout


def test_a_format_that_cannot_write_the_task_is_a_clear_error():
    res = show("--model", "paligemma", "--task", "segment")
    assert res.returncode == 1 and "VQ-VAE" in res.stderr and "Traceback" not in res.stderr
