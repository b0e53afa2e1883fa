"""Real photographs (scikit-image's bundled coins, stained nuclei, Hubble deep field) cut into a
user's COCO set: they load, round-trip through the codec at their own size, and the checks the
learning verdict makes on labels find what a real set really holds."""

import json

import pytest
import realsets

from pipeline.codec import Codec
from pipeline.data.coco import load_dataset
from pipeline.metrics import evaluate
from pipeline.verdict import answer_sameness, evidence_causes, label_limits, learning_verdict


@pytest.fixture(scope="module")
def coins(tmp_path_factory):
    return realsets.write("coins", tmp_path_factory.mktemp("coins"), n=20, tile=96)


def test_a_real_photo_set_loads_with_its_own_splits_and_boxes_inside(coins):
    ds = load_dataset(coins, "detect")
    assert ds.categories == ["coin"] and {k: len(v) for k, v in ds.splits.items()} == {"train": 12, "val": 4, "test": 4}
    for s in (s for v in ds.splits.values() for s in v):
        assert (s.width, s.height) == (96, 96) and s.image.size == (96, 96)
        assert s.target["boxes"] and all(0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96 for x1, y1, x2, y2 in s.target["boxes"])
    # the splits come from separate parts of the photograph: no held-out tile is a training tile
    pixels = {split: {s.image.tobytes() for s in v} for split, v in ds.splits.items()}
    assert not pixels["train"] & (pixels["val"] | pixels["test"])


def test_real_boxes_survive_the_location_grammar_at_their_size(coins):
    ds = load_dataset(coins, "detect")
    samples = [s for v in ds.splits.values() for s in v]
    codec = Codec("detect", ds.categories, num_bins=32, max_objects=8)
    decoded = [codec.decode(codec.encode(s.target), s.width, s.height) for s in samples]
    assert all(ok for _, ok in decoded)
    m = evaluate([d for d, _ in decoded], [s.target for s in samples], [True] * len(samples), "detect", ds.categories)
    assert m["mean_iou"] > 0.85 and m["f1_50"] == 1.0  # 3-pixel bins on 96-pixel tiles cost a few points of IoU


def test_crowded_real_tiles_name_the_object_count_the_answer_cannot_hold():
    ds = realsets.build("nuclei", n=20, tile=96)
    most = max(len(s.target["boxes"]) for s in ds.splits["train"])
    causes = label_limits(ds.splits["train"], max_objects=4, num_bins=32)
    assert most > 4 and any(f"raise data.max_objects to {most}" in c["fix"] for c in causes)
    assert not [c for c in label_limits(ds.splits["train"], max_objects=most, num_bins=32) if "max_objects" in c["fix"]]


def _held(ds):
    return [s.target for s in ds.splits["test"]]


def test_one_answer_given_to_every_image_is_named_as_the_cause_and_a_looking_model_is_not():
    # what an unlearned model did on the Hubble tiles: the same few boxes down the left edge
    gts = _held(realsets.build("galaxies", n=60, tile=96))
    same = [{"boxes": [[0, 3, 12, 18], [0, 21, 15, 42], [39, 54, 57, 69]], "labels": ["galaxy"] * 3} for _ in gts]
    blind = answer_sameness(same, gts, "detect")
    assert blind["answers"] == 1.0 and blind["labels"] < 0.15 and blind["pairs"] == len(gts) * (len(gts) - 1) // 2
    held = {"domain": 0.03}
    causes = evidence_causes(key="mean_iou", sameness=blind, fit=None, held=held, object_px=None, gap_warning=0.3)
    assert len(causes) == 1 and "nearly the same answer for every image" in causes[0]["cause"]
    # a model that found each image's own objects (its answers differ as the labels do) is not blind
    looking = answer_sameness(gts, gts, "detect")
    assert looking["answers"] == looking["labels"]
    assert not evidence_causes(key="mean_iou", sameness=looking, fit=None, held=held, object_px=None, gap_warning=0.3)


def test_fit_on_training_images_tells_memorising_from_not_fitting_and_small_objects_are_named():
    args = dict(key="mean_iou", sameness=None, gap_warning=0.3)
    unfit = {"split": "train", "n": 64, "domain": {"mean_iou": 0.04}}
    [c] = evidence_causes(fit=unfit, held={"domain": 0.03}, object_px=None, **args)
    assert "not fit even the images it trained on" in c["cause"] and "0.04" in c["cause"]
    memorised = {"split": "train", "n": 64, "domain": {"mean_iou": 0.94}, "reward": {"mean_iou": 0.88}}
    [c] = evidence_causes(fit=memorised, held={"domain": 0.43, "reward": 0.44}, object_px=None, released="domain", **args)
    assert "domain model scores 0.94" in c["cause"] and "memorised" in c["cause"] and "add labelled images" in c["fix"]
    assert not evidence_causes(fit=memorised | {"reward": {"mean_iou": 0.6}}, held={"domain": 0.43, "reward": 0.44},
                               object_px=20.0, **args)  # fmt: skip
    [c] = evidence_causes(fit=None, held={}, object_px=6.0, **args)
    assert "6.0 px" in c["cause"] and "tiles" in c["fix"]


def test_the_verdict_lists_evidence_first_and_suggests_the_warm_start_only_for_the_format():
    common = dict(key="mean_iou", split="val", n=30, released="domain", min_gain=0.05, min_parse_rate=0.9,
                  domain_steps=800, warm_started=False, label_causes=[])  # fmt: skip
    blind = [{"cause": "the model gives nearly the same answer for every image", "fix": "train longer"}]
    parsed = learning_verdict(scores={"base": {"mean_iou": 0.0}, "domain": {"mean_iou": 0.03, "parse_rate": 1.0}},
                              evidence=blind, **common)  # fmt: skip
    assert parsed["verdict"] == "did_not_learn" and parsed["causes"] == blind
    unparsed = learning_verdict(scores={"base": {"mean_iou": 0.0}, "domain": {"mean_iou": 0.03, "parse_rate": 0.5}},
                                evidence=blind, **common)  # fmt: skip
    assert [c["cause"] for c in unparsed["causes"]][0] == blind[0]["cause"]
    assert any("warm-start stage did not run" in c["cause"] for c in unparsed["causes"])
    learned = learning_verdict(scores={"base": {"mean_iou": 0.0}, "domain": {"mean_iou": 0.4, "parse_rate": 1.0}},
                               evidence=blind, **common)  # fmt: skip
    assert learned["verdict"] == "learned" and learned["causes"] == []
    # boxes near the objects but on none of them: the IoU rose, the F1 did not (the nuclei tiles)
    near = {"base": {"mean_iou": 0.001, "f1_50": 0.0}, "domain": {"mean_iou": 0.086, "f1_50": 0.02, "parse_rate": 1.0}}
    vague = learning_verdict(scores=near, evidence=[], **common, min_f1=0.1)
    assert vague["verdict"] == "did_not_learn" and vague["gain"] == pytest.approx(0.085)
    assert vague["problems"] == ["F1@0.5 0.02 on val: it finds almost none of the objects with a box overlapping them "
                                 "by half (below evaluate.min_f1 0.1)"]  # fmt: skip
    assert learning_verdict(scores=near, evidence=[], **common)["verdict"] == "learned"  # min_f1 0 turns it off
    found = {**near, "domain": {**near["domain"], "f1_50": 0.3}}
    assert learning_verdict(scores=found, evidence=[], **common, min_f1=0.1)["verdict"] == "learned"


def _first_stage(tmp_path, name: str, cfg: dict) -> tuple[dict, list[str]]:
    """Run stage 2 for two steps; the built base model's config and the job's log lines."""
    import os
    import subprocess
    import sys

    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pipeline.run", "--config", str(tmp_path / f"{name}.json"), "--output",
                          str(out), "--stages", "2", "--quiet"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(x).get("message", "") for x in (out / "events.jsonl").read_text().splitlines()]
    return json.loads((out / "base-model" / "config.json").read_text()), lines


def test_the_built_in_model_reads_a_one_category_set_through_one_image_token_and_says_why(coins, tmp_path):
    quick = {"domain": {"max_steps": 2, "val_checks": 0}}
    config, lines = _first_stage(tmp_path, "coins", {"data": {"dataset": str(coins)}, **quick})
    # Idefics3 at the tiles' own 96 px: 8x8 patches of 12 px, all folded into one token by the pixel shuffle
    assert config["model_type"] == "idefics3" and config["scale_factor"] == 8
    assert config["vision_config"]["patch_size"] == 12 and config["vision_config"]["image_size"] == 96
    assert "vision_layout: one_token (one category: where each object is matters more than telling categories apart)" in lines
    assert "image_size: 96 (the training images' median side is 96 px)" in lines
    assert any(x.startswith("num_bins: 32 (the smallest tenth of the boxes (") for x in lines)
    # three categories keep LLaVA's patch tokens; the config's own choice wins over auto
    many = {"data": {"dataset": "synthetic://generic?n=24&seed=1"}, **quick}
    config, lines = _first_stage(tmp_path, "generic", many)
    assert config["model_type"] == "llava" and config["image_seq_length"] == 16
    assert "vision_layout: patch_tokens (3 categories: patch tokens tell them apart better)" in lines
    mine = {"vision_layout": "patch_tokens", "image_size": 64, "num_bins": 48}
    config, lines = _first_stage(tmp_path, "coins-patches", {"data": {"dataset": str(coins)}, **mine, **quick})
    assert config["model_type"] == "llava" and "vision_layout: patch_tokens (set in the config)" in lines
    assert config["vision_config"]["image_size"] == 64 and not any(x.startswith(("image_size:", "num_bins:")) for x in lines)
    assert any("a location bin is 2.1% (num_bins 48)" in x for x in lines)


class _Lines:
    def __init__(self):
        self.lines = []

    def log(self, message, **kw):
        self.lines.append(message)


def test_image_size_and_bins_follow_the_images_and_their_smallest_boxes(coins, tmp_path):
    from pipeline.config import build_config
    from pipeline.data import load_dataset as load_any
    from pipeline.sizing import sized

    galaxies = realsets.write("galaxies", tmp_path / "galaxies", n=20, tile=96)
    cfg = build_config({})
    sets = {"coins": coins, "galaxies": galaxies, "big": "synthetic://generic?n=12&seed=1&size=200",
            "small": realsets.write("coins", tmp_path / "small", n=20, tile=24)}
    chosen = {}
    for name, folder in sets.items():
        rep = _Lines()
        c = sized(cfg, load_any(str(folder), "detect"), rep)
        chosen[name] = (c.image_size, c.num_bins, rep.lines)
    assert chosen["coins"][:2] == (96, 32)
    # galaxies of 6 px and more on 96-pixel tiles: 3-px bins already give them two (64 bins parsed worse)
    assert chosen["galaxies"][:2] == (96, 32) and chosen["galaxies"][2][1].startswith("num_bins: 32 (the smallest tenth")
    assert chosen["big"][:2] == (128, 32) and "128 px is the most the built-in model reads" in chosen["big"][2][0]
    assert chosen["small"][0] == 32 and "32 px is the least" in chosen["small"][2][0]
    # a number in the config is kept as it is
    assert sized(build_config({"image_size": 64, "num_bins": 32}), load_any(str(galaxies), "detect")).image_size == 64


def test_one_token_needs_an_image_size_it_can_cut_into_8x8_patches():
    from pipeline.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=r"vision_layout: one_token .* image_size 60 is not a multiple of 8; use 56 or 64"):
        build_config({"image_size": 60, "vision_layout": "one_token"})
    assert build_config({"image_size": 60}).vision_layout == "auto"  # auto then keeps patch tokens
