"""Mirrored copies of labelled images: the labels must land on the same pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.augment import augment, hflip, mirror_permutation
from pipeline.config import ConfigError, build_config
from pipeline.data.synthetic import generate


def _crop(image, box):
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return np.asarray(image)[y1:y2, x1:x2]


@pytest.mark.parametrize("task", ["detect", "segment", "keypoints"])
def test_a_mirrored_box_covers_the_mirrored_pixels(task):
    for s in generate("retail-shelf", 6, seed=3, task=task).splits["train"]:
        m = hflip(s)
        assert m.image.size == s.image.size and m.target["labels"] == s.target["labels"]
        for box, mbox in zip(s.target["boxes"], m.target["boxes"], strict=True):
            assert mbox[0] < mbox[2] and mbox[1:4:2] == box[1:4:2]
            # what the label points at is the same object, mirrored
            assert np.array_equal(_crop(m.image, mbox), _crop(s.image, box)[:, ::-1])


def test_masks_points_and_keypoints_follow_and_the_original_is_untouched():
    s = generate("retail-shelf", 4, seed=1, task="keypoints").splits["train"][0]
    before = repr(s.target)
    w = s.target["image"]["width"]
    m = hflip(s)
    assert repr(s.target) == before
    assert m.target["points"] == [[w - x, y] for x, y in s.target["points"]]
    assert [[kp[1] for kp in inst] for inst in m.target["keypoints"]] == [[kp[1] for kp in inst] for inst in s.target["keypoints"]]
    seg = generate("retail-shelf", 4, seed=1, task="segment").splits["train"][0]
    poly, mpoly = seg.target["masks"][0], hflip(seg).target["masks"][0]
    assert mpoly[0::2] == [w - x for x in poly[0::2]] and mpoly[1::2] == poly[1::2]
    twice = hflip(hflip(seg))
    assert twice.target == seg.target and np.array_equal(np.asarray(twice.image), np.asarray(seg.image))


def test_left_and_right_keypoints_swap_names():
    names = ["nose", "left_eye", "right_eye"]
    perm = mirror_permutation(names)
    s = generate("retail-shelf", 2, seed=0, task="detect").splits["train"][0]
    s.target["keypoints"] = [[[30.0, 10.0, 2], [20.0, 8.0, 2], [40.0, 8.0, 2]]]
    m = hflip(s, perm)
    w = s.target["image"]["width"]
    # the eye that now appears on the left of the image is the one the mirrored person calls left
    assert m.target["keypoints"][0] == [[w - 30.0, 10.0, 2], [w - 40.0, 8.0, 2], [w - 20.0, 8.0, 2]]


def test_augment_appends_one_copy_per_image_with_ids_apart():
    train = generate("retail-shelf", 8, seed=2).splits["train"]
    out = augment(train, ["hflip"])
    assert out[: len(train)] == train and len(out) == 2 * len(train)
    assert len({s.id for s in out}) == len(out)
    assert all("(mirrored)" in s.file_name for s in out[len(train):])


def test_an_unknown_augmentation_names_the_field():
    with pytest.raises(ConfigError, match=r"data\.augment\.0"):
        build_config({"data": {"augment": ["vflip"]}})
