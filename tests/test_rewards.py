"""Geometry conventions, the built-in rewards, their registry and the TRL adapter."""

from __future__ import annotations

import doctest
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.codec
import pipeline.geometry
import pipeline.metrics
import pipeline.rewards.base
import pipeline.rewards.builtin
from pipeline.codec import Codec
from pipeline.geometry import (
    box_iou,
    center_distance,
    hungarian_match,
    iou_matrix,
    oks,
    polygon_mask_iou,
)
from pipeline.rewards import (
    BUILTIN_REWARDS,
    DEFAULT_REWARD,
    Reward,
    RewardError,
    as_trl_reward,
    get_reward,
)
from pipeline.structures import empty_target


def tgt(boxes=(), labels=None, w=100, h=100, **extra):
    t = empty_target(w, h)
    t["boxes"] = [list(b) for b in boxes]
    t["labels"] = list(labels) if labels is not None else ["obj"] * len(t["boxes"])
    t.update(extra)
    return t


# -- geometry: one convention ----------------------------------------------------------------

coord = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(coord, coord, st.floats(1e-3, 1e4), st.floats(1e-3, 1e4))
def test_a_box_against_itself_has_iou_exactly_one(x, y, w, h):
    b = [x, y, x + w, y + h]
    if b[2] > b[0] and b[3] > b[1]:  # w may vanish next to a large x in floating point
        assert box_iou(b, b) == 1.0
        assert iou_matrix([b], [b])[0, 0] == 1.0


def test_half_open_boxes_that_touch_do_not_overlap():
    # VLM-R1's inclusive/exclusive mix gave touching boxes an overlap, and b vs b < 1
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 5]) == 0.5


@pytest.mark.parametrize("degenerate", [[5, 5, 5, 5], [5, 5, 5, 9], [5, 5, 9, 5], [9, 9, 5, 5]])
def test_degenerate_boxes_score_zero_without_dividing_by_zero(degenerate):
    with np.errstate(all="raise"):
        assert box_iou(degenerate, [0, 0, 10, 10]) == 0.0
        assert box_iou(degenerate, degenerate) == 0.0
        assert iou_matrix([degenerate], [degenerate, [0, 0, 10, 10]]).tolist() == [[0.0, 0.0]]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(coord, coord, coord, coord), max_size=5),
       st.lists(st.tuples(coord, coord, coord, coord), max_size=5))  # fmt: skip
def test_iou_matrix_agrees_with_box_iou(a, b):
    m = iou_matrix(a, b)
    assert m.shape == (len(a), len(b))
    for i, p in enumerate(a):
        for j, g in enumerate(b):
            assert m[i, j] == pytest.approx(box_iou(p, g), abs=1e-12)


def test_hungarian_match_is_one_to_one_and_class_aware_on_request():
    preds = [[0, 0, 10, 10], [0, 0, 10, 10]]
    gts = [[0, 0, 10, 10]]
    assert hungarian_match(preds, gts) == [(0, 0, 1.0)]
    pairs = hungarian_match(preds, gts, labels_pred=["a", "b"], labels_gt=["b"], class_aware=True)
    assert pairs == [(1, 0, 1.0)]
    assert hungarian_match([[0, 0, 10, 10]], [[0, 0, 10, 4]], iou_thr=0.5) == []


def test_polygon_mask_iou_and_oks_and_centre_distance():
    sq = [0, 0, 10, 0, 10, 10, 0, 10]
    assert polygon_mask_iou(sq, sq, 20, 20) == 1.0
    assert polygon_mask_iou(sq, [0, 0, 10, 0], 20, 20) == 0.0  # < 3 vertices: empty mask
    assert polygon_mask_iou([], [], 20, 20) == 0.0
    gt = [[5, 5, 2], [0, 0, 0]]
    assert oks([[5, 5, 2], [90, 90, 2]], gt, area=100) == 1.0  # v=0 gt keypoint ignored
    assert oks([[5, 5, 0], [0, 0, 0]], gt, area=100) == 0.0  # predicted absent
    assert 0 < oks([[6, 5, 2], [0, 0, 0]], gt, area=100) < 1
    assert center_distance([0, 0, 2, 2], [0, 0, 2, 2]) == 0.0


# -- registry ------------------------------------------------------------------------------


def test_registry_names_are_pinned_because_they_are_metric_keys():
    assert list(BUILTIN_REWARDS) == ["iou", "f1", "mask_iou", "oks", "format", "caption", "points", "count"]
    assert DEFAULT_REWARD == {
        "detect": "iou", "segment": "mask_iou", "keypoints": "oks", "caption": "caption",
    }  # fmt: skip
    codec = Codec("detect", ["obj"])
    for name in BUILTIN_REWARDS:
        reward = get_reward(name)
        assert reward.name == name
        assert isinstance(reward, Reward)
        assert as_trl_reward(reward, codec).__name__ == name
    with pytest.raises(ValueError, match="built-in rewards are: iou, f1"):
        get_reward("giou")


@pytest.mark.parametrize(
    "module",
    [pipeline.geometry, pipeline.codec, pipeline.rewards.base, pipeline.rewards.builtin,
     pipeline.metrics],
)  # fmt: skip
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# -- soft IoU and F1 -----------------------------------------------------------------------

GT1 = [[40, 40, 60, 60]]


def unpenalised_best_iou(out, gt):
    """The VLM-R1-style reward: mean over ground truths of the best IoU with any prediction.
    Extra predictions cost nothing."""
    if not gt["boxes"]:
        return 1.0 if not out["boxes"] else 0.0
    return float(np.mean([max((box_iou(p, g) for p in out["boxes"]), default=0.0)
                          for g in gt["boxes"]]))  # fmt: skip


def test_spraying_boxes_games_an_unpenalised_reward_but_not_iou_or_f1():
    gt = tgt(GT1)
    correct = tgt(GT1)
    # 20 boxes: a 4×5 grid over the image, plus the right one among them
    grid = [[x, y, x + 25, y + 20] for x in range(0, 100, 25) for y in range(0, 100, 20)]
    spray = tgt(grid[:19] + GT1)
    assert len(spray["boxes"]) == 20
    assert unpenalised_best_iou(spray, gt) >= unpenalised_best_iou(correct, gt) == 1.0
    iou, f1 = get_reward("iou"), get_reward("f1")
    assert iou.score([correct], [gt]) == [1.0]
    assert iou.score([spray], [gt])[0] <= 0.05 + 1e-12  # 1 / 20
    assert f1.score([correct], [gt]) == [1.0]
    assert f1.score([spray], [gt])[0] == pytest.approx(2 / 21)


def test_misses_and_extras_cost_the_same():
    gt = tgt([[0, 0, 10, 10], [20, 20, 30, 30]])
    missing = tgt([[0, 0, 10, 10]])
    extra = tgt([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [70, 70, 80, 80]])
    iou = get_reward("iou")
    assert iou.score([missing, extra], [gt, gt]) == [0.5, 0.5]
    f1 = get_reward("f1")
    assert f1.score([missing], [gt]) == [pytest.approx(2 / 3)]
    assert f1.score([extra], [gt]) == [pytest.approx(2 / 3)]


def test_empty_cases():
    empty, one = tgt(), tgt(GT1)
    for name in ("iou", "f1"):
        r = get_reward(name)
        assert r.score([empty, empty, one], [empty, one, empty]) == [1.0, 0.0, 0.0]
    assert get_reward("mask_iou").score([empty], [empty]) == [1.0]
    assert get_reward("oks").score([empty], [empty]) == [1.0]
    assert get_reward("caption").score([empty], [empty]) == [1.0]


def test_f1_needs_the_right_label_while_iou_is_class_agnostic():
    gt = tgt(GT1, ["cola"])
    wrong = tgt(GT1, ["soap"])
    assert get_reward("f1").score([wrong], [gt]) == [0.0]
    assert get_reward("iou").score([wrong], [gt]) == [1.0]
    assert get_reward("iou", class_aware=True).score([wrong], [gt]) == [0.0]


def test_f1_is_thresholded_at_half_iou():
    gt = tgt([[0, 0, 10, 10]])
    assert get_reward("f1").score([tgt([[0, 0, 10, 5]])], [gt]) == [1.0]  # IoU 0.5
    assert get_reward("f1").score([tgt([[0, 0, 10, 4.9]])], [gt]) == [0.0]


def test_iou_reward_is_continuous_so_grpo_groups_have_variance():
    gt = tgt(GT1)
    group = [tgt([[40 + d, 40, 60 + d, 60]]) for d in (0, 1, 3, 7, 15)]
    scores = get_reward("iou").score(group, [gt] * len(group))
    assert len(set(scores)) == len(scores)
    assert scores == sorted(scores, reverse=True)


# -- masks, keypoints, captions, format ------------------------------------------------------


def test_mask_iou_reward_matches_polygons_and_penalises_extras():
    a = [0, 0, 10, 0, 10, 10, 0, 10]
    b = [50, 50, 60, 50, 60, 60, 50, 60]
    gt = tgt(masks=[a, b])
    r = get_reward("mask_iou")
    assert r.score([tgt(masks=[b, a])], [gt]) == [1.0]  # order does not matter
    assert r.score([tgt(masks=[a])], [gt]) == [0.5]
    assert r.score([tgt(masks=[a, b, a])], [gt]) == [pytest.approx(2 / 3)]


def test_oks_reward_matches_instances():
    k1 = [[10, 10, 2], [20, 20, 2]]
    k2 = [[70, 70, 2], [0, 0, 0]]
    gt = tgt([[0, 0, 30, 30], [60, 60, 90, 90]], keypoints=[k1, k2])
    r = get_reward("oks")
    assert r.score([tgt(keypoints=[k2, k1])], [gt]) == [1.0]
    assert r.score([tgt(keypoints=[k1])], [gt]) == [0.5]
    near = r.score([tgt(keypoints=[[[11, 10, 2], [20, 21, 2]], k2])], [gt])[0]
    assert 0.5 < near < 1.0


def test_caption_reward_is_token_f1():
    r = get_reward("caption")
    gt = tgt(text="a dog on a red sofa")
    assert r.score([tgt(text="A dog on a red sofa.")], [gt]) == [1.0]
    # words: a dog on a sofa (5) vs a dog on a red sofa (6): 5 common → 10 / 11
    assert r.score([tgt(text="a dog on a sofa")], [gt]) == [pytest.approx(10 / 11)]
    assert r.score([tgt(text="")], [gt]) == [0.0]


def test_format_reward_uses_the_parse_flag_and_checks_the_target():
    r = get_reward("format")
    gt = tgt(GT1)
    ok, outside = tgt(GT1), tgt([[40, 40, 160, 60]])
    assert r.score([ok, ok, outside], [gt] * 3, parsed=[True, False, True]) == [1.0, 0.0, 0.0]
    assert r.score([ok], [gt]) == [1.0]


# -- TRL adapter and errors ------------------------------------------------------------------


def test_trl_adapter_decodes_completions_in_either_format():
    codec = Codec("detect", ["cola", "soap"], num_bins=32)
    gt = tgt([[0, 0, 50, 50]], ["cola"])
    gt_json = json.dumps(gt)
    f = as_trl_reward(get_reward("iou"), codec, parsed_bonus=0.1)
    completions = [
        "cola<loc_0><loc_0><loc_15><loc_15>",
        [{"role": "assistant", "content": "cola<loc_0><loc_0><loc_15><loc_15>"}],
        [{"role": "assistant",
          "content": [{"type": "text", "text": "cola<loc_0><loc_0><loc_7><loc_15>"}]}],
        "garbage",
    ]  # fmt: skip
    scores = f(completions, gt=[gt_json] * 4, width=[100] * 4, height=[100] * 4, prompts=[None] * 4)
    assert scores[0] == scores[1] == pytest.approx(1.1)
    assert scores[2] == pytest.approx(0.5 + 0.1)
    assert scores[3] == 0.0
    # width / height default to the target's image size
    assert f(completions[:1], gt=[gt_json]) == [pytest.approx(1.1)]
    fmt = as_trl_reward(get_reward("format"), codec)
    assert fmt(completions, gt=[gt_json] * 4) == [1.0, 1.0, 1.0, 0.0]
    assert pickle.loads(pickle.dumps(f)).__name__ == "iou"


def test_stage_3_rewards_neither_reward_nor_penalise_a_box_on_a_crowd_region():
    codec = Codec("detect", ["cola", "soap"], num_bins=32)
    gt = {**tgt([[0, 0, 50, 50]], ["cola"]), "crowd": [{"box": [50, 50, 100, 100], "label": "soap"}]}
    row_gt = json.dumps(pipeline.rewards.base.reward_target(gt, "detect"))  # as stage 3's rows carry it
    right = tgt([[0, 0, 50, 50]], ["cola"])
    on_crowd = tgt([[0, 0, 50, 50], [50, 50, 100, 100]], ["cola", "soap"])
    not_its_label = tgt([[0, 0, 50, 50], [50, 50, 100, 100]], ["cola", "cola"])  # an extra, as anywhere else
    for name in ("iou", "f1", "count"):
        f = as_trl_reward(get_reward(name), codec)
        a, b, c = f([codec.encode(t) for t in (right, on_crowd, not_its_label)], gt=[row_gt] * 3)
        assert a == b == pytest.approx(1.0) and c < a, name


def test_reward_errors_name_the_reward_and_sample():
    codec = Codec("detect", ["cola"])
    f = as_trl_reward(get_reward("iou"), codec)
    with pytest.raises(RewardError) as err:
        f(["none", "none"], gt=["{}", "not json"])
    assert err.value.reward == "iou" and err.value.index == 1
    assert "sample 1" in str(err.value)
    with pytest.raises(RewardError, match="2 completions, 1 gt rows"):
        f(["none", "none"], gt=["{}"])

    class Broken:
        name = "broken"

        def score(self, outs, gts):
            return [0.0]

    with pytest.raises(RewardError, match="returned 1 scores for 2 outputs"):
        as_trl_reward(Broken(), codec)(["none", "none"], gt=[json.dumps(tgt())] * 2)
