"""The codec: targets in original-image pixels ⇄ location-token text, for every task."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.codec import (
    ABSENT,
    Codec,
    dequantize_vertex,
    quantize_vertex,
)
from pipeline.geometry import box_iou
from pipeline.metrics import evaluate
from pipeline.structures import empty_target

# The machine is shared: no per-example deadline, modest example counts.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CATS = ["cola", "water", "chips", "soap", "hot dog"]
TOL = 1e-6

sizes = st.integers(min_value=1, max_value=2000)
bins = st.sampled_from([2, 7, 32, 1000])


@st.composite
def image_and_boxes(draw, max_boxes=8):
    w, h = draw(sizes), draw(sizes)
    n = draw(st.integers(0, max_boxes))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, w, allow_nan=False))
        x2 = draw(st.floats(0, w, allow_nan=False))
        y1 = draw(st.floats(0, h, allow_nan=False))
        y2 = draw(st.floats(0, h, allow_nan=False))
        assume(x1 != x2 and y1 != y2)
        boxes.append([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])
    labels = draw(st.lists(st.sampled_from(CATS), min_size=n, max_size=n))
    target = empty_target(w, h)
    target["boxes"], target["labels"] = boxes, labels
    return target


def bin_aligned_box(b: tuple[int, int, int, int], w: int, h: int, n: int) -> list[float]:
    """A box whose edges sit on bin edges: [bx1·W/N, by1·H/N, (bx2+1)·W/N, (by2+1)·H/N]."""
    return [b[0] * w / n, b[1] * h / n, (b[2] + 1) * w / n, (b[3] + 1) * h / n]


# -- round trips ---------------------------------------------------------------------------


@FAST
@given(image_and_boxes(), bins)
def test_boxes_round_trip_within_one_bin_in_reading_order(target, n):
    codec = Codec("detect", CATS, num_bins=n, max_objects=8)
    w, h = target["image"]["width"], target["image"]["height"]
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok
    order = codec.order(target)
    assert out["labels"] == [target["labels"][i] for i in order]
    assert len(out["boxes"]) == len(target["boxes"])
    bw, bh = w / n, h / n
    for i, got in zip(order, out["boxes"], strict=True):
        want = target["boxes"][i]
        for k, step in enumerate((bw, bh, bw, bh)):
            assert abs(got[k] - want[k]) < step + TOL
        # rounding to the nearest bin edge: each edge of a box wider than a bin moves by at
        # most half a bin, so boxes do not grow on average
        if want[2] - want[0] >= 2 * bw and want[3] - want[1] >= 2 * bh:
            for k, step in enumerate((bw, bh, bw, bh)):
                assert abs(got[k] - want[k]) <= step / 2 + TOL
    # reading order: top edge, then left edge
    tops = [(b[1], b[0]) for b in out["boxes"]]
    assert tops == sorted(tops)


@FAST
@given(sizes, sizes, bins, st.data())
def test_bin_aligned_boxes_round_trip_exactly(w, h, n, data):
    bx1 = data.draw(st.integers(0, n - 1))
    bx2 = data.draw(st.integers(bx1, n - 1))
    by1 = data.draw(st.integers(0, n - 1))
    by2 = data.draw(st.integers(by1, n - 1))
    target = empty_target(w, h)
    target["boxes"] = [bin_aligned_box((bx1, by1, bx2, by2), w, h, n)]
    target["labels"] = ["soap"]
    codec = Codec("detect", CATS, num_bins=n)
    assert codec.encode(target) == f"soap<loc_{bx1}><loc_{by1}><loc_{bx2}><loc_{by2}>"
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok and out["boxes"] == target["boxes"]
    assert box_iou(out["boxes"][0], target["boxes"][0]) == 1.0


@FAST
@given(sizes, sizes, bins, st.data())
def test_keypoints_round_trip_within_half_a_bin_and_keep_absent_ones(w, h, n, data):
    names = ["head", "tail", "left paw"]
    k = len(names)
    kps = []
    for _ in range(k):
        visible = data.draw(st.booleans())
        x = data.draw(st.floats(0, w, allow_nan=False, exclude_max=True))
        y = data.draw(st.floats(0, h, allow_nan=False, exclude_max=True))
        kps.append([x, y, 2] if visible else [0, 0, 0])
    target = empty_target(w, h)
    target["boxes"], target["labels"], target["keypoints"] = [[0, 0, w, h]], ["cola"], [kps]
    codec = Codec("keypoints", CATS, num_bins=n, keypoint_names=names)
    text = codec.encode(target)
    assert text.count(ABSENT) == sum(kp[2] == 0 for kp in kps)
    out, ok = codec.decode(text, w, h)
    assert ok
    (got,) = out["keypoints"]
    assert len(got) == k
    for g, want in zip(got, kps, strict=True):
        assert (g[2] > 0) == (want[2] > 0)
        if want[2] > 0:
            assert abs(g[0] - want[0]) <= w / n / 2 + TOL
            assert abs(g[1] - want[1]) <= h / n / 2 + TOL
    assert out["points"] == [[g[0], g[1]] for g in got if g[2] > 0]


@st.composite
def polygon(draw, w, h, n, max_vertices=8):
    v = draw(st.integers(3, max_vertices))
    pts = [
        (draw(st.floats(0, w, allow_nan=False)), draw(st.floats(0, h, allow_nan=False)))
        for _ in range(v)
    ]
    q = [quantize_vertex(x, y, w, h, n) for x, y in pts]
    # keep polygons whose vertices stay distinct after quantisation (dedupe is tested apart)
    assume(len(set(q)) == len(q))
    return [c for p in pts for c in p]


@FAST
@given(sizes, sizes, st.sampled_from([32, 1000]), st.data())
def test_polygons_round_trip_within_half_a_grid_step(w, h, n, data):
    poly = data.draw(polygon(w, h, n))
    target = empty_target(w, h)
    target["boxes"], target["labels"], target["masks"] = [[0, 0, w, h]], ["chips"], [poly]
    codec = Codec("segment", CATS, num_bins=n)
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok
    (got,) = out["masks"]
    assert len(got) == len(poly)
    sx, sy = w / (n - 1), h / (n - 1)
    for i in range(0, len(poly), 2):
        assert abs(got[i] - poly[i]) <= sx / 2 + TOL
        assert abs(got[i + 1] - poly[i + 1]) <= sy / 2 + TOL


def test_grid_aligned_polygon_round_trips_exactly_including_the_image_border():
    w, h, n = 640, 480, 32
    grid = [(0, 0), (31, 0), (31, 31), (10, 20)]
    poly = [c for b in grid for c in dequantize_vertex(*b, w, h, n)]
    target = empty_target(w, h)
    target["boxes"], target["labels"], target["masks"] = [[0, 0, w, h]], ["chips"], [poly]
    codec = Codec("segment", CATS, num_bins=n)
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok and out["masks"] == [poly]
    assert poly[2] == w  # the right border is representable


def test_long_polygons_are_simplified_to_max_vertices_keeping_the_shape():
    w = h = 200
    circle = []
    for i in range(60):
        a = 2 * math.pi * i / 60
        circle += [100 + 80 * math.cos(a), 100 + 80 * math.sin(a)]
    target = empty_target(w, h)
    target["boxes"], target["labels"], target["masks"] = [[20, 20, 180, 180]], ["soap"], [circle]
    codec = Codec("segment", CATS, num_bins=1000, max_vertices=8)
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok and len(out["masks"][0]) == 16
    from pipeline.geometry import polygon_mask_iou

    assert polygon_mask_iou(out["masks"][0], circle, w, h) > 0.85  # octagon in a circle: 0.90


def test_polygon_too_small_for_the_grid_is_written_without_vertices_and_decodes_as_its_box():
    target = empty_target(640, 640)
    target["boxes"], target["labels"] = [[0, 0, 10, 10]], ["cola"]
    target["masks"] = [[0, 0, 1, 0, 1, 1]]  # all three vertices fall on grid point (0, 0)
    codec = Codec("segment", CATS, num_bins=32)
    text = codec.encode(target)
    assert text == "cola<loc_0><loc_0><loc_0><loc_0>"
    out, ok = codec.decode(text, 640, 640)
    assert ok and out["masks"] == [[0.0, 0.0, 20.0, 0.0, 20.0, 20.0, 0.0, 20.0]]


def test_caption_is_lower_cased_and_stripped():
    codec = Codec("caption", [])
    target = empty_target(10, 10)
    target["text"] = "  A Red   Car.\n"
    assert codec.encode(target) == "a red car."
    out, ok = codec.decode(" A red car. ", 10, 10)
    assert ok and out["text"] == "a red car."
    assert codec.decode("", 10, 10)[1] is False
    assert codec.special_tokens() == []


def test_no_objects_encodes_as_none():
    codec = Codec("detect", CATS)
    assert codec.encode(empty_target(50, 40)) == "none"
    out, ok = codec.decode(" None ", 50, 40)
    assert ok and out == empty_target(50, 40)


# -- resize / pad invariance ----------------------------------------------------------------


def test_text_and_scores_do_not_depend_on_image_size_or_padding():
    n = 32
    codec = Codec("detect", CATS, num_bins=n)
    # even first bins and odd last bins: edges on multiples of 2 bins, so they stay on bin
    # edges of the padded canvas below (twice the size, padded by an even number of bins)
    bins_ = [(4, 6, 9, 11), (20, 6, 31, 31)]
    labels = ["cola", "soap"]
    texts = set()
    preds, gts = [], []
    for w, h in [(64, 64), (640, 480), (333, 1999), (1, 7)]:
        gt = empty_target(w, h)
        gt["boxes"] = [bin_aligned_box(b, w, h, n) for b in bins_]
        gt["labels"] = labels
        text = codec.encode(gt)
        texts.add(text)
        out, ok = codec.decode(text, w, h)
        assert ok
        preds.append(out)
        gts.append(gt)
    assert len(texts) == 1  # normalised coordinates: one text whatever the size
    # A 64×64 image padded on the left and top by 32 px into a 128×128 canvas (as a processor
    # padding to a square would): the object shifts by the padding, and stays bin-aligned.
    gt = empty_target(128, 128)
    gt["boxes"] = [[x1 + 32, y1 + 32, x2 + 32, y2 + 32] for x1, y1, x2, y2 in gts[0]["boxes"]]
    gt["labels"] = labels
    out, ok = codec.decode(codec.encode(gt), 128, 128)
    assert ok
    preds.append(out)
    gts.append(gt)
    m = evaluate(preds, gts, [True] * len(preds), "detect", CATS)
    assert m["mean_iou"] == 1.0
    assert m["map50"] == 1.0
    assert m["f1_50"] == 1.0


def test_perfect_segmentation_of_grid_aligned_polygons_scores_one():
    n = 32
    codec = Codec("segment", CATS, num_bins=n)
    preds, gts = [], []
    for w, h in [(64, 64), (310, 155)]:
        gt = empty_target(w, h)
        gt["boxes"] = [bin_aligned_box((2, 2, 9, 9), w, h, n)]
        gt["labels"] = ["water"]
        grid = [(2, 2), (10, 2), (10, 10), (2, 10)]
        gt["masks"] = [[c for b in grid for c in dequantize_vertex(*b, w, h, n)]]
        out, ok = codec.decode(codec.encode(gt), w, h)
        assert ok
        preds.append(out)
        gts.append(gt)
    m = evaluate(preds, gts, [True, True], "segment", CATS)
    assert m["mask_iou"] == 1.0 and m["mean_iou"] == 1.0


# -- the lenient decoder --------------------------------------------------------------------

TOKEN_SOUP = st.lists(
    st.sampled_from(
        ["<loc_0>", "<loc_3>", "<loc_31>", "<loc_32>", "<loc_999999999999>", ABSENT, ";", " ",
         "cola", "Soap", "none", "<loc_", ">", "<loc_-1>", "\n", "hot dog"]
    ),
    max_size=60,
).map("".join)  # fmt: skip


TASK_NAMES = st.sampled_from(["detect", "segment", "keypoints", "caption"])


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), TOKEN_SOUP), TASK_NAMES, st.integers(-5, 3000), st.integers(-5, 3000))
def test_decode_never_raises_and_returns_a_canonical_target(text, task, w, h):
    codec = Codec(task, CATS, num_bins=32, max_objects=4, keypoint_names=["a", "b"])
    out, ok = codec.decode(text, w, h)
    assert isinstance(ok, bool)
    assert set(out) == {"boxes", "labels", "points", "point_labels", "counts", "crowd", "areas", "mask_parts",
                        "keypoints", "masks", "text", "image"}  # fmt: skip
    assert len(out["boxes"]) == len(out["labels"]) <= 4
    ww, hh = out["image"]["width"], out["image"]["height"]
    for x1, y1, x2, y2 in out["boxes"]:
        assert 0 <= x1 <= x2 <= ww and 0 <= y1 <= y2 <= hh
    if task == "segment":
        assert len(out["masks"]) == len(out["boxes"])
    if task == "keypoints":
        assert all(len(k) == 2 for k in out["keypoints"])


C = "cola<loc_1><loc_2><loc_3><loc_4>"
S = "soap<loc_5><loc_6><loc_7><loc_8>"


@pytest.mark.parametrize(
    ("text", "labels", "ok"),
    [
        (C, ["cola"], True),
        (f"{C};{S}", ["cola", "soap"], True),
        ("cola <loc_1> <loc_2> <loc_3> <loc_4> ; " + S, ["cola", "soap"], True),  # spaces
        ("COLA<loc_1><loc_2><loc_3><loc_4>", ["cola"], True),  # case-insensitive category
        ("beer<loc_1><loc_2><loc_3><loc_4>", ["beer"], False),  # unknown label kept
        (f"cola<loc_1><loc_2><loc_3>;{S}", ["soap"], False),  # 3 locations: skipped
        (f"{C}{S}", ["cola", "soap"], False),  # missing separator
        (f"{C};;{S}", ["cola", "soap"], False),  # doubled separator
        (f"{C};", ["cola"], False),
        (f"{C} and more", ["cola"], False),
        ("cola<loc_5><loc_2><loc_3><loc_4>", [], False),  # x2 before x1
        ("cola<loc_1><loc_2><loc_3><loc_40>", [], False),  # bin out of range
        ("<loc_1><loc_2><loc_3><loc_4>", [], False),  # no label
        ("the image shows a cola", [], False),
        ("", [], False),
    ],
)
def test_decode_skips_garbage_objects_and_flags_them(text, labels, ok):
    out, parsed = Codec("detect", CATS, num_bins=32).decode(text, 64, 64)
    assert out["labels"] == labels
    assert parsed is ok


def test_decoding_cap_drops_objects_beyond_max_objects():
    codec = Codec("detect", CATS, num_bins=32, max_objects=3)
    text = ";".join(f"cola<loc_{i}><loc_0><loc_{i}><loc_0>" for i in range(10))
    out, ok = codec.decode(text, 64, 64)
    assert len(out["boxes"]) == 3 and not ok
    target = empty_target(64, 64)
    target["boxes"] = [[2 * i, 0, 2 * i + 2, 2] for i in range(10)]
    target["labels"] = ["cola"] * 10
    assert codec.encode(target).count(";") == 2  # encode keeps the first 3 in reading order


def test_keypoint_objects_with_the_wrong_count_are_padded_and_flagged():
    codec = Codec("keypoints", ["person"], num_bins=32, keypoint_names=["a", "b", "c"])
    out, ok = codec.decode("person<loc_0><loc_0><loc_9><loc_9><loc_1><loc_1>", 64, 64)
    assert not ok
    assert out["keypoints"] == [[[3.0, 3.0, 2], [0.0, 0.0, 0], [0.0, 0.0, 0]]]
    out, ok = codec.decode("person<loc_0><loc_0><loc_9><loc_9><loc_1><kp_absent>", 64, 64)
    assert not ok and out["keypoints"] == []  # a lone coordinate: garbage object


# -- vocabulary, prompt, generation budget ---------------------------------------------------


def test_vocabulary_prompt_and_budget():
    codec = Codec("detect", ["cola", "water", "chips", "soap"], num_bins=1000)
    assert codec.prompt() == "Detect all objects: cola, water, chips, soap."
    locs = codec.location_tokens()
    assert locs[0] == "<loc_0>" and locs[-1] == "<loc_999>" and len(locs) == 1000
    assert codec.special_tokens() == locs
    kp = Codec("keypoints", ["person"], keypoint_names=["nose", "tail"])
    assert kp.special_tokens()[-1] == ABSENT and len(kp.special_tokens()) == 33
    with pytest.raises(ValueError, match="keypoint_names"):
        Codec("keypoints", ["person"])
    with pytest.raises(ValueError, match="';'"):
        Codec("detect", ["salt;pepper"])


@pytest.mark.parametrize("task", ["detect", "segment", "keypoints"])
def test_max_new_tokens_bounds_the_longest_valid_answer(task):
    codec = Codec(task, CATS, num_bins=32, max_objects=8, keypoint_names=["a", "b", "c"])
    w = h = 640
    target = empty_target(w, h)
    for i in range(8):
        target["boxes"].append([10 * i, 10 * i, 10 * i + 300, 10 * i + 300])
        target["labels"].append("hot dog")
        angles = [j / 5 + i for j in range(30)]
        circle = [c for a in angles for c in (300 + 250 * math.cos(a), 300 + 250 * math.sin(a))]
        target["masks"].append(circle)
        target["keypoints"].append([[5, 5, 2], [600, 600, 2], [300, 10, 2]])
    text = codec.encode(target)
    # a location token is one token; count labels as `label_tokens` and separators as one each
    n_tokens = text.count("<loc_") + text.count(ABSENT) + text.count(";") + 8 * 4
    assert n_tokens <= codec.max_new_tokens(label_tokens=4)
