"""Writing a dataset as a COCO folder (``images/*.png`` + ``annotations.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.structures import Dataset, Sample

# ----------------------------------------------------------------------------- write_coco


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def write_coco(dataset: Dataset, folder: Path, *, per_split: bool = False) -> Path:
    """Write ``dataset`` as a COCO folder (``images/*.png`` + ``annotations.json``); return ``folder``.

    ``load_dataset(folder, dataset.task)`` reads it back equal (same samples, targets,
    label kinds, categories, keypoint names); weak labels are written as clicks, "counts"
    and "unlabeled" (README "Weak labels"). With ``per_split=True`` the annotations go to
    ``train.json`` / ``val.json`` / ``test.json`` instead, so the splits survive the trip.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    category_ids = {name: index + 1 for index, name in enumerate(dataset.categories)}
    categories = []
    for name, cid in category_ids.items():
        entry: dict[str, Any] = {"id": cid, "name": name, "supercategory": dataset.name}
        if dataset.keypoint_names:
            entry["keypoints"] = list(dataset.keypoint_names)
            entry["skeleton"] = []
        categories.append(entry)

    groups = (
        {s: list(v) for s, v in dataset.splits.items() if v}
        if per_split
        else {"annotations": [s for samples in dataset.splits.values() for s in samples]}
    )
    next_ann = 1
    for file_stem, samples in groups.items():
        images, annotations = [], []
        for sample in samples:
            _save_image(sample, folder / "images" / sample.file_name)
            images.append(_image_entry(sample))
            new = _annotations(sample, category_ids, next_ann)
            annotations += new
            next_ann += len(new)
        document = {
            "info": {"description": f"{dataset.name} ({dataset.task}), written by DreamForge"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (folder / f"{file_stem}.json").write_text(json.dumps(document, indent=1))
    return folder


def _save_image(sample: Sample, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if sample.image is not None:
        sample.image.save(destination, format="PNG")
    elif sample.path is not None:
        shutil.copyfile(sample.path, destination)
    else:
        raise ValueError(f"sample {sample.id} '{sample.file_name}' has neither an image nor a path to copy")


def _image_entry(sample: Sample) -> dict[str, Any]:
    """The image's COCO entry, with its weak label: "unlabeled", or its "counts"."""
    entry: dict[str, Any] = {"id": sample.id, "file_name": sample.file_name, "width": sample.width,
                             "height": sample.height}  # fmt: skip
    target = sample.target
    if sample.label_kind == "none":
        entry["unlabeled"] = True
    elif sample.label_kind == "counts" or (
        # a clicked image's counts come from its clicks when each names its category
        sample.label_kind == "points" and target["counts"] and not all(target["point_labels"])
    ):
        entry["counts"] = dict(target["counts"])
    return entry


def _annotations(sample: Sample, category_ids: dict[str, int], first_id: int) -> list[dict[str, Any]]:
    """The sample's annotations, numbered from ``first_id``: its clicks, or its boxes (with masks
    and keypoints), crowd regions and caption."""
    target, out = sample.target, []

    def add(ann: dict[str, Any]) -> None:
        out.append({"id": first_id + len(out), "image_id": sample.id, **ann})

    if sample.label_kind == "points":
        for point, label in zip(target["points"], target["point_labels"], strict=True):
            add({"point": list(point), **({"category_id": category_ids[label]} if label else {})})
        return out
    for k, (box, label) in enumerate(zip(target["boxes"], target["labels"])):
        x1, y1, x2, y2 = box
        ann: dict[str, Any] = {"category_id": category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}  # fmt: skip
        if k < len(target["masks"]) and target["masks"]:
            parts = target.get("mask_parts") or []
            ann["segmentation"] = [list(p) for p in parts[k]] if k < len(parts) else [list(target["masks"][k])]
            ann["area"] = _polygon_area(target["masks"][k])
        if k < len(target.get("areas") or []):
            ann["area"] = target["areas"][k]
        if k < len(target["keypoints"]) and target["keypoints"]:
            kps = target["keypoints"][k]
            ann["keypoints"] = [v for x, y, vis in kps for v in (x, y, int(vis))]
            ann["num_keypoints"] = sum(1 for _, _, vis in kps if vis > 0)
        add(ann)
    for region in target.get("crowd") or []:
        x1, y1, x2, y2 = region["box"]
        add({"category_id": category_ids[region["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": 1})  # fmt: skip
    if target.get("text"):
        add({"caption": target["text"]})
    return out
