"""COCO loading: layouts, canonical targets, deterministic splits, hostile ZIPs, bad data."""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from pycocotools import mask as mask_utils

from pipeline.data import DataError, generate, load_dataset, sources, split_samples, write_coco

W, H = 32, 24


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    # Extracted ZIPs go to the cache; keep each test's cache private.
    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))


def _png(path: Path, size=(W, H), colour=(200, 20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _coco(
    folder: Path,
    *,
    images=None,
    annotations=None,
    categories=None,
    file="annotations.json",
    image_dir="images",
    extra=None,
) -> Path:
    """A real COCO folder: PNGs under image_dir/ plus the annotation file."""
    images = (
        images
        if images is not None
        else [{"id": i + 1, "file_name": f"img_{i:03d}.png", "width": W, "height": H} for i in range(3)]
    )
    categories = (
        categories if categories is not None else [{"id": 1, "name": "cola"}, {"id": 2, "name": "water"}]
    )
    annotations = (
        annotations
        if annotations is not None
        else [
            {"id": 10 + i, "image_id": img["id"], "category_id": 1 + i % 2, "bbox": [2, 3, 10, 8]}
            for i, img in enumerate(images)
        ]
    )
    for img in images:
        _png(folder / image_dir / img["file_name"])
    document = {"images": images, "annotations": annotations, "categories": categories, **(extra or {})}
    (folder / file).parent.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(json.dumps(document, indent=1))
    return folder


def _all(dataset):
    return {s.file_name: s for samples in dataset.splits.values() for s in samples}


def _split_names(dataset):
    return {k: sorted(s.file_name for s in v) for k, v in dataset.splits.items()}


# ------------------------------------------------------------------ canonical targets


def test_boxes_become_xyxy_and_labels_are_category_names(tmp_path):
    folder = _coco(
        tmp_path / "shelf",
        categories=[{"id": 7, "name": "water"}, {"id": 2, "name": "cola"}],
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [15, 1, 5, 5]},
        ],
    )
    dataset = load_dataset(folder, "detect")
    assert dataset.name == "shelf" and dataset.task == "detect"
    assert dataset.categories == ["cola", "water"]  # category-id order
    sample = _all(dataset)["img_000.png"]
    assert sample.target["boxes"] == [[2, 3, 12, 11], [15, 1, 20, 6]]
    assert sample.target["labels"] == ["water", "cola"]
    assert sample.target["image"] == {"width": W, "height": H}
    assert sample.image.mode == "RGB" and sample.image.size == (W, H)
    assert sample.path == folder / "images" / "img_000.png" and (sample.width, sample.height) == (W, H)
    assert _all(dataset)["img_001.png"].target["boxes"] == []  # an image without boxes stays, as a negative


def test_file_names_relative_to_the_folder_and_a_file_uri_work(tmp_path):
    folder = _coco(tmp_path / "flat", image_dir=".")
    dataset = load_dataset(f"file://{folder}", "detect", name="mine")
    assert dataset.name == "mine" and len(_all(dataset)) == 3


def test_polygon_segmentation_trains_on_the_largest_polygon_keeps_every_part_and_derives_a_missing_box(tmp_path):
    small, large = [1, 1, 4, 1, 4, 4], [10, 2, 20, 2, 20, 12, 10, 12]
    folder = _coco(
        tmp_path / "seg",
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [small, large]},
        ],
    )
    target = _all(load_dataset(folder, "segment"))["img_000.png"].target
    assert target["masks"] == [large]  # the codec writes one polygon per object
    assert target["mask_parts"] == [[small, large]]  # scored with every part
    assert target["boxes"] == [[1, 1, 20, 12]]  # COCO's box holds every part


@pytest.mark.parametrize("compressed", [True, False])
def test_rle_mask_becomes_one_polygon_inside_its_box(tmp_path, compressed):
    binary = np.zeros((H, W), np.uint8)
    binary[4:14, 5:20] = 1
    binary[8:14, 9:14] = 0  # a notch: a convex hull would cover it, the traced outline does not
    binary[20:22, 25:27] = 1  # a smaller blob: a second part, not the polygon the model learns
    rle = mask_utils.encode(np.asfortranarray(binary))
    if compressed:
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    else:
        # Uncompressed RLE: column-major run lengths, starting with a (possibly empty) run of 0s.
        flat = binary.ravel(order="F")
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        runs = ([0] if flat[0] else []) + np.diff(bounds).tolist()
        segmentation = {"size": [H, W], "counts": runs}
    folder = _coco(
        tmp_path / "rle",
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "segmentation": segmentation}],
    )
    target = _all(load_dataset(folder, "segment"))["img_000.png"].target
    (polygon,) = target["masks"]
    assert target["boxes"] == [[5, 4, 27, 22]]  # both components
    assert target["mask_parts"] == [[polygon, [25.0, 20.0, 27.0, 20.0, 27.0, 22.0, 25.0, 22.0]]]
    x1, y1, x2, y2 = 5, 4, 20, 14  # the largest component's box
    assert all(x1 <= x <= x2 for x in polygon[0::2]) and all(y1 <= y <= y2 for y in polygon[1::2])
    xs, ys = polygon[0::2], polygon[1::2]
    area = abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2
    assert area == 10 * 15 - 6 * 5  # the exact pixel outline, notch included


@pytest.mark.parametrize("counts", ["", "0", [5, 7]])
def test_invalid_rle_is_an_error_naming_the_annotation(tmp_path, counts):
    segmentation = {"size": [H, W], "counts": counts}
    folder = _coco(
        tmp_path / "rle",
        annotations=[{"id": 8, "image_id": 1, "category_id": 1, "segmentation": segmentation}],
    )
    with pytest.raises(
        DataError, match=r"annotation 8 \(image 1 'img_000.png'\): the RLE segmentation is invalid"
    ):
        load_dataset(folder, "segment")


def test_keypoints_names_and_visible_points(tmp_path):
    folder = _coco(
        tmp_path / "kp",
        categories=[{"id": 1, "name": "person", "keypoints": ["head", "hip", "foot"]}],
        annotations=[
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 20, 20],
                "keypoints": [5, 2, 2, 0, 0, 0, 6, 18, 1],
                "num_keypoints": 2,
            }
        ],
    )
    dataset = load_dataset(folder, "keypoints")
    target = _all(dataset)["img_000.png"].target
    assert dataset.keypoint_names == ["head", "hip", "foot"]
    assert target["keypoints"] == [[[5, 2, 2], [0, 0, 0], [6, 18, 1]]]
    assert target["points"] == [[5, 2], [6, 18]]


def test_keypoint_count_must_match_the_category_names(tmp_path):
    folder = _coco(
        tmp_path / "kp",
        categories=[{"id": 1, "name": "person", "keypoints": ["head", "hip", "foot"]}],
        annotations=[
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "keypoints": [1, 1, 2]}
        ],
    )
    with pytest.raises(DataError, match=r"annotation 4 .*1 keypoints but its category names 3"):
        load_dataset(folder, "keypoints")


def test_captions_use_the_first_caption_and_skip_uncaptioned_images(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png"},
        {"id": 2, "file_name": "b.png"},
        {"id": 3, "file_name": "c.png"},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "caption": "A red can."},
        {"id": 2, "image_id": 1, "caption": "Second."},
        {"id": 3, "image_id": 2, "caption": "Two cans."},
    ]
    folder = tmp_path / "cap"
    for img in images:
        _png(folder / "images" / img["file_name"])
    (folder / "captions_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    dataset = load_dataset(folder, "caption")
    assert {k: s.target["text"] for k, s in _all(dataset).items()} == {
        "a.png": "A red can.",
        "b.png": "Two cans.",
    }
    assert dataset.categories == []
    assert any("'c.png' has no caption" in w for w in dataset.warnings)


def test_task_decides_what_must_be_present(tmp_path):
    folder = _coco(tmp_path / "boxes")  # boxes only
    with pytest.raises(DataError, match='"segmentation", which task segment needs'):
        load_dataset(folder, "segment")
    with pytest.raises(DataError, match="unknown task 'pose'"):
        load_dataset(folder, "pose")


# ---------------------------------------------------------------------------- splits


def test_split_is_deterministic_stable_and_covers_every_image_once(tmp_path):
    images = [{"id": i + 1, "file_name": f"img_{i:03d}.png"} for i in range(40)]
    folder = _coco(tmp_path / "many", images=images)
    a, b = load_dataset(folder, "detect"), load_dataset(folder, "detect", seed=0)
    assert _split_names(a) == _split_names(b)
    names = [s.file_name for v in a.splits.values() for s in v]
    assert sorted(names) == sorted(img["file_name"] for img in images)  # exactly once each
    assert len(a.splits["train"]) > len(a.splits["val"]) > 0 and len(a.splits["test"]) > 0
    assert _split_names(load_dataset(folder, "detect", seed=1)) != _split_names(a)
    # A file's split depends on its name only: adding images moves nobody.
    bigger = generate("generic", 1, seed=0).splits["train"] + [s for v in a.splits.values() for s in v]
    moved = split_samples(bigger, seed=0)
    for split, samples in a.splits.items():
        assert {s.file_name for s in samples} <= {s.file_name for s in moved[split]}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_tiny_datasets_still_get_train_and_test(n):
    samples = generate("generic", n, seed=0).splits["train"]
    splits = split_samples(samples, seed=5, fractions=(0.8, 0.1, 0.1))
    assert sum(len(v) for v in splits.values()) == n
    assert splits["train"]
    if n >= 2:
        assert splits["test"]
    if n >= 3:
        assert splits["val"]
    # A zero fraction means "no such split", even for tiny datasets.
    assert split_samples(samples, seed=5, fractions=(1, 0, 0))["train"] == samples


def test_per_split_files_define_the_splits(tmp_path):
    folder = tmp_path / "coco"
    _coco(
        folder,
        file="annotations/instances_train2017.json",
        image_dir="train2017",
        images=[{"id": i, "file_name": f"t{i}.png"} for i in (1, 2, 3)],
    )
    _coco(
        folder,
        file="annotations/instances_val2017.json",
        image_dir="val2017",
        images=[{"id": 9, "file_name": "v9.png"}],
    )
    dataset = load_dataset(folder, "detect")
    assert _split_names(dataset) == {"train": ["t1.png", "t2.png", "t3.png"], "val": ["v9.png"], "test": []}


# ------------------------------------------------------------------------------- ZIPs


def _zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


@pytest.mark.parametrize("prefix", ["", "shelf/"])
def test_zip_loads_equal_to_the_folder(tmp_path, prefix):
    folder = write_coco(generate("retail-shelf", 6, seed=0, task="segment"), tmp_path / "shelf")
    archive = _zip_folder(folder, tmp_path / "shelf.zip", prefix)
    from_folder, from_zip = load_dataset(folder, "segment"), load_dataset(archive, "segment")
    assert from_zip.name == "shelf" and _split_names(from_zip) == _split_names(from_folder)
    for name, sample in _all(from_folder).items():
        zipped = _all(from_zip)[name]
        assert zipped.target == sample.target and zipped.image.tobytes() == sample.image.tobytes()
        assert zipped.path.is_file()  # extracted into the cache, which outlives the load
    assert (
        load_dataset(archive, "segment").splits["train"][0].path == from_zip.splits["train"][0].path
    )  # cached


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "ok/../../evil.png"])
def test_zip_slip_member_is_rejected_and_named(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr(zipfile.ZipInfo(member), b"x")
    with pytest.raises(DataError) as info:
        load_dataset(archive, "detect")
    assert "bad.zip" in str(info.value) and repr(member) in str(info.value)
    assert not list(tmp_path.rglob("evil.png"))  # names are checked before anything is written


def test_zip_symlink_member_is_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    link = zipfile.ZipInfo("images/passwd.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match=r"link.zip: member 'images/passwd.png' is a symbolic link"):
        load_dataset(archive, "detect")


def test_zip_bomb_is_rejected_before_and_while_extracting(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_ZIP_BYTES", 1_000_000)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr("images/zeros.png", bytes(2_000_000))  # ~2 KB compressed
    assert archive.stat().st_size < 20_000
    with pytest.raises(DataError, match=r"bomb.zip: .*'images/zeros.png'.*zip bomb"):
        load_dataset(archive, "detect")

    # Declared sizes can lie: count what is actually written too.
    monkeypatch.setattr(sources, "MAX_ZIP_BYTES", 1_500_000)
    monkeypatch.setattr(sources, "_declared_size", lambda infos: 0)  # a directory that under-reports
    with pytest.raises(DataError, match=r"bomb.zip: member 'images/zeros.png' expands past"):
        load_dataset(archive, "detect")
    assert not list((tmp_path / "cache" / "zips").glob("bomb-*"))  # nothing half-extracted left behind


def test_zip_with_too_many_members_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_ZIP_MEMBERS", 3)
    archive = tmp_path / "wide.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(5):
            zf.writestr(f"f{i}.txt", "x")
    with pytest.raises(DataError, match="wide.zip: the archive has 5 members, more than the 3 allowed"):
        load_dataset(archive, "detect")


def test_zip_compression_ratio_is_capped_before_and_while_extracting(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "ZIP_RATIO_FLOOR", 100_000)  # the real floor (64 MiB) scaled down
    archive = tmp_path / "dense.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr("images/zeros.png", bytes(2_000_000))  # ~1000-fold, far under the byte cap
    with pytest.raises(DataError, match=r"dense.zip: the archive would expand \d+-fold .* more than the 100-fold "
                                        r"allowed \(member 'images/zeros.png'"):  # fmt: skip
        load_dataset(archive, "detect")
    monkeypatch.setattr(sources, "_declared_size", lambda infos: 0)  # a directory that under-reports
    with pytest.raises(DataError, match=r"dense.zip: member 'images/zeros.png' expands past 100 times"):
        load_dataset(archive, "detect")
    assert not list((tmp_path / "cache" / "zips").iterdir())


def test_a_rejected_zip_leaves_nothing_in_the_cache(tmp_path):
    folder = _coco(tmp_path / "many")
    for i in range(200):
        (folder / "junk" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (folder / "junk" / f"{i}.txt").write_text("x")
    (folder / "annotations.json").write_text('{"images": [], "annotations": [], "categories": [1]}')
    archive = _zip_folder(folder, tmp_path / "many.zip")
    with pytest.raises(DataError, match=r"many.zip: annotations.json: categories\[0\] must be an object"):
        load_dataset(archive, "detect")
    assert not list((tmp_path / "cache" / "zips").iterdir())  # 206 files extracted, then removed
    good = _zip_folder(_coco(tmp_path / "good"), tmp_path / "good.zip")
    first = load_dataset(good, "detect")
    with pytest.raises(DataError):  # a failing load of a cached archive keeps the cache others use
        load_dataset(good, "keypoints")
    assert all(s.path.is_file() for s in _all(first).values())


def test_deeply_nested_json_is_an_error_naming_the_file(tmp_path):
    folder = _coco(tmp_path / "deep")
    depth = 200_000
    (folder / "annotations.json").write_text('{"images": ' + "[" * depth + "]" * depth + ', "annotations": []}')
    with pytest.raises(DataError, match=r"deep.*annotations.json: the JSON is nested too deeply"):
        load_dataset(folder, "detect")
    # nesting JSON can hold, in a field a message quotes: the message stays short
    nested = json.loads("[" * 500 + "]" * 500)
    _coco(folder, annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": nested}])
    with pytest.raises(DataError, match=r'annotation 1 .*: "bbox" must be a list of finite numbers, got \[\[\[') as err:
        load_dataset(folder, "detect")
    assert len(str(err.value)) < 400


def test_category_names_and_counts_are_capped(tmp_path):
    folder = _coco(tmp_path / "names", categories=[{"id": 1, "name": "x" * 1_000_000}, {"id": 2, "name": "w"}])
    with pytest.raises(DataError, match=r'categories\[0\] \(category 1\): "name" is 1000000 characters, more than the 200') as err:
        load_dataset(folder, "detect")
    assert len(str(err.value)) < 400
    _coco(folder, categories=[{"id": i, "name": f"c{i}"} for i in range(1, 100_001)])
    with pytest.raises(DataError, match=r'"categories" has 100000 entries, more than the 2000 allowed'):
        load_dataset(folder, "detect")
    _coco(folder, categories=[{"id": 1, "name": "cola", "keypoints": ["k" * 300]}, {"id": 2, "name": "water"}])
    with pytest.raises(DataError, match=r'"keypoints" may name at most 256 keypoints of at most 200 characters'):
        load_dataset(folder, "detect")


def test_hostile_ids_and_file_names_are_named_errors_or_warnings(tmp_path):
    folder = _coco(tmp_path / "ids", annotations=[{"id": [1], "image_id": 1, "category_id": [1], "bbox": [1, 1, 4, 4]}])
    with pytest.raises(DataError, match=r"annotation #0 \(image 1 'img_000.png'\) refers to category \[1\], which is not"):
        load_dataset(folder, "detect")
    images = [{"id": 1, "file_name": "a\x00b.png"}, {"id": 2, "file_name": "n" * 300 + ".png"},
              {"id": 3, "file_name": "ok.png"}]  # fmt: skip
    folder = tmp_path / "names"
    _png(folder / "images" / "ok.png")
    (folder / "annotations.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 4, 4]} for i in (1, 2, 3)]}))  # fmt: skip
    dataset = load_dataset(folder, "detect")
    assert list(_all(dataset)) == ["ok.png"] and sum("file not found" in w for w in dataset.warnings) == 2


def test_images_can_be_checked_without_keeping_them(tmp_path):
    folder = _coco(tmp_path / "lean")
    data = (folder / "images" / "img_002.png").read_bytes()
    (folder / "images" / "img_002.png").write_bytes(data[: len(data) // 2])  # truncated: found by the decode
    kept, lean = load_dataset(folder, "detect"), load_dataset(folder, "detect", keep_images=False, label="lean.zip")
    assert _split_names(kept) == _split_names(lean) and kept.warnings == [w.replace("lean.zip", str(folder)) for w in lean.warnings]
    for name, sample in _all(lean).items():
        assert sample.image is None and sample.target == _all(kept)[name].target
        assert (sample.width, sample.height) == (W, H)
    assert any(w.startswith("lean.zip: annotations.json: image 3 'img_002.png'") for w in lean.warnings)


# -------------------------------------------------------------------------- bad data


def test_malformed_json_names_file_line_and_column(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "annotations.json").write_text('{\n  "images": [\n    {"id": 1,, "file_name": "a.png"}\n  ]\n}')
    with pytest.raises(DataError, match=r"broken: annotations.json: invalid JSON at line 3, column 14"):
        load_dataset(folder, "detect")


def test_missing_key_and_wrong_type_name_the_key(tmp_path):
    folder = _coco(tmp_path / "nokey")
    document = json.loads((folder / "annotations.json").read_text())
    del document["categories"]
    (folder / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match='annotations.json: missing the top-level key "categories"'):
        load_dataset(folder, "detect")
    document["categories"], document["images"] = [], {"id": 1}
    (folder / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match='"images" must be a list, not dict'):
        load_dataset(folder, "detect")


def test_unknown_category_names_the_annotation_and_the_known_ids(tmp_path):
    folder = _coco(
        tmp_path / "cats", annotations=[{"id": 17, "image_id": 3, "category_id": 9, "bbox": [1, 1, 4, 4]}]
    )
    with pytest.raises(DataError) as info:
        load_dataset(folder, "detect")
    message = str(info.value)
    assert "annotations.json: annotation 17 (image 3 'img_002.png')" in message
    assert "category 9" in message and "known ids: 1, 2" in message


def test_missing_and_corrupt_images_warn_by_name_and_the_rest_loads(tmp_path, caplog):
    folder = _coco(tmp_path / "holes")
    (folder / "images" / "img_000.png").unlink()
    (folder / "images" / "img_001.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with caplog.at_level(logging.WARNING, logger="pipeline.data.coco"):
        dataset = load_dataset(folder, "detect")
    assert list(_all(dataset)) == ["img_002.png"]
    assert any("'img_000.png': file not found" in w for w in dataset.warnings)
    assert any("'img_001.png': cannot be decoded" in w for w in dataset.warnings)
    assert "img_001.png" in caplog.text


def test_truncated_image_is_skipped(tmp_path):
    folder = _coco(tmp_path / "trunc")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(
        folder / "images" / "img_002.png"
    )
    data = (folder / "images" / "img_002.png").read_bytes()
    (folder / "images" / "img_002.png").write_bytes(data[: len(data) // 2])
    dataset = load_dataset(folder, "detect")
    assert sorted(_all(dataset)) == ["img_000.png", "img_001.png"]
    assert any("'img_002.png'" in w and "image skipped" in w for w in dataset.warnings)


def test_box_outside_the_image_is_dropped_with_a_warning_and_small_overhang_clipped(tmp_path):
    folder = _coco(
        tmp_path / "boxes",
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 30, 5]},  # far past the right edge
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-0.5, 0, 10, 24.5]},  # within 1 px: clipped
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [4, 4, 0, 5]},  # zero width
            {"id": 4, "image_id": 99, "category_id": 2, "bbox": [4, 4, 5, 5]},  # unknown image
        ],
    )
    dataset = load_dataset(folder, "detect")
    assert _all(dataset)["img_000.png"].target["boxes"] == [[0, 0, 9.5, 24]]
    messages = "\n".join(dataset.warnings)
    assert (
        "annotation 1 (image 1 'img_000.png') has a box" in messages
        and f"outside the {W}×{H} image; annotation dropped" in messages
    )
    assert "annotation 3 (image 1 'img_000.png')" in messages and "non-positive width or height" in messages
    assert "annotation 4 refers to image 99" in messages


def test_json_size_mismatch_warns_and_trusts_the_image(tmp_path):
    folder = _coco(
        tmp_path / "size",
        images=[{"id": 1, "file_name": "a.png", "width": 640, "height": 480}],
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
    )
    dataset = load_dataset(folder, "detect")
    sample = _all(dataset)["a.png"]
    assert (sample.width, sample.height) == (W, H) and sample.target["image"] == {"width": W, "height": H}
    assert any("'a.png': the JSON says 640×480 but the image is 32×24" in w for w in dataset.warnings)


def _bomb_png(path: Path, side: int) -> None:
    """A valid 1-bit PNG of side×side pixels, all black: kilobytes on disk, side² pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)
    compressor, rows = zlib.compressobj(1), 500
    body = b"".join(compressor.compress(row * rows) for _ in range(side // rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side, limit", [(20_000, 4096 * 4096), (400, 10_000)])
def test_decompression_bomb_is_named_and_never_decoded(tmp_path, monkeypatch, side, limit):
    folder = _coco(tmp_path / "bomb")
    _bomb_png(folder / "images" / "img_001.png", side)
    assert (folder / "images" / "img_001.png").stat().st_size < 300_000
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    dataset = load_dataset(folder, "detect", max_image_pixels=limit)
    assert sorted(_all(dataset)) == ["img_000.png", "img_002.png"]
    assert (side, side) not in decoded
    (warning,) = [w for w in dataset.warnings if "img_001.png" in w]
    assert "decompression bomb" in warning and "not decoded" in warning


def test_empty_datasets_are_errors(tmp_path):
    with pytest.raises(DataError, match="no usable image"):
        load_dataset(_coco(tmp_path / "none", images=[], annotations=[]), "detect")
    folder = _coco(tmp_path / "gone")
    for png in (folder / "images").iterdir():
        png.unlink()
    with pytest.raises(DataError, match="no usable image.*file not found"):
        load_dataset(folder, "detect")


def test_sources_that_are_not_datasets_say_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "missing", "detect")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a folder, a .zip archive or a COCO .json"):
        load_dataset(tmp_path / "notes.txt", "detect")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no annotation file found"):
        load_dataset(tmp_path / "empty", "detect")
    with pytest.raises(DataError, match="unsupported scheme 'ftp'"):  # s3:// and co.: tests/test_remote_data.py
        load_dataset("ftp://host/data.zip", "detect")
    assert os.listdir(tmp_path / "empty") == []
