"""COCO's conventions, read right: crowd regions, the annotation's area and per-keypoint sigmas
for OKS, multi-part masks, and the standard metrics checked against pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.augment import hflip
from pipeline.coco_eval import write_export
from pipeline.codec import Codec
from pipeline.config import build_config
from pipeline.data import load_dataset
from pipeline.geometry import COCO_PERSON_KEYPOINTS, default_sigmas, mask_iou_matrix, oks_matrix
from pipeline.job import resolve_reward
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


# ---------------------------------------------------------------------------------- OKS

# Two people in COCO's person-keypoint format: 17 named keypoints, v = 0 (not labelled),
# 1 (labelled, hidden) or 2 (visible), and "area" the segment's area, well below the box's.
PERSON = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_PERSON_KEYPOINTS),
          "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7]]}  # fmt: skip
PEOPLE = [
    {"bbox": [100, 60, 120, 300], "area": 14523.5, "keypoints": [
        160, 80, 2, 166, 74, 2, 154, 74, 2, 174, 78, 1, 0, 0, 0, 190, 120, 2, 130, 122, 2, 200, 170, 2,
        120, 172, 2, 206, 220, 2, 112, 218, 1, 178, 230, 2, 142, 231, 2, 180, 290, 2, 140, 292, 2, 0, 0, 0,
        138, 350, 2]},
    {"bbox": [300, 100, 80, 200], "area": 6120.0, "keypoints": [
        340, 115, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 360, 150, 2, 320, 152, 2, 366, 190, 2,
        314, 192, 2, 0, 0, 0, 0, 0, 0, 352, 220, 2, 328, 221, 2, 354, 260, 1, 326, 262, 2, 356, 296, 2,
        324, 297, 2]},
]  # fmt: skip


def _moved(flat, seed):
    """A detection near ``flat``: every keypoint present (v = 2), shifted a few pixels."""
    rng = np.random.default_rng(seed)
    xy = np.asarray(flat, float).reshape(-1, 3)[:, :2] + rng.normal(0, 6, (17, 2))
    return [[float(x), float(y), 2] for x, y in xy]


def _coco_oks(people, dets):
    """pycocotools' own OKS matrix (detections × people) for one image, COCO's default sigmas."""
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 640, "height": 480}], "categories": [PERSON],
                  "annotations": [{**p, "id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                   "num_keypoints": sum(v > 0 for v in p["keypoints"][2::3])}
                                  for k, p in enumerate(people)]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "score": 1.0 - 0.1 * i,
                          "keypoints": [c for kp in d for c in kp]} for i, d in enumerate(dets)])  # fmt: skip
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.evaluate()
    return np.asarray(ev.ious[(1, 1)])


def test_oks_matches_pycocotools_on_coco_person_keypoints():
    dets = [_moved(PEOPLE[0]["keypoints"], 1), _moved(PEOPLE[1]["keypoints"], 2), _moved(PEOPLE[0]["keypoints"], 3)]
    gt_kps = [np.asarray(p["keypoints"], float).reshape(-1, 3).tolist() for p in PEOPLE]
    ours = oks_matrix(dets, gt_kps, [p["area"] for p in PEOPLE], default_sigmas(COCO_PERSON_KEYPOINTS))
    theirs = _coco_oks(PEOPLE, dets)
    assert ours.shape == theirs.shape == (3, 2)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert 0.2 < theirs[0, 0] < 0.99  # a real, partial match: the comparison is not trivial


def test_a_loaded_person_is_scored_with_its_area_and_cocos_sigmas(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "p.png", "width": 640, "height": 480}],
           "annotations": [{**PEOPLE[0], "id": 1, "image_id": 1, "category_id": 1, "num_keypoints": 14}],
           "categories": [PERSON]}  # fmt: skip
    _write_coco(tmp_path, doc, {"p.png": (640, 480)})
    ds = load_dataset(tmp_path, "keypoints", fractions=(1.0, 0.0, 0.0))
    (s,) = ds.splits["train"]
    assert s.target["areas"] == [14523.5]
    det = _moved(PEOPLE[0]["keypoints"], 4)
    pred = _tgt([s.target["boxes"][0]], ["person"], w=640, h=480, keypoints=[det])
    got = evaluate([pred], [s.target], [True], "keypoints", ["person"], keypoint_names=ds.keypoint_names)["oks"]
    want = float(_coco_oks(PEOPLE[:1], [det])[0, 0])
    assert abs(got - want) < 1e-6
    # The old scale (the 120×300 box) with 0.05 everywhere scores the same answer differently.
    old = dict(s.target, areas=[])
    assert abs(evaluate([pred], [old], [True], "keypoints", ["person"])["oks"] - want) > 1e-3
    # Stage 3's oks reward takes the same sigmas from the same place.
    cfg = build_config({"task": "keypoints", "reward": "oks", "data": {"dataset": str(tmp_path)}})
    reward = resolve_reward(cfg, None, ds)
    assert abs(reward.score([pred], [s.target])[0] - want) < 1e-6


# --------------------------------------------------------------------- multi-part masks

BIG = [4.0, 4.0, 24.0, 4.0, 24.0, 20.0, 4.0, 20.0]  # 20×16 = 320 pixels
SMALL = [40.0, 10.0, 50.0, 10.0, 50.0, 18.0, 40.0, 18.0]  # 10×8 = 80 pixels, across an occluder


def test_a_two_part_polygon_keeps_both_parts_and_is_scored_with_both(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 32},
                      {"id": 2, "file_name": "b.png", "width": 64, "height": 32}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [SMALL, BIG]},
                           # the same object as an RLE mask: one part per connected component
                           {"id": 2, "image_id": 2, "category_id": 1, "segmentation": mask_utils.merge(
                               mask_utils.frPyObjects([BIG, SMALL], 32, 64))}],
           "categories": [{"id": 1, "name": "pipe"}]}  # fmt: skip
    doc["annotations"][1]["segmentation"]["counts"] = doc["annotations"][1]["segmentation"]["counts"].decode()
    _write_coco(tmp_path, doc, {"a.png": (64, 32), "b.png": (64, 32)})
    ds = load_dataset(tmp_path, "segment", fractions=(1.0, 0.0, 0.0))
    a, b = ds.splits["train"]
    assert a.target["masks"] == [BIG]  # what the codec can write: the largest part
    assert a.target["mask_parts"] == [[SMALL, BIG]]
    assert a.target["boxes"] == [[4.0, 4.0, 50.0, 20.0]]  # the box of every part
    assert sorted(map(sorted, b.target["mask_parts"][0])) == sorted(map(sorted, [BIG, SMALL]))
    assert any("several parts" in w and "drops the others" in w for w in ds.warnings)  # said in the log
    whole = a.target["mask_parts"][0]
    assert mask_iou_matrix([whole], [whole], 64, 32)[0, 0] == 1.0
    assert mask_iou_matrix([BIG], [whole], 64, 32)[0, 0] == 320 / 400
    # The metric scores every part: the largest part alone is not a perfect answer.
    exact = _tgt(a.target["boxes"], ["pipe"], w=64, h=32, masks=[whole])
    largest = _tgt(a.target["boxes"], ["pipe"], w=64, h=32, masks=[BIG])
    assert evaluate([exact], [a.target], [True], "segment", ["pipe"])["mask_iou"] == 1.0
    assert evaluate([largest], [a.target], [True], "segment", ["pipe"])["mask_iou"] == 320 / 400
    assert evaluate([largest], [b.target], [True], "segment", ["pipe"])["mask_iou"] == 320 / 400
    flipped = hflip(a).target["mask_parts"][0]
    assert flipped[1] == [60.0, 4.0, 40.0, 4.0, 40.0, 20.0, 60.0, 20.0]


# ------------------------------------------------------------------- standard metrics

# Three 64×64 images, two categories with COCO ids 3 and 7, a split dog and a crowd of dogs.
SQ = lambda x1, y1, x2, y2: [x1, y1, x2, y1, x2, y2, x1, y2]  # noqa: E731
FIXTURE = {
    "images": [{"id": 11, "file_name": "a.png", "width": 64, "height": 64},
               {"id": 12, "file_name": "b.png", "width": 64, "height": 64},
               {"id": 13, "file_name": "c.png", "width": 64, "height": 64}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 3, "bbox": [4, 4, 20, 16], "area": 300.0,
         "segmentation": [SQ(4, 4, 24, 20)]},
        {"id": 2, "image_id": 11, "category_id": 7, "bbox": [30, 30, 30, 20], "area": 400.0,
         "segmentation": [SQ(30, 30, 40, 50), SQ(50, 30, 60, 50)]},
        {"id": 3, "image_id": 11, "category_id": 7, "bbox": [0, 40, 28, 24], "area": 672.0, "iscrowd": 1,
         "segmentation": [SQ(0, 40, 28, 64)]},
        {"id": 4, "image_id": 12, "category_id": 3, "bbox": [10, 10, 20, 30], "area": 500.0,
         "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40, 20, 25]]},
        {"id": 5, "image_id": 12, "category_id": 3, "bbox": [40, 5, 20, 20], "area": 400.0,
         "segmentation": [SQ(40, 5, 60, 25)]},
        {"id": 6, "image_id": 13, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 400.0,
         "segmentation": [SQ(5, 5, 25, 25)]},
    ],
}  # fmt: skip
for _ann in FIXTURE["annotations"]:
    _ann.setdefault("iscrowd", 0)
# Per image, in the order the model wrote them: (label, xyxy box, polygon).
ANSWERS = [
    [("cat", [5, 5, 24, 21], SQ(5, 5, 24, 21)), ("dog", [30, 30, 40, 50], SQ(30, 30, 40, 50)),
     ("dog", [2, 45, 20, 60], SQ(2, 45, 20, 60))],  # the last one sits on the crowd
    [("cat", [12, 10, 30, 38], SQ(12, 10, 30, 38)), ("cat", [44, 8, 62, 28], SQ(44, 8, 62, 28)),
     ("dog", [0, 0, 8, 8], SQ(0, 0, 8, 8))],
    [("dog", [7, 3, 27, 24], SQ(7, 3, 27, 24)), ("cat", [5, 5, 25, 25], SQ(5, 5, 25, 25))],
]  # fmt: skip


def _stock_cocoeval(doc, results, iou_type, sigmas=None):
    """COCOeval exactly as a user runs it on the files: (stats[0], stats[1], {category: AP})."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(doc))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), iouType=iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    p = ev.eval["precision"][:, :, :, 0, -1]
    per = {c["name"]: float(np.mean(p[:, :, k][p[:, :, k] > -1])) for k, c in enumerate(gt.loadCats(ev.params.catIds))
           if (p[:, :, k] > -1).any()}  # fmt: skip
    return ev.stats[0], ev.stats[1], per


def _loaded(tmp_path, doc, task):
    _write_coco(tmp_path, doc, {im["file_name"]: (im["width"], im["height"]) for im in doc["images"]})
    ds = load_dataset(tmp_path, task, fractions=(1.0, 0.0, 0.0))
    return ds, sorted(ds.splits["train"], key=lambda s: s.id)


def test_box_and_mask_ap_match_cocoeval_on_a_fixture(tmp_path):
    ds, samples = _loaded(tmp_path, FIXTURE, "segment")
    preds = [_tgt([b for _, b, _ in a], [lab for lab, _, _ in a], masks=[m for _, _, m in a]) for a in ANSWERS]
    m = evaluate(preds, [s.target for s in samples], [True] * 3, "segment", ds.categories)
    cat_id = {"cat": 3, "dog": 7}
    boxes, masks = [], []
    for img, answer in zip(FIXTURE["images"], ANSWERS, strict=True):
        for label, (x1, y1, x2, y2), poly in answer:
            res = {"image_id": img["id"], "category_id": cat_id[label], "score": 1.0}
            boxes.append({**res, "bbox": [x1, y1, x2 - x1, y2 - y1]})
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], 64, 64))
            masks.append({**res, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    for prefix, iou_type, results in (("", "bbox", boxes), ("mask_", "segm", masks)):
        ap, ap50, per = _stock_cocoeval(FIXTURE, results, iou_type)
        assert abs(m[f"{prefix}ap"] - ap) < 1e-6 and abs(m[f"{prefix}ap50"] - ap50) < 1e-6, iou_type
        got = {row["label"]: row[f"{prefix}ap"] for row in m["ap_per_class"]}
        assert got.keys() == per.keys() == {"cat", "dog"}
        assert all(abs(got[c] - per[c]) < 1e-6 for c in per), (got, per)
        assert 0.1 < ap < 0.9  # neither trivial end: misses, extras, a wrong label, a crowd
    assert m["map50"] == m["ap50"]


def test_keypoint_ap_matches_cocoeval_on_coco_people(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "p.png", "width": 640, "height": 480},
                      {"id": 2, "file_name": "q.png", "width": 640, "height": 480}],
           "categories": [PERSON],
           "annotations": [{**p, "id": k + 1, "image_id": 1 if k < 2 else 2, "category_id": 1, "iscrowd": 0,
                            "num_keypoints": sum(v > 0 for v in p["keypoints"][2::3])}
                           for k, p in enumerate(PEOPLE + PEOPLE[:1])]}  # fmt: skip
    ds, samples = _loaded(tmp_path, doc, "keypoints")
    answers = [[_moved(PEOPLE[0]["keypoints"], 5), _moved(PEOPLE[1]["keypoints"], 6)],
               [_moved(PEOPLE[1]["keypoints"], 7), _moved(PEOPLE[0]["keypoints"], 8)]]  # image 2: one wrong, one right
    preds = [_tgt([[0, 0, 10, 10]] * len(a), ["person"] * len(a), w=640, h=480, keypoints=a) for a in answers]
    m = evaluate(preds, [s.target for s in samples], [True, True], "keypoints", ["person"],
                 keypoint_names=ds.keypoint_names)  # fmt: skip
    results = [{"image_id": i + 1, "category_id": 1, "score": 1.0, "keypoints": [c for kp in d for c in kp]}
               for i, a in enumerate(answers) for d in a]  # fmt: skip
    ap, ap50, _ = _stock_cocoeval(doc, results, "keypoints")  # COCO's person sigmas, its default
    assert abs(m["kp_ap"] - ap) < 1e-6 and abs(m["kp_ap50"] - ap50) < 1e-6
    assert 0.1 < ap < 0.95


def test_the_export_loads_with_loadres_and_scores_as_the_job_did(tmp_path):
    ds, samples = _loaded(tmp_path, FIXTURE, "segment")
    preds = [_tgt([b for _, b, _ in a], [lab for lab, _, _ in a], masks=[m for _, _, m in a]) for a in ANSWERS]
    gts = [s.target for s in samples]
    out = tmp_path / "out"
    out.mkdir()
    info = write_export(out, preds, gts, ds.categories, "segment", [s.id for s in samples], [s.file_name for s in samples])
    assert info["predictions"] == "predictions_coco.json" and info["predictions_n"] == 8
    m = evaluate(preds, gts, [True] * 3, "segment", ds.categories)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "ground_truth_coco.json"))
        dt = gt.loadRes(str(out / "predictions_coco.json"))
    assert sorted(gt.getImgIds()) == [11, 12, 13] and gt.imgs[12]["file_name"] == "b.png"
    assert all(ann["score"] == 1.0 and "segmentation" in ann for ann in dt.anns.values())
    for prefix, iou_type in (("", "bbox"), ("mask_", "segm")):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, dt, iouType=iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
        assert abs(ev.stats[0] - m[f"{prefix}ap"]) < 1e-6 and abs(ev.stats[1] - m[f"{prefix}ap50"]) < 1e-6
