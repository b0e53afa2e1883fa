"""The pipeline is architecture-generic: stages 2-4 on tiny random models of real VLM families
(loaded by path through the Auto classes, exactly as a hub id would be)."""

import json

import pytest

from pipeline.config import build_config
from pipeline.data import load_dataset
from pipeline.job import make_codec, run_job
from pipeline.models.tiny import build_tiny_vlm
from tests.conftest import tiny_job_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_stages_2_to_4_run_on_another_vlm_family(family, tmp_path):
    raw = tiny_job_config()
    cfg = build_config(raw)
    ds = load_dataset(cfg.data.dataset, cfg.task)
    codec = make_codec(cfg, ds)
    model_dir = build_tiny_vlm(
        tmp_path / family, family=family, special_tokens=codec.special_tokens(), extra_words=ds.categories
    )
    cfg = build_config({**raw, "model": str(model_dir)})
    record = run_job(cfg, tmp_path / "out", stages=[2, 3, 4])
    assert record["stages"]["warm_start"]["state"] == "skipped"
    assert [s for s in ("domain", "reward", "evaluate") if record["stages"][s]["state"] == "completed"] == [
        "domain", "reward", "evaluate"
    ]
    ev = record["evaluation"]
    models, key = ev["models"], ev["primary_metric"]
    assert set(models) >= {"base", "domain", "reward"} and ev["n"] > 0
    for name in ("base", "domain", "reward"):  # every model scored by the same held-out evaluation
        m = models[name]
        assert m.keys() == models["base"].keys() and 0.0 <= m["parse_rate"] <= 1.0 and 0.0 <= m[key] <= 1.0, (name, m)
    assert ev["release"]["stage"] in ("domain", "reward")  # stage 1 was skipped: it cannot be released
    from transformers import AutoModelForImageTextToText

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "out" / "model")
    assert type(reloaded).__name__.lower().startswith(family.replace("_", "").split("vl")[0][:5])


@pytest.mark.parametrize(("family", "codec", "fmt"), [
    ("qwen2_5_vl", "auto", "qwen-json"),
    ("paligemma", "auto", "paligemma"),
    ("florence2", "auto", "florence"),
    ("idefics3", "text", "text"),
])  # fmt: skip
def test_stages_2_to_4_run_in_each_familys_native_format(family, codec, fmt, tmp_path):
    """A model that already grounds objects is trained and scored in its own format, with its own
    prompt: the base row reads the pretrained model's answers as the model card says to.
    Florence-2, an encoder-decoder, trains stage 3 by rejection sampling (GRPO is decoder-only)."""
    rl = {"algorithm": "rft"} if family == "florence2" else {}
    raw = tiny_job_config(codec=codec, rl=rl)
    cfg = build_config(raw)
    ds = load_dataset(cfg.data.dataset, cfg.task)
    model_dir = build_tiny_vlm(tmp_path / family, family=family, extra_words=ds.categories, layers=1)
    record = run_job(build_config({**raw, "model": str(model_dir)}), tmp_path / "out", stages=[2, 3, 4])
    assert [record["stages"][s]["state"] for s in ("domain", "reward", "evaluate")] == ["completed"] * 3
    models = record["evaluation"]["models"]
    assert {"base", "domain", "reward"} <= set(models) and "parse_rate" in models["base"]
    spec = json.loads((tmp_path / "out" / "model" / "dreamforge_codec.json").read_text())
    assert spec["format"] == fmt  # predict and serve read the release in the same format
    vocab = json.loads((tmp_path / "out" / "model" / "tokenizer.json").read_text())
    added = {t["content"] for t in vocab["added_tokens"]}
    if fmt != "florence":  # Florence-2's own <loc_N> are its tokens; no DreamForge grammar is bolted on
        assert not any(t.startswith("<loc_") for t in added)
    assert record["stages"]["domain"]["train_loss"] > 0


def test_lora_stage_trains_adapters_and_saves_a_merged_model(tmp_path):
    raw = tiny_job_config(domain={"lora": True, "lora_r": 4, "max_steps": 3, "lr": 0.01})
    cfg = build_config(raw)
    record = run_job(cfg, tmp_path / "out", stages=[2, 4])
    assert record["stages"]["domain"]["state"] == "completed"
    model_dir = tmp_path / "out" / "stages" / "domain" / "model"
    assert not (model_dir / "adapter_config.json").exists()  # merged: a plain model
    # and its adapters beside it, for those who serve LoRA adapters over the base
    adapter = json.loads((model_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and (model_dir / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "out" / "model" / "adapter" / "adapter_config.json").exists()  # the release keeps them
    import torch
    from safetensors.torch import load_file

    base = load_file(next((tmp_path / "out" / "base-model").glob("*.safetensors")))
    tuned = load_file(next(model_dir.glob("*.safetensors")))
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all("language_model" in k for k in changed)  # vision untouched by LoRA


def test_qlora_trains_adapters_over_a_4bit_base_and_saves_a_16bit_merged_model(tmp_path):
    import torch
    from safetensors.torch import load_file

    raw = tiny_job_config(domain={"qlora": True, "lora_r": 4, "max_steps": 3, "lr": 0.01, "val_checks": 0})
    record = run_job(build_config(raw), tmp_path / "out", stages=[2])
    assert record["stages"]["domain"]["state"] == "completed"
    model_dir = tmp_path / "out" / "stages" / "domain" / "model"
    assert "quantization_config" not in json.loads((model_dir / "config.json").read_text())  # merged into 16-bit
    assert json.loads((model_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    base = load_file(next((tmp_path / "out" / "base-model").glob("*.safetensors")))
    tuned = load_file(next(model_dir.glob("*.safetensors")))
    assert base.keys() == tuned.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all("language_model" in k for k in changed)
