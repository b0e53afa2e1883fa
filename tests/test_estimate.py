"""Memory and time per stage, said before training; a stage that cannot fit fails at once."""

from __future__ import annotations

import json
import struct

import pytest

from pipeline.config import ConfigError, build_config
from pipeline.estimate import LORA_AUTO_PARAMS, ModelShape, count_params, estimate_stage, lora_wanted
from tests.conftest import tiny_job_config

# Qwen2.5-VL-3B's language model (its config.json): hidden 2048, 36 layers, MLP 11008, 3.75B in all.
QWEN3B = ModelShape(3_754_622_976, 2048, 36, 11008)


def test_lora_auto_turns_on_above_a_billion_parameters():
    assert lora_wanted("auto", 500_000_000) == (False, "0.50B parameters ≤ 1B (lora: auto)")
    assert lora_wanted("auto", LORA_AUTO_PARAMS + 1)[0] is True
    assert lora_wanted(False, 10 * LORA_AUTO_PARAMS) == (False, "set in the config")


def test_a_3b_model_fits_an_a10g_with_lora_and_not_in_full():
    kw = dict(r=16, batch=4, seq=520, new_tokens=200, generations=1, cuda_gib=None, bytes_per=2)
    full = estimate_stage("domain", QWEN3B, lora=False, gpu="A10G", **kw)
    lora = estimate_stage("domain", QWEN3B, lora=True, gpu="A10G", **kw)
    # bf16 weights + gradients + two Adam moments = 8 bytes a parameter: 28 GiB before activations
    assert 30 < full.memory_gib < 45 and not full.fits()
    assert 7 < lora.memory_gib < 16 and lora.fits() and lora.trainable < 0.02 * QWEN3B.params
    assert "GiB of 22 GiB on A10G" in full.line() and "full fine-tuning" in full.line()
    qlora = estimate_stage("domain", QWEN3B, lora=True, qlora=True, gpu="T4", **kw)
    assert qlora.memory_gib < lora.memory_gib - 4 and qlora.fits() and "QLoRA" in qlora.line()  # 3B on a 16 GB T4


def header_only_model(folder, params: int, hidden: int, layers: int) -> None:
    """A model folder whose safetensors header declares ``params`` weights (no data): the
    estimate reads headers only, so a 7B model costs nothing to describe."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {
        "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": 4 * hidden}}))  # fmt: skip
    header = json.dumps({"w": {"dtype": "BF16", "shape": [params], "data_offsets": [0, 2 * params]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


def test_a_stage_that_cannot_fit_its_gpu_fails_before_training_with_the_numbers(tmp_path):
    from pipeline.job import run_job

    header_only_model(tmp_path / "big", 7_000_000_000, 4096, 32)
    assert count_params(tmp_path / "big") == 7_000_000_000
    cfg = build_config(tiny_job_config(model=str(tmp_path / "big"), domain={"lora": False, "compute": "A10G"}))
    with pytest.raises(ConfigError, match=r"stage domain: full fine-tuning, 7000.0M trainable .* GiB of 22 GiB on A10G.*"
                                          r"does not fit. Turn lora on"):  # fmt: skip
        run_job(cfg, tmp_path / "out", stages=[2, 3, 4])
    assert not (tmp_path / "out" / "stages" / "domain" / "DONE.json").exists()


def test_evaluation_holds_the_weights_and_grpo_with_a_reference_holds_two_copies():
    kw = dict(lora=False, r=16, batch=4, seq=520, new_tokens=200, generations=8, gpu="H100", cuda_gib=None, bytes_per=2)
    ev = estimate_stage("evaluate", QWEN3B, **kw)
    rl = estimate_stage("reward", QWEN3B, **kw)
    with_ref = estimate_stage("reward", QWEN3B, reference=True, **kw)
    assert ev.trainable == 0 and "inference" in ev.line() and ev.memory_gib < rl.memory_gib
    weights = QWEN3B.params * 2 / 1024**3
    assert abs(with_ref.memory_gib - rl.memory_gib - weights * 1.1) < 0.05  # one more 16-bit copy, plus its slack
    assert abs(sum(rl.terms.values()) - rl.memory_gib) < 0.05
    assert rl.largest()[0] == "activations (32 examples × 520 tokens)"  # 4 prompts × 8 answers each


def test_the_one_token_built_in_model_is_estimated_at_its_one_image_token(tmp_path):
    from pipeline.estimate import model_shape
    from pipeline.models.tiny import build_tiny_vlm

    one = build_tiny_vlm(tmp_path / "one", family="idefics3", image_size=64, patch=8, merge=8, layers=1)
    patches = build_tiny_vlm(tmp_path / "patches", family="llava", image_size=64, patch=16, layers=1)
    # one image token (8x8 patches shuffled into one) and 16 patch tokens, each plus 64 of text
    assert model_shape(str(one))[1] == 1 + 64 and model_shape(str(patches))[1] == 16 + 64
