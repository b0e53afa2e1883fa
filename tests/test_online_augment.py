"""Augmentations drawn at each read (mosaic, rot90): the labels must land on the same pixels,
and the draws must depend on (seed, epoch, row) alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config import build_config
from pipeline.data.synthetic import generate
from pipeline.online_augment import MOSAIC_P, OnlineAugment, mosaic, orient
from pipeline.structures import empty_target


def _marked(w: int, h: int, boxes: list[list[float]], seed: int) -> tuple[Image.Image, dict]:
    """A dark image whose only bright pixels are its boxes, each a colour of its own."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((h, w, 3), np.uint8)
    for b in boxes:
        x1, y1, x2, y2 = (int(v) for v in b)
        pixels[y1:y2, x1:x2] = rng.integers(60, 256, 3)
    t = empty_target(w, h)
    t["boxes"], t["labels"] = [list(map(float, b)) for b in boxes], ["thing"] * len(boxes)
    return Image.fromarray(pixels), t


def _lit(image: Image.Image) -> np.ndarray:
    return np.asarray(image).max(axis=2) > 0


def _painted(size: tuple[int, int], boxes: list[list[float]]) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), bool)
    for b in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("mirror", [False, True])
def test_every_orientation_moves_boxes_masks_and_keypoints_with_the_pixels(turns, mirror):
    image, t = _marked(40, 24, [[2, 3, 10, 9], [20, 12, 37, 22]], seed=turns)
    t["masks"] = [[2, 3, 10, 3, 10, 9, 2, 9], [20, 12, 37, 12, 37, 22]]
    t["keypoints"] = [[[4.0, 5.0, 2], [0.0, 0.0, 0]], [[30.0, 20.0, 2], [21.0, 13.0, 2]]]
    out, o = orient(image, t, turns, mirror, perm=[1, 0])
    assert out.size == ((24, 40) if turns % 2 else (40, 24)) and o["image"] == {"width": out.width, "height": out.height}
    # the lit pixels are exactly the moved boxes
    assert np.array_equal(_lit(out), _painted(out.size, o["boxes"]))
    for box, poly in zip(o["boxes"], o["masks"], strict=True):  # each mask's vertices stay on its box's edges
        xs, ys = poly[0::2], poly[1::2]
        assert min(xs) == box[0] and max(xs) == box[2] and min(ys) == box[1] and max(ys) == box[3]
    # a visible keypoint lands on a lit pixel of its own object's box, an absent one stays absent
    for inst, box in zip(o["keypoints"], o["boxes"], strict=True):
        for x, y, v in inst:
            if v:
                assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    absent = [k for inst in o["keypoints"] for k in inst if not k[2]]
    assert absent == [[0.0, 0.0, 0]]
    # mirrored, the names swap (perm [1, 0]): the absent point moves to the other slot
    assert (o["keypoints"][0][0][2] == 0) == mirror


def test_a_mosaic_window_keeps_the_boxes_mostly_inside_it_on_their_pixels():
    rng = np.random.default_rng(0)
    tiles = [_marked(48, 48, [[4 + 6 * k, 5, 16 + 6 * k, 17], [30, 28, 44, 46]], seed=k) for k in range(4)]
    kept = dropped = 0
    for _ in range(40):
        image, t = mosaic(*tiles[0], tiles[1:], rng)
        assert image.size == (48, 48)
        lit = _lit(image)
        for b in t["boxes"]:
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            assert 0 <= x1 < x2 <= 48 and 0 <= y1 < y2 <= 48 and lit[y1:y2, x1:x2].all()  # each box on its pixels
        # every lit pixel outside the kept boxes belongs to an object cut to under half its area
        stray = lit & ~_painted(image.size, t["boxes"])
        kept += len(t["boxes"])
        dropped += int(stray.any())
        assert stray.sum() < 0.5 * 14 * 18 * 8
    assert kept > 40 and dropped > 0  # windows both keep and cut objects


def test_draws_depend_on_seed_epoch_and_row_alone():
    train = generate("retail-shelf", 12, seed=2).splits["train"]
    a, b = OnlineAugment(train, ["mosaic", "rot90"], seed=0), OnlineAugment(train, ["mosaic", "rot90"], seed=0)

    def draw(aug: OnlineAugment, i: int) -> tuple[bytes, str]:
        image, t = aug(i, lambda s: s.image)
        return image.tobytes(), repr(t["boxes"])

    first = [draw(a, i) for i in range(len(train))]
    assert [draw(b, i) for i in reversed(range(len(train)))][::-1] == first  # read order does not matter
    a.epoch = 1
    second = [draw(a, i) for i in range(len(train))]
    assert sum(x != y for x, y in zip(first, second, strict=True)) >= len(train) // 2  # a new epoch, new draws
    untouched = sum(img == s.image.convert("RGB").tobytes() for (img, _), s in zip(second, train, strict=True))
    assert untouched < len(train)  # rot90 and mosaic changed most reads
    assert 0 < MOSAIC_P < 1


def test_the_default_augments_detection_with_mosaic_and_presets_keep_theirs():
    assert build_config({}).data.augment == ["mosaic"]
    assert build_config({"preset": "retail-shelf"}).data.augment == ["hflip"]
    assert build_config({"preset": "medical-scan"}).data.augment == []
    assert build_config({"preset": "generic"}).data.augment == []
    assert build_config({"data": {"augment": []}}).data.augment == []


@pytest.mark.parametrize("task", ["segment", "keypoints"])
def test_a_mosaic_cuts_masks_to_the_window_and_drops_keypoints_outside_it(task):
    train = generate("retail-shelf", 16, seed=4, task=task).splits["train"]
    aug = OnlineAugment(train, ["mosaic"], seed=3)
    seen_cut = False
    for epoch in range(3):
        aug.epoch = epoch
        for i in range(len(train)):
            image, t = aug(i, lambda s: s.image)
            w, h = image.size
            n = len(t["boxes"])
            assert len(t["labels"]) == n
            for b in t["boxes"]:
                assert 0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h
            if task == "segment" and n:
                assert len(t["masks"]) == n
                for poly, b in zip(t["masks"], t["boxes"], strict=True):
                    xs, ys = poly[0::2], poly[1::2]
                    assert len(poly) >= 6 and min(xs) >= b[0] - 1e-6 and max(xs) <= b[2] + 1e-6
                    assert min(ys) >= b[1] - 1e-6 and max(ys) <= b[3] + 1e-6
                    seen_cut |= any(v in (0.0, float(w)) for v in xs) or any(v in (0.0, float(h)) for v in ys)
            if task == "keypoints" and n:
                assert len(t["keypoints"]) == n
                for inst in t["keypoints"]:
                    for x, y, v in inst:
                        assert (0 <= x <= w and 0 <= y <= h) or not v
                seen_cut |= any(not v for inst in t["keypoints"] for _, _, v in inst)
    assert seen_cut  # some windows cut a mask or dropped a keypoint


def test_clip_polygon_keeps_the_part_inside():
    from pipeline.online_augment import _area, clip_polygon

    square = [-5.0, -5.0, 5.0, -5.0, 5.0, 5.0, -5.0, 5.0]
    assert _area(clip_polygon(square, 10, 10)) == pytest.approx(25.0)
    assert clip_polygon([20.0, 20.0, 30.0, 20.0, 30.0, 30.0], 10, 10) == []
    inside = [1.0, 1.0, 4.0, 1.0, 4.0, 4.0]
    assert clip_polygon(inside, 10, 10) == inside


def test_training_rows_show_the_drawn_image_with_its_own_answer_and_change_by_epoch():
    from transformers import TrainerControl, TrainerState

    from pipeline.job import make_codec
    from pipeline.online_augment import EpochTracker
    from pipeline.stages.common import sft_rows, with_images

    cfg = build_config({"data": {"dataset": "synthetic://retail-shelf?n=12&seed=2"}})
    ds = generate("retail-shelf", 12, seed=2)
    train, codec = ds.splits["train"], make_codec(cfg, ds)
    aug = OnlineAugment(train, ["mosaic"], seed=0)

    def augment(i, image_of):
        image, target = aug(i, image_of)
        return image, {"completion": [{"role": "assistant", "content": codec.encode(target)}]}

    rows = with_images(sft_rows(train, codec), train, None, augment)
    tracker = EpochTracker(aug)
    answers = {}
    for epoch in (0, 0, 1):
        tracker.on_epoch_begin(None, TrainerState(epoch=float(epoch)), TrainerControl())
        answers.setdefault(epoch, []).append([r["completion"][0]["content"] for r in rows])
        for i, r in enumerate(rows):
            assert r["image"].size == train[i].image.size
            assert r["completion"][0]["content"] == codec.encode(aug(i, lambda s: s.image)[1])
    assert answers[0][0] == answers[0][1]  # the same epoch reads the same draws
    assert answers[0][0] != answers[1][0]  # the next epoch, new ones
    plain = [codec.encode(s.target) for s in train]
    assert sum(a != p for a, p in zip(answers[1][0], plain, strict=True)) >= len(train) // 2


def test_a_big_photo_is_mosaicked_at_the_models_size_with_its_labels_scaled():
    image, t = _marked(3000, 2000, [[300, 200, 900, 800], [1500, 1000, 2700, 1900]], seed=5)
    big = generate("retail-shelf", 2, seed=0).splits["train"][0]
    import dataclasses

    big = dataclasses.replace(big, width=3000, height=2000, target=t, image=image)
    out, o = OnlineAugment([big], ["mosaic"], seed=0, max_side=120)(0, lambda s: s.image)  # one image: no mosaic
    assert out.size == (120, 80) and o["image"] == {"width": 120, "height": 80}
    assert o["boxes"] == [[12.0, 8.0, 36.0, 32.0], [60.0, 40.0, 108.0, 76.0]]
