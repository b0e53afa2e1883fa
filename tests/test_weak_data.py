"""Weak labels in datasets: clicks, counts and unlabelled images, read from real COCO files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.augment import augment, hflip
from pipeline.data import (
    DataError,
    generate,
    label_summary,
    load_dataset,
    parse_synthetic_uri,
    split_samples,
    write_coco,
)
from pipeline.data.synthetic import URI_MAX

W, H = 32, 24
CATS = [{"id": 1, "name": "cola"}, {"id": 2, "name": "water"}]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))


def _image(i: int, **extra) -> dict:
    return {"id": i, "file_name": f"img_{i:03d}.png", "width": W, "height": H, **extra}


def _box(ann_id: int, image_id: int, cid: int = 1, bbox=(2, 3, 10, 8)) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cid, "bbox": list(bbox)}


def _click(ann_id: int, image_id: int, point, cid: int | None = 1) -> dict:
    ann = {"id": ann_id, "image_id": image_id, "point": point}
    if cid is not None:
        ann["category_id"] = cid
    return ann


def _write(folder: Path, images: list[dict], annotations: list[dict], file: str = "annotations.json") -> Path:
    """A real COCO folder: one PNG per image under images/, plus the annotation file."""
    for img in images:
        path = folder / "images" / img["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (200, 20, 20)).save(path)
    (folder / file).parent.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATS}))
    return folder


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def _all(dataset) -> dict:
    return {s.file_name: s for samples in dataset.splits.values() for s in samples}


def _mixed(folder: Path) -> Path:
    """Every label kind, plus enough boxed images that val and test get some."""
    images = [_image(i) for i in range(1, 11)]  # 1-9 boxed (9 a negative), 10 boxed with counts
    images[9]["counts"] = {"cola": 1, "2": 1}
    images += [
        _image(11),  # labelled clicks
        _image(12),  # one click without a category
        _image(13, counts={"cola": 2, "2": 0}),  # by name and by id; a zero says "none"
        _image(14, counts={"2": 3}, unlabeled=False),
        _image(15, unlabeled=True),
    ]
    annotations = [_box(i, i, 1 + i % 2) for i in range(1, 9)]
    annotations += [_box(100, 10, 1), _box(101, 10, 2, (15, 1, 5, 5))]
    annotations += [_click(110, 11, [4.5, 6]), _click(111, 11, [20, 10], 2), _click(112, 11, [25, 3])]
    annotations += [_click(120, 12, [3, 3]), _click(121, 12, [30, 20], None)]
    return _write(folder, images, annotations)


# ------------------------------------------------------------------------- reading


@pytest.mark.parametrize("form", ["folder", "zip", "json"])
def test_every_label_kind_is_read_into_the_canonical_target(tmp_path, form):
    folder = _mixed(tmp_path / "shelf")
    source = {"folder": folder, "zip": _zip(folder, tmp_path / "shelf.zip"), "json": folder / "annotations.json"}
    dataset = load_dataset(source[form], "detect")
    assert dataset.warnings == []
    got = _all(dataset)
    kinds = {name: s.label_kind for name, s in got.items()}
    assert kinds == {
        **{f"img_{i:03d}.png": "full" for i in range(1, 11)},
        "img_011.png": "points", "img_012.png": "points",
        "img_013.png": "counts", "img_014.png": "counts", "img_015.png": "none",
    }  # fmt: skip
    full = got["img_010.png"].target
    assert full["boxes"] == [[2, 3, 12, 11], [15, 1, 20, 6]] and full["counts"] == {"cola": 1, "water": 1}
    assert full["points"] == [] and full["point_labels"] == []
    assert got["img_009.png"].target["boxes"] == [] and got["img_009.png"].target["counts"] == {}  # a negative
    clicked = got["img_011.png"].target
    assert clicked["points"] == [[4.5, 6.0], [20.0, 10.0], [25.0, 3.0]]
    assert clicked["point_labels"] == ["cola", "water", "cola"]
    assert clicked["counts"] == {"cola": 2, "water": 1}
    assert clicked["boxes"] == [] and clicked["labels"] == [] and clicked["masks"] == []
    anonymous = got["img_012.png"].target
    assert anonymous["point_labels"] == ["cola", ""] and anonymous["counts"] == {}  # not every click says what
    assert got["img_013.png"].target["counts"] == {"cola": 2}  # zeros dropped: an unlisted category has none
    assert got["img_014.png"].target["counts"] == {"water": 3} and got["img_014.png"].target["boxes"] == []
    unlabelled = got["img_015.png"].target
    assert (unlabelled["boxes"], unlabelled["points"], unlabelled["counts"]) == ([], [], {})
    for name in ("img_011.png", "img_012.png", "img_013.png", "img_014.png", "img_015.png"):
        assert got[name] in dataset.splits["train"]


def test_segment_reads_clicks_too_and_full_images_count_their_masks(tmp_path):
    square = [2, 2, 12, 2, 12, 12, 2, 12]
    images = [_image(i) for i in range(1, 6)] + [_image(6)]
    annotations = [{"id": i, "image_id": i, "category_id": 2, "segmentation": [square]} for i in range(1, 6)]
    annotations.append(_click(60, 6, [7, 7], 2))
    dataset = load_dataset(_write(tmp_path / "seg", images, annotations), "segment")
    got = _all(dataset)
    assert got["img_001.png"].target["counts"] == {"water": 1} and got["img_001.png"].label_kind == "full"
    assert got["img_006.png"].label_kind == "points" and got["img_006.png"].target["masks"] == []


def test_a_click_on_the_edge_is_clipped_and_one_outside_is_dropped_with_a_named_warning(tmp_path):
    images = [_image(i) for i in range(1, 5)] + [_image(5)]
    annotations = [_box(i, i) for i in range(1, 5)]
    annotations += [_click(50, 5, [W + 0.5, -0.5]), _click(51, 5, [W + 5, 3])]
    dataset = load_dataset(_write(tmp_path / "edge", images, annotations), "detect")
    sample = _all(dataset)["img_005.png"]
    assert sample.target["points"] == [[float(W), 0.0]] and sample.target["point_labels"] == ["cola"]
    (warning,) = dataset.warnings
    assert "annotations.json: annotation 51 (image 5 'img_005.png')" in warning
    assert f"({W + 5}, 3) outside the {W}×{H} image" in warning


def test_an_image_without_annotations_or_marker_stays_a_negative(tmp_path):
    images = [_image(i) for i in range(1, 5)]
    dataset = load_dataset(_write(tmp_path / "neg", images, [_box(1, 1)]), "detect")
    assert {s.label_kind for s in _all(dataset).values()} == {"full"}
    assert label_summary(list(_all(dataset).values())) == "4 images"  # nothing weak: no breakdown


# --------------------------------------------------------------------------- errors

# (what is in the file, the task, a regex the message must match). Every message names the
# file; image-level ones the image, annotation-level ones the annotation and its image.
_FILE = r"annotations\.json"
ERRORS = {
    "point-one-number": (
        [_image(1)], [_click(7, 1, [3])], "detect",
        rf"{_FILE}: annotation 7 \(image 1 'img_001\.png'\): \"point\" must be \[x, y\], two finite numbers",
    ),
    "point-text": (
        [_image(1)], [_click(7, 1, ["3", 4])], "detect",
        rf"{_FILE}: annotation 7 \(image 1 'img_001\.png'\): \"point\" must be \[x, y\]",
    ),
    "point-and-box": (
        [_image(1)], [{**_box(7, 1), "point": [3, 4]}], "detect",
        rf"{_FILE}: annotation 7 \(image 1 'img_001\.png'\) has a \"point\" and a \"bbox\"",
    ),
    "click-unknown-category": (
        [_image(1)], [_click(7, 1, [3, 4], 9)], "detect",
        rf"{_FILE}: annotation 7 \(image 1 'img_001\.png'\) refers to category 9, which is not in \"categories\"",
    ),
    "count-unknown-name": (
        [_image(1, counts={"pepsi": 2})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" names 'pepsi', which is not a category \(known: cola, water\)",
    ),
    "count-unknown-id": (
        [_image(1, counts={"9": 2})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" names '9', which is not a category",
    ),
    "count-negative": (
        [_image(1, counts={"cola": -1})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" gives 'cola' -1; a count is a whole number from 0 to 100000",
    ),
    "count-huge": (
        [_image(1, counts={"cola": 10**30})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" gives 'cola' 1000000000000000000000000000000",
    ),
    "count-fraction": (
        [_image(1, counts={"cola": 1.5})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" gives 'cola' 1\.5",
    ),
    "count-bool": (
        [_image(1, counts={"cola": True})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" gives 'cola' True",
    ),
    "count-unicode-digit": (
        [_image(1, counts={"²": 2})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" names '²', which is not a category",
    ),
    "count-twice": (
        [_image(1, counts={"cola": 1, "1": 1})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" gives category 'cola' twice",
    ),
    "counts-not-an-object": (
        [_image(1, counts=[1, 2])], [], "detect",
        rf"{_FILE}: images\[0\] \(image 1 'img_001\.png'\): \"counts\" must be an object",
    ),
    "boxes-and-clicks": (
        [_image(1)], [_box(7, 1), _click(8, 1, [3, 4])], "detect",
        rf"{_FILE}: image 1 'img_001\.png' mixes boxes \(annotation 7\) and clicks \(annotation 8\)",
    ),
    "counts-disagree-with-boxes": (
        [_image(1, counts={"cola": 2})], [_box(7, 1), _box(8, 1, 2)], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" says cola 2 but its 2 boxes give cola 1, water 1",
    ),
    "counts-disagree-with-clicks": (
        [_image(1, counts={"cola": 1})], [_click(7, 1, [3, 4], None), _click(8, 1, [9, 4], None)], "detect",
        rf"{_FILE}: image 1 'img_001\.png': \"counts\" says cola 1 but its 2 clicks give none with a category "
        "and 2 without",
    ),
    "unlabeled-with-annotations": (
        [_image(1, unlabeled=True)], [_box(7, 1)], "detect",
        rf"{_FILE}: image 1 'img_001\.png' is marked \"unlabeled\": true but has annotation 7",
    ),
    "unlabeled-with-counts": (
        [_image(1, unlabeled=True, counts={"cola": 1})], [], "detect",
        rf"{_FILE}: image 1 'img_001\.png' is marked \"unlabeled\": true but has \"counts\"",
    ),
    "unlabeled-not-bool": (
        [_image(1, unlabeled="yes")], [], "detect",
        rf"{_FILE}: images\[0\] \(image 1 'img_001\.png'\): \"unlabeled\" must be true or false",
    ),
    "click-in-keypoints": (
        [_image(1)], [_click(7, 1, [3, 4])], "keypoints",
        rf"{_FILE}: annotation 7 \(image 1 'img_001\.png'\) is a click .* only tasks detect and segment accept, "
        "not keypoints",
    ),
    "counts-in-caption": (
        [_image(1, counts={"cola": 1})], [{"id": 7, "image_id": 1, "caption": "a can"}], "caption",
        rf"{_FILE}: images\[0\] \(image 1 'img_001\.png'\): \"counts\" is a weak label, which only tasks detect "
        "and segment accept, not caption",
    ),
    "unlabeled-in-keypoints": (
        [_image(1, unlabeled=True)], [], "keypoints",
        rf"{_FILE}: images\[0\] \(image 1 'img_001\.png'\): \"unlabeled\" is a weak label",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_weak_labels_are_errors_naming_the_file_and_the_image_or_annotation(tmp_path, case):
    images, annotations, task, message = ERRORS[case]
    folder = _write(tmp_path / "bad", images, annotations)
    with pytest.raises(DataError, match=message):
        load_dataset(folder, task)


def test_counts_that_agree_with_boxes_or_unnamed_clicks_are_accepted(tmp_path):
    images = [_image(i) for i in range(1, 5)]
    images[0]["counts"] = {"cola": 1, "water": 1}
    images.append(_image(5, counts={"water": 2}))
    annotations = [_box(7, 1), _box(8, 1, 2)] + [_box(i, i) for i in (2, 3, 4)]
    annotations += [_click(50, 5, [3, 4], None), _click(51, 5, [9, 4], 2)]
    got = _all(load_dataset(_write(tmp_path / "ok", images, annotations), "detect"))
    assert got["img_001.png"].target["counts"] == {"cola": 1, "water": 1}
    # the clicks do not all say what they are, so the image's counts come from "counts"
    assert got["img_005.png"].target["counts"] == {"water": 2}
    assert got["img_005.png"].target["point_labels"] == ["", "water"]


def test_a_val_or_test_file_with_a_weak_image_is_an_error_naming_file_and_image(tmp_path):
    folder = tmp_path / "splits"
    _write(folder, [_image(i) for i in (1, 2)], [_box(1, 1), _box(2, 2)], file="train.json")
    _write(folder, [_image(3), _image(4, counts={"cola": 1})], [_box(3, 3)], file="val.json")
    with pytest.raises(DataError, match=r"splits: val\.json: image 4 'img_004\.png' has only counts but is in the "
                                        r"val split, which is for evaluation"):  # fmt: skip
        load_dataset(folder, "detect")
    _write(folder, [_image(3), _image(4)], [_box(3, 3), _click(4, 4, [1, 1])], file="val.json")
    with pytest.raises(DataError, match=r"val\.json: image 4 'img_004\.png' has only clicks"):
        load_dataset(folder, "detect")
    _write(folder, [_image(3), _image(4)], [_box(3, 3), _click(4, 4, [1, 1])], file="train.json")
    _write(folder, [_image(5, unlabeled=True)], [], file="test.json")
    with pytest.raises(DataError, match=r"test\.json: image 5 'img_005\.png' is unlabelled but is in the test split"):
        load_dataset(folder, "detect")
    (folder / "test.json").unlink()
    _write(folder, [_image(6)], [_box(6, 6)], file="val.json")
    dataset = load_dataset(folder, "detect")  # weak images in the train file are fine
    assert [s.label_kind for s in dataset.splits["train"]] == ["full", "points"]


# --------------------------------------------------------------------------- splits


def test_weak_images_always_train_and_the_boxed_ones_split_as_without_them(tmp_path):
    boxed = [_image(i) for i in range(1, 21)]
    weak = [_image(i, counts={"cola": 1}) for i in range(21, 61)]
    folder = _write(tmp_path / "many", boxed + weak, [_box(i, i) for i in range(1, 21)])
    dataset = load_dataset(folder, "detect", seed=3)
    names = {k: [s.file_name for s in v] for k, v in dataset.splits.items()}
    assert all(s.label_kind == "full" for k in ("val", "test") for s in dataset.splits[k])
    assert {f"img_{i:03d}.png" for i in range(21, 61)} <= set(names["train"])
    alone = load_dataset(_write(tmp_path / "boxed", boxed, [_box(i, i) for i in range(1, 21)]), "detect", seed=3)
    for split in ("val", "test"):
        assert names[split] == [s.file_name for s in alone.splits[split]] and names[split]
    assert [n for n in names["train"] if int(n[4:7]) <= 20] == [s.file_name for s in alone.splits["train"]]
    assert names["train"] == sorted(names["train"])  # input order kept inside train
    # split_samples is the one place that decides
    samples = list(_all(dataset).values())
    again = split_samples(sorted(samples, key=lambda s: s.id), seed=3)
    assert {k: [s.file_name for s in v] for k, v in again.items()} == names


def test_weak_data_without_a_boxed_image_to_evaluate_on_says_evaluation_needs_them(tmp_path):
    weak = [_image(i, counts={"cola": 1}) for i in range(1, 6)]
    only_weak = _write(tmp_path / "weak", weak, [])
    with pytest.raises(DataError, match=r"weak: evaluation needs fully labelled images in val or test, and none "
                                        r"of its images is fully labelled \(5 images: 5 counted\)"):  # fmt: skip
        load_dataset(only_weak, "detect")
    one_boxed = _write(tmp_path / "one", [*weak, _image(6)], [_box(1, 6)])
    with pytest.raises(DataError, match=r"its one fully labelled image went to train \(6 images: 1 boxed, "
                                        r"5 counted\).*box every object of a few dozen more images"):  # fmt: skip
        load_dataset(one_boxed, "detect")
    # a load that wants no held-out split (a warm-start set) needs nothing to evaluate on
    assert len(load_dataset(one_boxed, "detect", fractions=(1, 0, 0)).splits["train"]) == 6
    with pytest.raises(DataError, match=r"synthetic://retail-shelf\?n=4&counts=4: evaluation needs fully labelled"):
        load_dataset("synthetic://retail-shelf?n=4&counts=4", "detect")


def test_label_summary_counts_each_kind():
    ds = generate("retail-shelf", 10, seed=0, points=5, counts=3)
    samples = ds.splits["train"]
    assert label_summary(samples) == "10 images: 2 boxed, 5 clicked, 3 counted"
    samples[0].label_kind = "none"
    assert label_summary(samples) == "10 images: 1 boxed, 5 clicked, 3 counted, 1 unlabelled"
    assert label_summary(samples[:1]) == "1 image: 1 unlabelled"


# ------------------------------------------------------------------------ synthetic


def test_synthetic_weak_images_are_the_last_ones_with_clicks_at_box_centres():
    full = generate("retail-shelf", 10, seed=4).splits["train"]
    weak = generate("retail-shelf", 10, seed=4, points=4, counts=3).splits["train"]
    assert [s.label_kind for s in weak] == ["full"] * 3 + ["counts"] * 3 + ["points"] * 4
    for a, b in zip(full, weak, strict=True):
        assert a.image.tobytes() == b.image.tobytes()  # the same pixels, only the labels differ
        counts = {c: a.target["labels"].count(c) for c in set(a.target["labels"])}
        assert a.target["counts"] == b.target["counts"] == counts
        if b.label_kind == "full":
            assert b.target == a.target
            continue
        assert b.target["boxes"] == b.target["labels"] == b.target["masks"] == []
        if b.label_kind == "points":
            assert b.target["points"] == [[(x1 + x2) / 2, (y1 + y2) / 2] for x1, y1, x2, y2 in a.target["boxes"]]
            assert b.target["point_labels"] == a.target["labels"]
        else:
            assert b.target["points"] == b.target["point_labels"] == []
    segment = generate("medical-scan", 3, seed=0, task="segment", points=1).splits["train"][-1]
    assert segment.label_kind == "points" and segment.target["masks"] == []
    with pytest.raises(ValueError, match="points=3 and counts=2 weakly labelled images are more than n=4"):
        generate("generic", 4, seed=0, points=3, counts=2)
    with pytest.raises(ValueError, match="only tasks detect and segment accept, not caption"):
        generate("generic", 4, seed=0, task="caption", counts=1)
    with pytest.raises(ValueError, match="points=-1 must be a non-negative integer"):
        generate("generic", 4, seed=0, points=-1)


def test_synthetic_uri_takes_points_and_counts_and_the_weak_images_train():
    params = parse_synthetic_uri("synthetic://retail-shelf?n=400&points=300&counts=60&seed=1")
    assert params == {"kind": "retail-shelf", "n": 400, "points": 300, "counts": 60, "seed": 1}
    dataset = load_dataset("synthetic://retail-shelf?n=60&points=30&counts=10&seed=1", "detect")
    assert sum(len(v) for v in dataset.splits.values()) == 60
    assert all(s.label_kind == "full" for k in ("val", "test") for s in dataset.splits[k])
    assert dataset.splits["val"] and dataset.splits["test"]
    assert label_summary(dataset.splits["train"]).endswith("30 clicked, 10 counted")
    for uri, message in (
        ("synthetic://generic?n=10&points=8&counts=3", "points=8 and counts=3 weakly labelled images are more than"),
        ("synthetic://generic?n=10&points=-1", "points=-1 must be 0 or more"),
        (f"synthetic://generic?n=10&counts={URI_MAX['counts'] + 1}", "counts=5001 is over the limit of 5000"),
        ("synthetic://generic?n=10&points=many", "points='many' is not an integer"),
        ("synthetic://generic?n=10&points=2&task=keypoints", "only tasks detect and segment accept"),
    ):
        with pytest.raises(DataError, match=message):
            load_dataset(uri, "keypoints" if "task=keypoints" in uri else "detect")


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_write_coco_writes_weak_labels_that_load_back_equal(tmp_path, task):
    original = generate("traffic-camera", 12, seed=5, task=task, points=4, counts=4)
    extra = original.splits["train"]
    extra[0].label_kind = "none"  # an unlabelled image
    extra[0].target = {**extra[0].target, "boxes": [], "labels": [], "masks": [], "counts": {},
                        "areas": [], "mask_parts": []}
    clicked = extra[-1].target  # clicks without a category, with counts given beside them
    clicked["point_labels"] = [""] * len(clicked["points"])
    clicked["counts"] = {"car": len(clicked["points"])}
    folder = write_coco(original, tmp_path / "weak")
    document = json.loads((folder / "annotations.json").read_text())
    assert document["images"][0]["unlabeled"] is True and "counts" in document["images"][4]
    assert not any("bbox" in a for a in document["annotations"] if "point" in a)
    loaded = load_dataset(folder, task)
    assert loaded.warnings == []
    got = _all(loaded)
    for sample in original.splits["train"]:
        back = got[sample.file_name]
        assert (back.id, back.label_kind, back.target) == (sample.id, sample.label_kind, sample.target)
        assert back.image.tobytes() == sample.image.tobytes()
    # a per-split write of a loaded dataset keeps the splits, weak images in train
    again = load_dataset(write_coco(loaded, tmp_path / "split", per_split=True), task)
    assert {k: [s.file_name for s in v] for k, v in again.splits.items()} == {
        k: [s.file_name for s in v] for k, v in loaded.splits.items()
    }


# ------------------------------------------------------------------------- augment


def test_a_mirrored_weak_image_keeps_its_kind_its_counts_and_the_clicks_follow():
    samples = generate("retail-shelf", 4, seed=2, points=2, counts=1).splits["train"]
    clicked, counted = samples[-1], samples[1]
    m = hflip(clicked)
    assert m.label_kind == "points" and m.target["point_labels"] == clicked.target["point_labels"]
    assert m.target["points"] == [[clicked.width - x, y] for x, y in clicked.target["points"]]
    assert m.target["counts"] == clicked.target["counts"] and clicked.target["counts"]
    assert [s.label_kind for s in augment(samples, ["hflip"])] == [s.label_kind for s in samples] * 2
    assert hflip(counted).target["counts"] == counted.target["counts"] and hflip(counted).label_kind == "counts"


def test_the_readme_example_loads_as_it_says(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("#### Weak labels") :]
    document = json.loads(section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)])
    for image in document["images"]:
        path = tmp_path / "readme" / image["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (image["width"], image["height"])).save(path, format="PNG")
    (tmp_path / "readme" / "annotations.json").write_text(json.dumps(document))
    # one boxed image cannot give val and test any: loaded as a training set only
    got = _all(load_dataset(tmp_path / "readme", "detect", fractions=(1, 0, 0)))
    assert {n: s.label_kind for n, s in got.items()} == {
        "boxed.jpg": "full", "clicked.jpg": "points", "counted.jpg": "counts", "empty.jpg": "full", "unlabeled.jpg": "none",
    }  # fmt: skip
    assert got["clicked.jpg"].target["point_labels"] == ["cola", ""]
    assert got["counted.jpg"].target["counts"] == {"cola": 3, "water": 1}
