"""Real photographs (scikit-image's bundled coins, stained nuclei, Hubble deep field) cut into a
user's COCO set: they load, round-trip through the codec at their own size, and the checks the
learning verdict makes on labels find what a real set really holds."""

import pytest
import realsets

from pipeline.codec import Codec
from pipeline.data.coco import load_dataset
from pipeline.metrics import evaluate
from pipeline.verdict import label_limits


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
