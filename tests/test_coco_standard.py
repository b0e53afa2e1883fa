"""COCO's conventions, read right: crowd regions, the annotation's area and per-keypoint sigmas
for OKS, multi-part masks, and the standard metrics checked against pycocotools itself."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline.augment import hflip
from pipeline.codec import Codec
from pipeline.data import load_dataset
from pipeline.metrics import evaluate
from pipeline.structures import empty_target

# ------------------------------------------------------------------------------ helpers


def _write_coco(root, doc, sizes) -> None:
    """``doc`` as annotations.json beside plain grey images of the given ``{name: (w, h)}``."""
    for name, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (90, 90, 90)).save(root / name)
    (root / "annotations.json").write_text(json.dumps(doc))


def _tgt(boxes=(), labels=(), w=64, h=64, **extra):
    t = empty_target(w, h)
    t["boxes"], t["labels"] = [list(b) for b in boxes], list(labels)
    t.update(extra)
    return t


# ------------------------------------------------------------------------------- crowds


def test_crowd_regions_are_loaded_as_ignore_regions_never_as_training_objects(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 10, 30, 40], "iscrowd": 1,
                            "segmentation": {"size": [48, 64], "counts": [1200, 600, 1272]}}],
           "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    _write_coco(tmp_path, doc, {"a.png": (64, 48)})
    ds = load_dataset(tmp_path, "detect", fractions=(1.0, 0.0, 0.0))
    (s,) = ds.splits["train"]
    assert s.target["boxes"] == [[2.0, 2.0, 12.0, 12.0]] and s.target["labels"] == ["person"]
    # the box runs past the 48-pixel bottom edge: clipped like any box
    assert s.target["crowd"] == [{"box": [30.0, 10.0, 60.0, 48.0], "label": "person"}]
    assert not ds.warnings  # kept, not "skipped"
    text = Codec("detect", ["person"]).encode(s.target)
    assert text.count("person") == 1  # the training target holds the single person only
    mirrored = hflip(s)
    assert mirrored.target["crowd"] == [{"box": [4.0, 10.0, 34.0, 48.0], "label": "person"}]


def test_a_detection_on_a_crowd_region_changes_neither_precision_nor_recall():
    crowd = [{"box": [30, 10, 60, 50], "label": "person"}]
    gts = [_tgt([[2, 2, 12, 12]], ["person"], crowd=crowd), _tgt([[5, 5, 20, 20]], ["person"])]
    perfect = [_tgt([[2, 2, 12, 12]], ["person"]), _tgt([[5, 5, 20, 20]], ["person"])]
    on_crowd = [_tgt([[2, 2, 12, 12], [35, 15, 45, 30]], ["person", "person"]), perfect[1]]
    keys = ("f1_50", "map50", "mean_iou", "mean_count_error")
    base = evaluate(perfect, gts, [True, True], "detect", ["person"])
    hit = evaluate(on_crowd, gts, [True, True], "detect", ["person"])
    assert {k: hit[k] for k in keys} == {k: base[k] for k in keys}
    assert base["f1_50"] == 1.0 and base["map50"] == 1.0 and base["mean_iou"] == 1.0
    # Without the region the same detection is a false positive: the test can fail.
    plain = [_tgt([[2, 2, 12, 12]], ["person"]), gts[1]]
    fp = evaluate(on_crowd, plain, [True, True], "detect", ["person"])
    assert fp["f1_50"] < 1.0 and fp["map50"] < 1.0 and fp["mean_iou"] < 1.0
    # A crowd region is never a miss either, and a detection of another label on it still counts.
    other = [_tgt([[2, 2, 12, 12], [35, 15, 45, 30]], ["person", "car"]), perfect[1]]
    assert evaluate(other, gts, [True, True], "detect", ["person", "car"])["f1_50"] < 1.0
