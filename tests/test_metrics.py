"""Dataset metrics: perfect answers score 1, empty answers 0, and a hand-computed case."""

from __future__ import annotations

import copy

import pytest

from pipeline.metrics import confusion_matrix, evaluate, primary_metric
from pipeline.structures import empty_target

CATS = ["a", "b"]


def tgt(boxes=(), labels=(), w=16, h=16, **extra):
    t = empty_target(w, h)
    t["boxes"], t["labels"] = [list(b) for b in boxes], list(labels)
    t.update(extra)
    return t


def dataset():
    sq = [0, 0, 8, 0, 8, 8, 0, 8]
    sq2 = [8, 8, 16, 8, 16, 16, 8, 16]
    return [
        tgt([[0, 0, 8, 8], [8, 8, 16, 16]], ["a", "b"], masks=[sq, sq2],
            keypoints=[[[2, 2, 2], [0, 0, 0]], [[10, 10, 2], [12, 12, 2]]], text="two squares"),
        tgt([[4, 0, 12, 6]], ["a"], masks=[[4, 0, 12, 0, 12, 6, 4, 6]],
            keypoints=[[[5, 1, 2], [6, 2, 2]]], text="one box"),
        tgt(text="nothing here"),  # an image with no object
    ]  # fmt: skip


@pytest.mark.parametrize("task", ["detect", "segment", "keypoints", "caption"])
def test_perfect_predictions_score_one(task):
    gts = dataset()
    m = evaluate(copy.deepcopy(gts), gts, [True] * 3, task, CATS)
    boxes = {"mean_iou", "map50", "f1_50", "parse_rate", "mean_count_error", "ap", "ap50", "ap_per_class", "label_accuracy",
             "confusion_matrix"}
    expected = {
        "detect": boxes,
        "segment": boxes | {"mask_iou", "mask_ap", "mask_ap50"},
        "keypoints": boxes | {"oks", "kp_ap", "kp_ap50"},
        "caption": {"caption_f1", "accuracy", "parse_rate"},
    }[task]
    assert set(m) == expected
    per_class = m.pop("ap_per_class", [])
    confusion = m.pop("confusion_matrix", None)
    if confusion is not None:  # every object on the diagonal, nothing against background
        assert confusion["labels"] == [*CATS, "background"]
        assert confusion["matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]  # two a, one b
    for key, value in m.items():
        assert value == (0.0 if key == "mean_count_error" else 1.0), key
    assert [row["label"] for row in per_class] == (CATS if task != "caption" else [])
    assert all(v == 1.0 for row in per_class for k, v in row.items() if k != "label")
    assert primary_metric(task) in m


def test_empty_predictions_score_zero_except_on_empty_images():
    gts = dataset()[:2]  # both images have objects
    preds = [empty_target(16, 16) for _ in gts]
    m = evaluate(preds, gts, [False, False], "segment", CATS)
    assert m == {
        "mean_iou": 0.0, "map50": 0.0, "f1_50": 0.0, "parse_rate": 0.0,
        "mean_count_error": 1.5, "mask_iou": 0.0, "ap": 0.0, "ap50": 0.0, "mask_ap": 0.0, "mask_ap50": 0.0,
        "ap_per_class": [{"label": c, "ap": 0.0, "ap50": 0.0, "mask_ap": 0.0, "mask_ap50": 0.0} for c in CATS],
        "confusion_matrix": {"labels": [*CATS, "background"], "matrix": [[0, 0, 2], [0, 0, 1], [0, 0, 0]],
                             "rows": "ground truth", "columns": "prediction", "iou": 0.5},
    }  # fmt: skip
    caption = evaluate(preds, gts, [True, False], "caption", CATS)
    assert caption == {"caption_f1": 0.0, "accuracy": 0.0, "parse_rate": 0.5}


def test_hand_computed_detection_case():
    gt = tgt([[0, 0, 8, 8], [8, 8, 16, 16]], ["a", "b"])
    # An extra "a" emitted first, then both objects exactly.
    pred = tgt([[0, 8, 8, 16], [0, 0, 8, 8], [8, 8, 16, 16]], ["a", "a", "b"])
    m = evaluate([pred], [gt], [True], "detect", CATS)
    # soft IoU: (1 + 1) / max(3, 2); F1: 2·2 / (3 + 2); count error |3 − 2|
    assert m["mean_iou"] == pytest.approx(2 / 3)
    assert m["f1_50"] == pytest.approx(0.8)
    assert m["mean_count_error"] == 1.0
    # AP(a): ranked FP then TP → precision 1/2 at recall 1 → 0.5; AP(b) = 1 → mAP 0.75
    assert m["map50"] == pytest.approx(0.75)
    # the same answer with the extra last: every recall reached at precision 1 (see module doc)
    pred_last = tgt([[0, 0, 8, 8], [8, 8, 16, 16], [0, 8, 8, 16]], ["a", "b", "a"])
    assert evaluate([pred_last], [gt], [True], "detect", CATS)["map50"] == pytest.approx(1.0)


def test_pooled_f1_and_a_wrong_label():
    gts = [tgt([[0, 0, 8, 8]], ["a"]), tgt([[0, 0, 8, 8]], ["b"])]
    preds = [tgt([[0, 0, 8, 8]], ["a"]), tgt([[0, 0, 8, 8]], ["a"])]  # second label wrong
    m = evaluate(preds, gts, [True, True], "detect", CATS)
    assert m["f1_50"] == pytest.approx(2 * 1 / 4)
    assert m["mean_iou"] == 1.0  # localisation only
    # AP(a): TP (image 1), FP (image 2) → 1.0; AP(b): never found → 0.0
    assert m["map50"] == pytest.approx(0.5)


def test_no_objects_anywhere():
    gts = [tgt()]
    assert evaluate([tgt()], gts, [True], "detect", CATS)["map50"] == 1.0
    m = evaluate([tgt([[0, 0, 4, 4]], ["a"])], gts, [True], "detect", CATS)
    assert m["map50"] == 0.0 and m["mean_iou"] == 0.0 and m["f1_50"] == 0.0


def test_pycocotools_prints_nothing(capsys):
    gts = dataset()
    evaluate(copy.deepcopy(gts), gts, [True] * 3, "detect", CATS)
    assert capsys.readouterr().out == ""


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="one of each per image"):
        evaluate([tgt()], [tgt(), tgt()], [True], "detect", CATS)
    with pytest.raises(ValueError, match="unknown task"):
        primary_metric("track")
    assert [primary_metric(t) for t in ("detect", "segment", "keypoints", "caption")] == [
        "mean_iou", "mask_iou", "oks", "caption_f1",
    ]  # fmt: skip


def test_4bit_gate_keeps_16bit_when_the_metric_drops_too_far():
    from pipeline.stages.evaluate import quantized_release_ok

    assert quantized_release_ok(0.60, 0.60, 0.02)
    assert quantized_release_ok(0.60, 0.59, 0.02)
    assert quantized_release_ok(0.60, 0.62, 0.0)  # a gain is never a drop
    assert not quantized_release_ok(0.60, 0.57, 0.02)
    assert not quantized_release_ok(0.60, 0.5999, 0.0)


def test_release_is_the_best_stage_on_validation_never_a_worse_one():
    from pipeline.stages.evaluate import pick_release

    val = {"warm_start": {"mean_iou": 0.2}, "domain": {"mean_iou": 0.618}, "reward": {"mean_iou": 0.612}}
    assert pick_release(val, "mean_iou", 128) == (
        "domain", "domain SFT, mean_iou 0.618 on 128 validation images; reward RL scored 0.612 < 0.618 on validation "
                  "(warm-start SFT 0.200)")  # fmt: skip
    val["reward"]["mean_iou"] = 0.62
    assert pick_release(val, "mean_iou", 128) == (
        "reward", "reward RL, mean_iou 0.620 on 128 validation images (domain SFT 0.618, warm-start SFT 0.200)")
    # level on the metric: the job's own reward decides, then the later (longer-trained) stage
    tie = {"domain": {"mean_iou": 0.5, "reward_score": 0.7}, "reward": {"mean_iou": 0.5, "reward_score": 0.6}}
    assert pick_release(tie, "mean_iou", 9)[0] == "domain"
    tie["reward"]["reward_score"] = 0.7
    assert pick_release(tie, "mean_iou", 9)[0] == "reward"


def test_label_accuracy_counts_the_found_objects_labelled_right_and_caption_accuracy_exact_matches():
    from pipeline.metrics import evaluate

    gt = {**empty_target(40, 40), "boxes": [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], "labels": ["a", "b", "a"]}
    # two found (one mislabelled), one missed, one far-off extra: 1 of the 2 found is right
    pred = {**empty_target(40, 40), "boxes": [[0, 0, 10, 10], [20, 0, 30, 10], [30, 30, 40, 40]], "labels": ["a", "a", "b"]}
    m = evaluate([pred], [gt], [True], "detect", ["a", "b"])
    assert m["label_accuracy"] == 0.5
    none_found = {**empty_target(40, 40), "boxes": [[30, 30, 40, 40]], "labels": ["a"]}
    assert "label_accuracy" not in evaluate([none_found], [gt], [True], "detect", ["a", "b"])
    caps = [{**empty_target(8, 8), "text": t} for t in ("Two cats.", "a dog", "three birds")]
    truth = [{**empty_target(8, 8), "text": t} for t in ("two cats", "a red dog", "Three  birds!")]
    assert evaluate(caps, truth, [True] * 3, "caption", [])["accuracy"] == 2 / 3


def test_confusion_matrix_counts_swaps_misses_extras_and_unknown_labels_and_ignores_crowd_hits():
    gts = [
        tgt([[0, 0, 8, 8], [8, 8, 16, 16]], ["a", "b"]),
        {**tgt([[0, 0, 4, 4]], ["a"]), "crowd": [{"box": [8, 0, 16, 8], "label": "b"}]},
    ]
    preds = [
        # "a" found as "b" (a swap), "b" missed, an extra "a" on background
        tgt([[0, 0, 8, 8], [0, 9, 7, 16]], ["b", "a"]),
        # "a" found at IoU 9/16 (>= 0.5), a "b" on the crowd region (ignored), a "c" no category has
        tgt([[0, 0, 3, 3], [9, 1, 15, 7], [20, 20, 30, 30]], ["a", "b", "c"]),
    ]
    cm = evaluate(preds, gts, [True, True], "detect", CATS)["confusion_matrix"]
    assert cm["labels"] == ["a", "b", "(other)", "background"]
    assert cm["matrix"] == [
        # pred: a  b  other  background       (rows: ground truth)
        [1, 1, 0, 0],  # a: one right, one taken for b
        [0, 0, 0, 1],  # b: missed
        [0, 0, 0, 0],  # (other): no object has a label outside the categories
        [1, 0, 1, 0],  # background: an extra a, and the c
    ]
    # a pair under IoU 0.5 is a miss plus an extra, not a confusion
    loose = confusion_matrix([tgt([[0, 0, 8, 3]], ["b"])], [tgt([[0, 0, 8, 8]], ["a"])], CATS)
    assert loose["matrix"] == [[0, 0, 1], [0, 0, 0], [0, 1, 0]]
