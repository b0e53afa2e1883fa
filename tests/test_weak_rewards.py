"""The weak-label rewards (``points``, ``count``): a correct answer scores near 1, and every
known way to game them (whole-image boxes, duplicates, huge boxes, spraying, empty answers)
scores well below it; the canonical ``gt`` every reward sees; the config's gates."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from pipeline.codec import Codec
from pipeline.config import REWARD_SCOPES, ConfigError, build_config
from pipeline.rewards.base import as_trl_reward, reward_target
from pipeline.rewards.builtin import (
    BUILTIN_REWARDS,
    FORMAT_WEIGHT,
    count_match,
    get_reward,
)
from pipeline.rewards.js import JsReward, sample_target
from pipeline.rewards.probe import dataset_targets, probe_reward
from pipeline.stages.common import grpo_rows
from pipeline.structures import Sample, empty_target

W = H = 200
BOXES = [[20, 20, 40, 40], [100, 30, 122, 50], [40, 120, 60, 142], [140, 140, 160, 160]]
LABELS = ["a", "b", "a", "b"]


def target(boxes=(), labels=(), **kw) -> dict:
    return {**empty_target(W, H), "boxes": [list(b) for b in boxes], "labels": list(labels), **kw}


def centre(b) -> list[float]:
    return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]


CLICKED = target(points=[centre(b) for b in BOXES], point_labels=list(LABELS))


def full_samples(n: int = 10, sizes=(16, 24), labels=("a", "b")) -> list[Sample]:
    """Boxed training images whose objects are 16-24 px: the size prior's evidence."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        boxes, labs = [], []
        for lab in labels:
            s = rng.randint(*sizes)
            x, y = rng.randint(0, W - s), rng.randint(0, H - s)
            boxes.append([x, y, x + s, y + s])
            labs.append(lab)
        out.append(Sample(id=i, file_name=f"{i}.png", width=W, height=H, target=target(boxes, labs)))
    return out


@pytest.fixture
def points():
    r = get_reward("points")
    r.prepare(full_samples())
    return r


def one(reward, out: dict, gt: dict = CLICKED, parsed: bool = True) -> float:
    return reward.score([out], [gt], parsed=[parsed])[0]


def answer(boxes, labels=None) -> dict:
    boxes = [list(b) for b in boxes]
    return target(boxes, labels if labels is not None else ["a"] * len(boxes))


# -- points ------------------------------------------------------------------------------------


def test_a_correct_answer_scores_near_one_and_a_full_gt_is_scored_through_its_box_centres(points):
    assert one(points, answer(BOXES, LABELS)) >= 0.97
    assert one(points, answer(BOXES, LABELS), target(BOXES, LABELS)) == one(points, answer(BOXES, LABELS))
    assert one(points, answer([], [])) == pytest.approx(FORMAT_WEIGHT)  # the empty answer: format only
    assert one(points, answer([], []), target()) == 1.0  # a negative image answered "none"


@pytest.mark.parametrize("hack", ["whole image", "whole image per click", "duplicated", "huge per click",
                                  "spray", "empty", "wrong labels", "tiny"])  # fmt: skip
def test_points_reward_hacks_score_well_below_a_correct_answer(points, hack):
    correct = one(points, answer(BOXES, LABELS))
    clicks = CLICKED["points"]
    if hack == "whole image":
        out = answer([[0, 0, W, H]])
    elif hack == "whole image per click":
        out = answer([[0, 0, W, H]] * 4, LABELS)
    elif hack == "duplicated":
        out = answer(BOXES * 2, LABELS * 2)
    elif hack == "huge per click":  # a 100 px box around each click
        out = answer([[max(0, x - 50), max(0, y - 50), min(W, x + 50), min(H, y + 50)] for x, y in clicks], LABELS)
    elif hack == "spray":  # a 20 px box on every cell of a grid: every click is covered by some box
        grid = [[x, y, x + 20, y + 20] for x in range(0, W, 20) for y in range(0, H, 20)]
        out = answer(grid, ["a", "b"] * (len(grid) // 2))
    elif hack == "empty":
        out = answer([])
    elif hack == "wrong labels":  # the right boxes, each with the other category than its click
        out = answer(BOXES, ["b", "a", "b", "a"])
    else:  # 2 px boxes on the clicks: they cover one click each, but no object is that small
        out = answer([[x - 1, y - 1, x + 1, y + 1] for x, y in clicks], LABELS)
    score = one(points, out)
    limit = 0.6 if hack == "duplicated" else 0.3  # duplicates: half the boxes are right, soft-F1 pays half
    assert score <= limit < correct - 0.35, (hack, score, correct)


def test_without_a_size_prior_huge_boxes_still_lose():
    bare = get_reward("points")  # prepare never called: the area fallback
    assert one(bare, answer(BOXES, LABELS)) >= 0.97
    assert one(bare, answer([[0, 0, W, H]])) < 0.15
    assert one(bare, answer([[0, 0, W, H]] * 4, LABELS)) < 0.2


def test_an_unparsed_answer_scores_below_every_parsed_one(points):
    parsed = [answer([]), answer([[0, 0, W, H]]), answer([[0, 0, 1, 1]]), answer(BOXES, LABELS)]
    lowest_parsed = min(one(points, o) for o in parsed)
    assert lowest_parsed > 0
    for o in parsed:  # even the perfect boxes, in text that did not parse
        assert one(points, o, parsed=False) < lowest_parsed
    count = get_reward("count")
    assert max(one(count, o, parsed=False) for o in parsed) < min(one(count, o) for o in parsed)


def test_a_click_without_a_category_is_covered_by_a_box_of_any_label(points):
    anonymous = {**CLICKED, "point_labels": [""] * 4}
    assert one(points, answer(BOXES, ["b", "a", "b", "a"]), anonymous) >= 0.97


def test_the_size_prior_is_per_category_and_learned_only_from_fully_labelled_images():
    r = get_reward("points")
    small = full_samples(labels=("small",), sizes=(14, 18))
    big = full_samples(labels=("big",), sizes=(56, 64))
    clicked = Sample(id=99, file_name="c.png", width=W, height=H, label_kind="points",
                     target=target(points=[[50, 50]], point_labels=["big"]))  # fmt: skip
    r.prepare(small + big + [clicked])
    gt = target(points=[[100, 100]], point_labels=[""])
    big_box = [70, 70, 130, 130]
    assert one(r, answer([big_box], ["big"]), gt) >= 0.97
    assert one(r, answer([big_box], ["small"]), gt) < 0.3  # a 'small' object is never 60 px
    # a clicked image holds no boxes: preparing with it alone learns nothing (the fallback)
    r.prepare([clicked])
    assert r.prior == {}


def test_the_points_reward_is_graded_so_grpo_groups_have_a_spread(points):
    """Boxes growing past the sizes seen, or drifting off the click, score less step by step:
    continuous, not 0/1."""
    x, y = centre(BOXES[0])
    growing = [one(points, answer([[x - s, y - s, x + s, y + s]], ["a"]), target(points=[[x, y]], point_labels=["a"]))
               for s in (10, 16, 22, 28)]  # fmt: skip
    assert growing[0] > growing[1] > growing[2] > growing[3]
    drifting = [one(points, answer([[x - 10 + d, y - 10, x + 10 + d, y + 10]], ["a"]),
                    target(points=[[x, y]], point_labels=["a"])) for d in (0, 3, 6, 9)]  # fmt: skip
    assert drifting[0] > drifting[1] > drifting[2] > drifting[3] > FORMAT_WEIGHT


def test_weak_rewards_stay_in_zero_one_on_random_answers(points):
    rng = random.Random(1)
    count = get_reward("count")
    for _ in range(300):
        n = rng.randint(0, 12)
        boxes = []
        for _ in range(n):
            x1, y1 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
            boxes.append([x1, y1, rng.uniform(x1, W), rng.uniform(y1, H)])
        out = answer(boxes, [rng.choice("abc") for _ in boxes])
        for r in (points, count):
            s = one(r, out, parsed=rng.random() < 0.8)
            assert 0.0 <= s <= 1.0


# -- count -------------------------------------------------------------------------------------


def test_count_matches_per_category_from_counts_labels_or_clicks():
    out = answer(BOXES, LABELS)
    assert count_match(out, target(counts={"a": 2, "b": 2})) == 1.0
    assert count_match(out, target(BOXES, LABELS)) == 1.0  # counted from a full image's labels
    assert count_match(out, CLICKED) == 1.0  # from the clicks' categories
    assert count_match(out, {**CLICKED, "point_labels": [""] * 4}) == 1.0  # anonymous clicks: the total
    assert count_match(answer(BOXES[:3], LABELS[:3]), target(counts={"a": 2, "b": 2})) == 0.75
    # a category the image does not hold costs as much as one missed entirely
    assert count_match(answer(BOXES, ["a", "b", "a", "c"]), target(counts={"a": 2, "b": 2})) == pytest.approx(0.5)
    assert count_match(answer([]), target()) == 1.0


def test_count_cannot_be_gamed_by_spraying_or_an_empty_answer():
    r = get_reward("count")
    gt = target(counts={"a": 2, "b": 2})
    correct = one(r, answer(BOXES, LABELS), gt)
    assert correct == 1.0
    spray = answer([[0, 0, 4, 4]] * 60, ["a", "b"] * 30)
    every_category = answer([[0, 0, 4, 4]] * 3, ["a", "b", "c"])
    scores = {"spray": one(r, spray, gt), "every category": one(r, every_category, gt), "empty": one(r, answer([]), gt)}
    assert count_match(answer([]), gt) == 0.0  # the empty answer on a non-empty image
    assert scores["empty"] == pytest.approx(FORMAT_WEIGHT)
    assert all(s < 0.6 for s in scores.values()), scores
    graded = [one(r, answer(BOXES[:1] * k, ["a"] * k), target(counts={"a": 4})) for k in (4, 3, 2, 1)]
    assert graded == sorted(graded, reverse=True) and len(set(graded)) == 4


# -- the canonical gt, the label kinds, the config ----------------------------------------------


def test_every_reward_gets_one_gt_structure_for_boxed_clicked_and_counted_images():
    full = target(BOXES, LABELS)
    t = reward_target(full, "detect")
    assert t["points"] == [centre(b) for b in BOXES] and t["point_labels"] == LABELS and t["counts"] == {"a": 2, "b": 2}
    clicked = reward_target(target(points=[[5, 5], [9, 9]], point_labels=["a", ""]), "detect")
    assert clicked["counts"] == {"a": 1, "": 1} and clicked["boxes"] == []
    counted = reward_target(target(counts={"b": 3}), "segment")
    assert counted["counts"] == {"b": 3} and counted["points"] == []
    kp = {**full, "points": [[1, 1]], "keypoints": [[[1, 1, 2]]]}
    assert reward_target(kp, "keypoints") is kp  # keypoints keep their own points
    assert full["points"] == [] and full["counts"] == {}  # the dataset's target is not changed
    samples = [Sample(id=0, file_name="f.png", width=W, height=H, target=full),
               Sample(id=1, file_name="c.png", width=W, height=H, target=CLICKED, label_kind="points")]  # fmt: skip
    rows = grpo_rows(samples, Codec("detect", ["a", "b"]))
    gts = [json.loads(r["gt"]) for r in rows]
    assert gts[0]["points"] == gts[1]["points"] and gts[0]["counts"] == gts[1]["counts"] == {"a": 2, "b": 2}
    st = sample_target("detect")
    assert len(st["points"]) == len(st["boxes"]) == 2 and st["counts"] == {"object": 2}


def test_a_javascript_reward_reads_clicks_and_counts_of_stage_3_rows():
    src = "function reward(out, gt) { return gt.points.length * 100 + gt.point_labels.length * 10 + gt.counts.a; }"
    r = JsReward(src, "weak.js")
    try:
        samples = [Sample(id=0, file_name="f.png", width=W, height=H, target=target(BOXES, LABELS)),
                   Sample(id=1, file_name="c.png", width=W, height=H, target=CLICKED, label_kind="points")]  # fmt: skip
        rows = grpo_rows(samples, Codec("detect", ["a", "b"]))
        f = as_trl_reward(r, Codec("detect", ["a", "b"]))
        assert f(["none", "none"], gt=[row["gt"] for row in rows]) == [442.0, 442.0]
    finally:
        r.close()
    assert JsReward.label_kinds == ("full",)  # a user's reward gets clicked images only when asked


def test_label_kinds_each_reward_declares():
    assert set(REWARD_SCOPES) == {*BUILTIN_REWARDS, "default"}  # the config's table covers every built-in
    kinds = {name: factory.label_kinds for name, factory in BUILTIN_REWARDS.items()}
    assert kinds == {"iou": ("full",), "f1": ("full",), "mask_iou": ("full",), "oks": ("full",), "format": ("full",),
                     "caption": ("full",), "points": ("full", "points"), "count": ("full", "points", "counts")}  # fmt: skip


@pytest.mark.parametrize("reward", ["points", "count"])
def test_weak_rewards_are_refused_outside_detect_and_segment(reward):
    for task in ("detect", "segment"):
        assert build_config({"task": task, "reward": reward}).reward == reward
    for task in ("keypoints", "caption"):
        with pytest.raises(ConfigError, match=rf"reward: the '{reward}' reward scores detect and segment tasks only, "
                                              rf"not {task}") as e:  # fmt: skip
            build_config({"task": task, "reward": reward})
        assert e.value.errors[0]["loc"] == "reward"


def test_rl_label_kinds_must_be_ones_the_builtin_reward_can_score():
    with pytest.raises(ConfigError, match=r"label_kinds: the 'iou' reward cannot score images labelled 'points'"):
        build_config({"reward": "iou", "rl": {"label_kinds": ["full", "points"]}})
    with pytest.raises(ConfigError, match=r"label_kinds: the 'default' reward cannot score images labelled 'counts'"):
        build_config({"rl": {"label_kinds": ["counts"]}})
    assert build_config({"reward": "count", "rl": {"label_kinds": ["counts"]}}).rl.label_kinds == ["counts"]
    assert build_config({"reward": "example:iou", "rl": {"label_kinds": ["points"]}}).rl.label_kinds == ["points"]


# -- `dreamforge reward test` ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["points", "count"])
def test_reward_test_ranks_the_exact_prediction_first_for_weak_rewards(name):
    targets = dataset_targets("synthetic://retail-shelf?n=12&seed=3", "detect", 12)
    rows = {row["case"]: row["mean"] for row in probe_reward(get_reward(name), targets)}
    assert rows["exact"] == 1.0 and rows["missing"] < 0.6 and rows["extra"] < 0.8, rows
    if name == "points":
        assert rows["shifted"] < 1.0  # a click off the box's centre costs a little


def test_reward_test_cli_runs_the_points_reward(root):
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", "reward", "test", "points", "--dataset",
                          "synthetic://retail-shelf?n=8&seed=3", "--samples", "6", "--json"],
                         capture_output=True, text=True, cwd=root)  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = {c["case"]: c for c in json.loads(run.stdout)["cases"]}
    assert table["exact"]["mean"] == 1.0 > table["missing"]["mean"]


def test_reward_test_refuses_a_weak_reward_for_a_task_it_cannot_score():
    from pipeline.rewards.probe import load_any_reward

    assert load_any_reward("count", "segment").name == "count"
    with pytest.raises(ValueError, match="the 'points' reward scores detect and segment tasks only, not keypoints"):
        load_any_reward("points", "keypoints")


@pytest.mark.parametrize(("uri", "task", "expected"), [
    ("synthetic://retail-shelf?n=30&seed=1&points=10", "detect", "points"),
    ("synthetic://traffic-camera?n=30&seed=1&counts=10", "detect", "count"),
    ("synthetic://retail-shelf?n=30&seed=1&points=5&counts=5", "segment", "points"),
    ("synthetic://retail-shelf?n=30&seed=1", "detect", "iou"),
    ("synthetic://retail-shelf?n=30&seed=1", "keypoints", "oks"),
])  # fmt: skip
def test_the_default_reward_scores_the_weak_labels_the_data_has(uri, task, expected):
    from pipeline.config import build_config
    from pipeline.data import load_dataset
    from pipeline.job import resolve_reward
    from pipeline.reporter import BaseReporter

    class Lines(BaseReporter):
        def __init__(self):
            self.lines: list[str] = []

        def log(self, message, *, level="info", stage=None):
            self.lines.append(message)

    ds = load_dataset(uri, task, seed=0)
    rep = Lines()
    reward = resolve_reward(build_config({"task": task, "data": {"dataset": uri}}), rep, ds)
    assert reward.name == expected
    said = [m for m in rep.lines if m.startswith("reward: default is")]
    assert bool(said) == (expected in ("points", "count"))
