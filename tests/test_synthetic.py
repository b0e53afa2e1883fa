"""Synthetic datasets: deterministic, valid for every kind × task, learnable, and round-trippable."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import KINDS, DataError, generate, load_dataset, synthetic_uri, write_coco
from pipeline.data.synthetic import CATEGORIES, DEFAULT_OBJECTS, KEYPOINT_NAMES
from pipeline.structures import TASKS

N = 12  # enough samples to hit every category and layout branch, small enough to stay fast


def _fingerprint(dataset):
    return [
        (s.id, s.file_name, s.width, s.height, s.target, s.image.tobytes())
        for split in sorted(dataset.splits)
        for s in dataset.splits[split]
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_byte_identical_images_and_annotations(kind):
    a = generate(kind, 6, seed=7, task="keypoints")
    b = generate(kind, 6, seed=7, task="keypoints")
    assert _fingerprint(a) == _fingerprint(b)


@pytest.mark.parametrize("kind", KINDS)
def test_different_seeds_give_different_data(kind):
    a = [s.image.tobytes() for s in generate(kind, 4, seed=0).splits["train"]]
    b = [s.image.tobytes() for s in generate(kind, 4, seed=1).splits["train"]]
    assert all(x != y for x, y in zip(a, b))


def test_sample_depends_only_on_seed_and_index_not_on_n_or_task():
    few = generate("traffic-camera", 2, seed=3, task="detect").splits["train"]
    many = generate("traffic-camera", 5, seed=3, task="caption").splits["train"]
    for a, b in zip(few, many):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.target["boxes"] == b.target["boxes"] and a.target["labels"] == b.target["labels"]


def _overlap(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_task_gives_a_valid_full_target(kind, task):
    dataset = generate(kind, N, seed=1, task=task)
    assert dataset.task == task and dataset.categories == list(CATEGORIES[kind])
    assert list(dataset.splits) == ["train"] and len(dataset.splits["train"]) == N
    lo, hi = DEFAULT_OBJECTS[kind]
    for sample in dataset.splits["train"]:
        t = sample.target
        assert sample.image.mode == "RGB" and sample.image.size == (64, 64)
        assert t["image"] == {"width": 64, "height": 64}
        assert lo <= len(t["boxes"]) <= hi and len(t["labels"]) == len(t["boxes"])
        for box, label in zip(t["boxes"], t["labels"]):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            # photo holds small objects on purpose, as real photographs do (a galaxy, a far car)
            assert min(x2 - x1, y2 - y1) >= (3 if kind == "photo" else 10), "objects must stay learnable at 64×64"
            assert label in dataset.categories
        for i, a in enumerate(t["boxes"]):
            assert not any(_overlap(a, b) for b in t["boxes"][i + 1 :])
        if task == "segment":
            assert len(t["masks"]) == len(t["boxes"])
            for poly, box, label in zip(t["masks"], t["boxes"], t["labels"]):
                expected = {"triangle": 3, "circle": 12, "lesion": 12, "blob": 12}.get(label, 4)
                assert len(poly) == 2 * expected
                assert all(box[0] <= x <= box[2] for x in poly[0::2])
                assert all(box[1] <= y <= box[3] for y in poly[1::2])
        else:
            assert t["masks"] == []
        if task == "keypoints":
            assert dataset.keypoint_names == list(KEYPOINT_NAMES[kind]) and len(dataset.keypoint_names) == 3
            assert [len(k) for k in t["keypoints"]] == [3] * len(t["boxes"])
            for kps, box in zip(t["keypoints"], t["boxes"]):
                assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] and v == 2 for x, y, v in kps)
            assert t["points"] == [[x, y] for kps in t["keypoints"] for x, y, _ in kps]
        else:
            assert t["keypoints"] == [] and t["points"] == []
        assert (t["text"] != "") == (task == "caption")


@pytest.mark.parametrize("kind", KINDS)
def test_objects_stand_out_from_the_background(kind):
    for sample in generate(kind, 6, seed=2).splits["train"]:
        pixels = np.asarray(sample.image).astype(float)
        outside = np.ones(pixels.shape[:2], bool)
        for x1, y1, x2, y2 in sample.target["boxes"]:
            outside[y1:y2, x1:x2] = False
        background = pixels[outside].mean(axis=0)
        for x1, y1, x2, y2 in sample.target["boxes"]:
            if kind == "photo":  # uneven light: compare the object's middle with its own surround
                w, h = x2 - x1, y2 - y1
                inside = pixels[y1 + h // 3 : y2 - h // 3, x1 + w // 3 : x2 - w // 3].reshape(-1, 3).mean(axis=0)
                ring = outside[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3]
                around = pixels[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3][ring].mean(axis=0)
                assert np.linalg.norm(inside - around) > 15, (kind, sample.file_name)
                continue
            inside = pixels[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
            assert np.linalg.norm(inside - background) > 40, (kind, sample.file_name)


def test_medical_scans_are_grayscale_stored_as_rgb():
    for sample in generate("medical-scan", 3, seed=0).splits["train"]:
        r, g, b = np.asarray(sample.image).transpose(2, 0, 1)
        assert (r == g).all() and (g == b).all()


def test_captions_count_the_objects_with_a_small_vocabulary():
    words = set()
    for kind in KINDS:
        for sample in generate(kind, 20, seed=4, task="caption").splits["train"]:
            text, labels = sample.target["text"], sample.target["labels"]
            words.update(text.replace(",", "").split())
            if kind == "traffic-camera":
                assert all(label in text for label in labels)
                assert text.endswith("on the road")
            if kind == "medical-scan":
                count = {1: "a bright lesion", 2: "two bright lesions"}[len(labels)]
                assert text.startswith(count) and text.endswith("of the scan")
            if kind == "retail-shelf":
                assert "shel" in text and text.startswith("two") == (
                    len(labels) == 2 and len(set(labels)) == 1
                )
    assert len(words) < 60


def test_object_counts_follow_min_and_max_objects():
    dataset = generate("generic", 5, seed=0, min_objects=4, max_objects=4)
    assert all(len(s.target["boxes"]) == 4 for s in dataset.splits["train"])
    empty = generate("retail-shelf", 2, seed=0, task="caption", min_objects=0, max_objects=0)
    assert all(
        s.target["boxes"] == [] and s.target["text"] == "an empty shelf" for s in empty.splits["train"]
    )
    with pytest.raises(ValueError, match="cannot fit"):
        generate("medical-scan", 1, seed=0, min_objects=40, max_objects=40)


def test_bad_arguments_say_what_to_use():
    with pytest.raises(ValueError, match="generic, retail-shelf"):
        generate("cats", 1, seed=0)
    with pytest.raises(ValueError, match="detect"):
        generate("generic", 1, seed=0, task="pose")
    with pytest.raises(ValueError, match="min_objects"):
        generate("generic", 1, seed=0, min_objects=3, max_objects=1)


@pytest.mark.parametrize("task", TASKS)
def test_write_coco_then_load_dataset_reads_back_equal(tmp_path, task):
    for kind in KINDS:
        original = generate(kind, 5, seed=11, task=task)
        folder = write_coco(original, tmp_path / f"{kind}-{task}")
        assert (folder / "annotations.json").is_file()
        loaded = load_dataset(folder, task)
        assert loaded.warnings == []
        assert loaded.categories == original.categories
        assert loaded.keypoint_names == original.keypoint_names
        got = {s.file_name: s for samples in loaded.splits.values() for s in samples}
        want = {s.file_name: s for s in original.splits["train"]}
        assert got.keys() == want.keys()
        for file_name, sample in want.items():
            assert got[file_name].id == sample.id
            assert got[file_name].target == sample.target
            assert got[file_name].image.tobytes() == sample.image.tobytes()


def test_write_coco_per_split_keeps_the_splits(tmp_path):
    original = load_dataset(synthetic_uri("generic", 10, 0), "detect")
    loaded = load_dataset(write_coco(original, tmp_path / "ds", per_split=True), "detect")
    for split in ("train", "val", "test"):
        assert [s.file_name for s in loaded.splits[split]] == [s.file_name for s in original.splits[split]]


def test_synthetic_uri_loads_in_memory_and_splits_deterministically():
    uri = synthetic_uri("retail-shelf", 20, 0)
    assert uri == "synthetic://retail-shelf?n=20&seed=0"
    a, b = load_dataset(uri, "detect"), load_dataset(uri, "detect")
    assert a.name == "retail-shelf" and a.task == "detect"
    assert {k: [s.file_name for s in v] for k, v in a.splits.items()} == {
        k: [s.file_name for s in v] for k, v in b.splits.items()
    }
    names = [s.file_name for v in a.splits.values() for s in v]
    assert sorted(names) == sorted(set(names)) and len(names) == 20
    assert all(a.splits[k] for k in ("train", "val", "test"))
    assert all(s.path is None for v in a.splits.values() for s in v)


def test_synthetic_uri_errors_name_the_problem():
    with pytest.raises(DataError, match="unknown synthetic kind 'cats'.*retail-shelf"):
        load_dataset("synthetic://cats?n=4", "detect")
    with pytest.raises(DataError, match="unknown parameter 'colour'"):
        load_dataset("synthetic://generic?n=4&colour=red", "detect")
    with pytest.raises(DataError, match="n='many' is not an integer"):
        load_dataset("synthetic://generic?n=many", "detect")
    with pytest.raises(DataError, match="task=caption"):
        load_dataset(synthetic_uri("generic", 4, 0, task="caption"), "detect")


SHIFTED = ("retail-shelf", "traffic-camera", "medical-scan", "generic")


def _stats(dataset):
    samples = dataset.splits["train"]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for s in samples for b in s.target["boxes"]]
    backgrounds = []
    for s in samples:
        outside = np.ones((s.height, s.width), bool)
        for x1, y1, x2, y2 in s.target["boxes"]:
            outside[y1:y2, x1:x2] = False
        backgrounds.append(np.asarray(s.image)[outside].mean(axis=0))
    return float(np.mean(areas)), np.mean(backgrounds, axis=0)


@pytest.mark.parametrize("kind", SHIFTED)
def test_shifted_images_differ_in_background_and_object_size_with_the_same_categories(kind):
    plain, shifted = generate(kind, 16, seed=3), generate(kind, 16, seed=3, shift=True)
    (area, background), (area_s, background_s) = _stats(plain), _stats(shifted)
    assert abs(area_s - area) / area > 0.2, (area, area_s)  # another object scale
    assert np.linalg.norm(background_s - background) > 15, (background, background_s)  # other backgrounds and lighting
    assert shifted.categories == plain.categories
    labels = {label for s in shifted.splits["train"] for label in s.target["labels"]}
    assert labels <= set(CATEGORIES[kind])
    lo, hi = DEFAULT_OBJECTS[kind]
    for s in shifted.splits["train"]:
        t = s.target
        assert lo <= len(t["boxes"]) <= hi and len(t["labels"]) == len(t["boxes"])
        for i, (x1, y1, x2, y2) in enumerate(t["boxes"]):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and min(x2 - x1, y2 - y1) >= 6
            assert not any(_overlap(t["boxes"][i], b) for b in t["boxes"][i + 1 :])
    # deterministic, and never a copy of an unshifted image
    assert _fingerprint(shifted) == _fingerprint(generate(kind, 16, seed=3, shift=True))
    assert {s.file_name for s in shifted.splits["train"]}.isdisjoint(s.file_name for s in plain.splits["train"])


@pytest.mark.parametrize("kind", SHIFTED)
def test_shift_distractors_are_drawn_but_never_in_the_target(kind):
    from pipeline.data.synthetic import _PAINTERS, SHIFT_SCALE, _Shift

    drawn = 0
    for i in range(8):
        # the painter as generate calls it for sample i, to see where the distractors went
        rng = np.random.default_rng([3, KINDS.index(kind), i, 1])
        lo, hi = DEFAULT_OBJECTS[kind]
        count = int(rng.integers(lo, hi + 1))
        shift = _Shift(SHIFT_SCALE[kind])
        pixels, objects = _PAINTERS[kind](rng, 64, count, lo, shift)
        target = generate(kind, i + 1, seed=3, shift=True).splits["train"][i].target
        assert target["boxes"] == [list(o.box) for o in objects]
        for x1, y1, x2, y2 in shift.distractors:
            assert not any(_overlap((x1, y1, x2, y2), b) for b in target["boxes"])
            patch = pixels[y1:y2, x1:x2].reshape(-1, 3).astype(float)
            drawn += patch.std(axis=0).max() > 20  # a shape is there, not plain background
    assert drawn >= 8


def test_shift_works_through_the_uri_and_is_validated():
    shifted = load_dataset("synthetic://retail-shelf?n=12&seed=3&shift=1", "detect")
    plain = load_dataset("synthetic://retail-shelf?n=12&seed=3&shift=0", "detect")
    direct = generate("retail-shelf", 12, seed=3, shift=True).splits["train"]
    got = sorted((s for v in shifted.splits.values() for s in v), key=lambda s: s.id)
    assert [s.image.tobytes() for s in got] == [s.image.tobytes() for s in direct]
    assert all("shifted" in s.file_name for s in got)
    assert not any("shifted" in s.file_name for v in plain.splits.values() for s in v)
    with pytest.raises(DataError, match="shift='yes' must be 0 or 1"):
        load_dataset("synthetic://retail-shelf?n=4&shift=yes", "detect")
    with pytest.raises(DataError, match="shift is not available for 'photo'"):
        load_dataset("synthetic://photo?n=4&shift=1", "detect")
