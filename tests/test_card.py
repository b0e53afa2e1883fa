"""The model card: Hub metadata a user can rely on, and how to read the chosen format."""

from __future__ import annotations

import json

import yaml

from pipeline.card import write_model_card
from pipeline.codecs import make_format_codec
from pipeline.config import build_config
from tests.conftest import tiny_job_config

QWEN = "Qwen/Qwen2.5-VL-3B-Instruct"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def record() -> dict:
    models = {"base": {"map50": 0.12, "parse_rate": 0.9}, "domain": {"map50": 0.51, "parse_rate": 1.0},
              "4bit": {"map50": 0.5, "parse_rate": 1.0}}  # fmt: skip
    return {"reward": "iou", "evaluation": {"primary_metric": "map50", "split": "test", "n": 12, "models": models,
            "release": {"stage": "domain", "release_dir": "out/model-4bit", "release_format": "nf4"}}}  # fmt: skip


def test_the_card_names_the_base_model_its_data_and_held_out_results(tmp_path):
    cfg = build_config(tiny_job_config(model=QWEN))
    for d in ("model", "model-4bit"):
        (tmp_path / d).mkdir()
    codec = make_format_codec("qwen-json", "detect", ["cola"], coords="pixels")
    (tmp_path / "model" / "dreamforge_codec.json").write_text(json.dumps(codec.spec()))
    write_model_card(tmp_path, cfg, record())
    full = front_matter((tmp_path / "model" / "README.md").read_text())
    q4 = front_matter((tmp_path / "model-4bit" / "README.md").read_text())
    assert full["base_model"] == QWEN and full["base_model_relation"] == "finetune"
    assert q4["base_model"] == QWEN and q4["base_model_relation"] == "quantized"
    assert full["pipeline_tag"] == "image-text-to-text" and full["datasets"] == [cfg.data.dataset]
    result = full["model-index"][0]["results"][0]
    assert result["task"]["type"] == "object-detection" and result["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"map50": 0.51, "parse_rate": 1.0}
    q_metrics = {m["type"]: m["value"] for m in q4["model-index"][0]["results"][0]["metrics"]}
    assert q_metrics["map50"] == 0.5  # the 4-bit export's own held-out score
    body = (tmp_path / "model" / "README.md").read_text()
    assert "Output format `qwen-json`" in body and "bbox_2d" in body and "x · width / input_width" in body


def test_a_local_base_model_is_not_named_as_a_hub_model(tmp_path):
    cfg = build_config(tiny_job_config())
    (tmp_path / "model").mkdir()
    write_model_card(tmp_path, cfg, record())
    meta = front_matter((tmp_path / "model" / "README.md").read_text())
    assert "base_model" not in meta and "Output format `loc`" in (tmp_path / "MODEL_CARD.md").read_text()
