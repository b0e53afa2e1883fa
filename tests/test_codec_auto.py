"""``codec: "auto"``: the model's own output format, and never an existing token with a second
meaning. The tiny models carry their families' real special tokens (pipeline.models.tiny_families)."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, build_config
from pipeline.data import load_dataset
from pipeline.job import make_codec
from pipeline.models.tiny import build_tiny_vlm
from pipeline.reporter import BaseReporter
from tests.conftest import tiny_job_config


class Log(BaseReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def ds():
    cfg = build_config(tiny_job_config())
    return load_dataset(cfg.data.dataset, cfg.task)


@pytest.fixture(scope="module")
def models(tmp_path_factory, ds):
    root = tmp_path_factory.mktemp("families")
    built = {f: build_tiny_vlm(root / f, family=f, extra_words=ds.categories, image_size=64, patch=8, layers=1)
             for f in ("florence2", "paligemma", "qwen2_5_vl", "idefics3")}  # fmt: skip
    built["loc32"] = build_tiny_vlm(root / "loc32", family="llava", extra_words=ds.categories, image_size=32,
                                    special_tokens=[f"<loc_{i}>" for i in range(32)], layers=1)  # fmt: skip
    return built


def codec_on(model, ds, **over):
    log = Log()
    cfg = build_config(tiny_job_config(model=str(model), **over))
    return make_codec(cfg, ds, log), log.lines


def test_florence2_location_tokens_keep_their_meaning(models, ds):
    """Florence-2's <loc_0>…<loc_999> mean thousandths of the image. DreamForge's own grammar
    (32 bins) would have reused them as 32nds, silently: it is refused, naming the token, and
    auto adopts Florence-2's meaning instead, adding nothing to the vocabulary."""
    with pytest.raises(ConfigError, match=r"<loc_0>.*thousandths of the image \(Florence-2\)"):
        codec_on(models["florence2"], ds, codec="loc")
    codec, log = codec_on(models["florence2"], ds)
    assert codec.format == "florence" and codec.num_bins == 1000
    assert any("output format florence" in line and "<loc_999>" in line for line in log)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["florence2"])
    assert set(codec.special_tokens()) <= set(tok.get_vocab())  # adopted, none added
    t = {"boxes": [[0.0, 0.0, 32.0, 16.0]], "labels": [ds.categories[0]], "image": {"width": 64, "height": 64}}
    assert codec.encode(t).endswith("<loc_0><loc_0><loc_500><loc_250>")  # thousandths, not 32nds


@pytest.mark.parametrize(("family", "fmt", "why"), [
    ("paligemma", "paligemma", "<loc0000>"),
    ("qwen2_5_vl", "qwen-json", "pixels of its resized input"),
    ("idefics3", "loc", "no grounding vocabulary"),
    ("loc32", "loc", "built by DreamForge with 32 location tokens"),
])  # fmt: skip
def test_auto_picks_each_familys_format_and_says_why(models, ds, family, fmt, why):
    codec, log = codec_on(models[family], ds)
    assert codec.format == fmt
    assert any(f"output format {fmt}: " in line and why in line for line in log), log


def test_qwen25_pixels_use_the_models_own_resize(models, ds):
    codec, _ = codec_on(models["qwen2_5_vl"], ds)
    # the tiny processor: patch 8 × merge 2, exactly 64×64 pixels
    assert (codec.coords, codec.factor, codec.min_pixels, codec.max_pixels) == ("pixels", 16, 4096, 4096)
    from PIL import Image
    from transformers import AutoProcessor

    from pipeline.models.loading import _register_compat

    _register_compat(models["qwen2_5_vl"])
    processor = AutoProcessor.from_pretrained(models["qwen2_5_vl"])
    for w, h in ((300, 100), (64, 64), (40, 90)):
        _, gh, gw = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        assert codec.input_size(w, h) == (int(gw) * 8, int(gh) * 8)  # what the model was fed, in pixels


def test_paligemma_tokens_are_not_taken_for_another_grammar(models, ds):
    codec, _ = codec_on(models["paligemma"], ds, codec="text")  # plain numbers: no token reused
    assert codec.format == "text" and codec.special_tokens() == []
    with pytest.raises(ConfigError, match="VQ-VAE"):
        codec_on(models["paligemma"], ds, task="segment", reward="default")


def test_dreamforge_tokens_keep_their_bins(models, ds):
    codec_on(models["loc32"], ds, codec="loc")  # the bins it was built for
    with pytest.raises(ConfigError, match=r"<loc_0>, which already means 32 bins"):
        codec_on(models["loc32"], ds, codec="loc", num_bins=64)


def test_the_builtin_model_is_built_for_the_chosen_format(ds):
    codec = make_codec(build_config(tiny_job_config()), ds, Log())
    assert codec.format == "loc"
    assert make_codec(build_config(tiny_job_config(codec="text")), ds).format == "text"


def test_grpo_on_an_encoder_decoder_is_refused_before_training(models, tmp_path):
    from pipeline.job import run_job

    cfg = build_config(tiny_job_config(model=str(models["florence2"])))
    with pytest.raises(ConfigError, match="rl.algorithm: florence2 is an encoder-decoder.*'rft'"):
        run_job(cfg, tmp_path / "out", stages=[2, 3, 4])
    assert not (tmp_path / "out" / "stages" / "domain" / "DONE.json").exists()


def test_florence2_answers_keep_its_location_tokens(models, ds):
    """Florence-2's <loc_N> are special tokens of its tokenizer: decoding answers with
    skip_special_tokens would strip every coordinate. The format's own tokens are kept."""
    import torch
    from PIL import Image

    from pipeline.device import pick_device
    from pipeline.models.loading import load_model
    from pipeline.predict import generate_texts

    codec, _ = codec_on(models["florence2"], ds)
    model, processor = load_model(models["florence2"], pick_device())
    loc5 = processor.tokenizer.convert_tokens_to_ids("<loc_5>")
    assert processor.tokenizer.decode([loc5], skip_special_tokens=True) == ""  # what the old decoding did
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():  # a decoder that can only say <loc_5>
        head.weight.zero_()
        head.bias.fill_(-1e4)
        head.bias[loc5] = 0.0
    model.lm_head = head
    (text,) = generate_texts(model, processor, [Image.new("RGB", (64, 64))], codec, max_new_tokens=4)
    assert text.count("<loc_5>") >= 3
