"""YOLO folders (Ultralytics and Roboflow layouts), boxes and YOLO-seg polygons.

Layout, as Ultralytics reads it (``ultralytics/data/utils.py: img2label_paths``): each image's
label file is its path with the last ``images`` folder replaced by ``labels`` and the suffix
by ``.txt`` (``images/train/a.jpg`` -> ``labels/train/a.txt``; Roboflow's
``train/images/a.jpg`` -> ``train/labels/a.txt``). A folder named ``train`` / ``val`` /
``valid`` / ``test`` on the way sets the image's split. Class names come from ``data.yaml``
(``names:`` as a list or a ``{id: name}`` map) or ``classes.txt``. The split paths inside
``data.yaml`` are not followed: they may point anywhere on the uploader's machine.

Each line is ``class cx cy w h`` (a box, centre and size as fractions of the upright image)
or ``class x1 y1 x2 y2 x3 y3 ...`` (a YOLO-seg polygon, fractions too). An image without a
label file is a negative (no objects), as in Ultralytics; how many there are is stated. A
label file with no image (a mistyped or missing image name) would lose its labels silently:
each is named in a warning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from pipeline.data.errors import DataError, os_reason
from pipeline.data.formats import Converted, categories, image_files, image_size, is_hidden, rel, split_of

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
CLASS_FILES = ("classes.txt", "labels/classes.txt", "obj.names")
MAX_LABEL_BYTES = 16 << 20  # one image's label file; a dense crowd of polygons is well below
NAMED = 5  # files named in a warning before "and N more"


def matches(root: Path) -> bool:
    has_names = any((root / n).is_file() for n in YAML_NAMES + CLASS_FILES)
    return has_names and any(p.is_dir() for p in [root / "labels", *root.glob("*/labels")])


def convert(root: Path, label: str, task: str) -> list[Converted]:
    if task in ("keypoints", "caption"):
        raise DataError(
            f"{label}: a YOLO folder holds boxes and polygons, not {task}s; use task detect or segment, "
            "or convert the dataset to COCO"
        )
    names, names_file = _class_names(root, label)
    by_split: dict[str, Converted] = {}
    cats = categories(names)
    images = [p for p in image_files(root) if "images" in p.relative_to(root).parts[:-1]]
    if not images:
        raise DataError(
            f"{label}: {names_file} names the classes but no image lies in an images/ folder; "
            "put images under images/ (or images/train/ ...) and their labels under labels/"
        )
    splits = {p: split_of(rel(p, root)) for p in images}
    if len({s is None for s in splits.values()}) > 1:
        lone = next(p for p, s in splits.items() if s is None)
        raise DataError(
            f"{label}: {rel(lone, root)} is in no train/val/test folder while other images are; "
            "move it into one"
        )
    next_id = 1
    unlabelled: list[Path] = []
    for image_id, path in enumerate(images, start=1):
        split = splits[path] or "all"
        part = by_split.setdefault(
            split, Converted(split, root / "labels", label, {"images": [], "annotations": [], "categories": cats})
        )
        size = image_size(path)
        entry: dict[str, Any] = {"id": image_id, "file_name": rel(path, root)}
        part.data["images"].append(entry)
        label_file = _label_path(path, root)
        if not label_file.is_file():
            unlabelled.append(path)  # a negative
            continue
        if size is None:
            continue  # unreadable: the reader warns
        entry["width"], entry["height"] = size
        for line_no, cid, bbox, polygon in _read_labels(label_file, root, label, len(names), names_file):
            ann: dict[str, Any] = {"id": next_id, "image_id": image_id, "category_id": cid, "bbox": _scale_box(bbox, size)}
            if polygon:
                ann["segmentation"] = [_scale_polygon(polygon, size)]
            part.data["annotations"].append(ann)
            part.origins[next_id] = f"{label}: {rel(label_file, root)} line {line_no}"
            next_id += 1
    parts = list(by_split.values())
    parts[0].warnings += _unmatched(root, label, images, unlabelled)
    return parts


def _unmatched(root: Path, label: str, images: list[Path], unlabelled: list[Path]) -> list[str]:
    """Warnings for label files no image has (their labels would be lost silently) and the
    count of images without a label file (negatives: legitimate, but a forgotten label too)."""
    used = {_label_path(p, root) for p in images}
    class_files = {root / name for name in CLASS_FILES}
    label_dirs = [d for d in [root / "labels", *root.glob("*/labels")] if d.is_dir()]
    orphans = sorted(
        p for d in label_dirs for p in d.rglob("*.txt")
        if p not in used and p not in class_files and p.is_file() and not is_hidden(p, root)
    )  # fmt: skip
    out = []
    if orphans:
        out.append(
            f"{label}: {_count(orphans, 'label file')} no image, so their labels are not used: "
            f"{_some(orphans, root)}. An image's label file is its path with images/ turned into labels/ "
            "and the suffix into .txt (images/train/a.jpg -> labels/train/a.txt); check the image names"
        )
    if unlabelled:
        out.append(
            f"{label}: {len(unlabelled)} of {len(images)} images have no label file, so they are used as "
            f"negatives (no objects), as Ultralytics reads them: {_some(unlabelled, root)}. If they hold "
            "objects, add their label files"
        )
    return out


def _count(paths: list[Path], noun: str) -> str:
    return f"1 {noun} has" if len(paths) == 1 else f"{len(paths)} {noun}s have"


def _some(paths: list[Path], root: Path) -> str:
    named = ", ".join(rel(p, root) for p in paths[:NAMED])
    return named + (f" and {len(paths) - NAMED} more" if len(paths) > NAMED else "")


def _label_path(image: Path, root: Path) -> Path:
    parts = list(image.relative_to(root).parts)
    at = len(parts) - 1 - parts[::-1].index("images")
    parts[at] = "labels"
    return root.joinpath(*parts).with_suffix(".txt")


def _class_names(root: Path, label: str) -> tuple[list[str], str]:
    for name in YAML_NAMES:
        path = root / name
        if path.is_file():
            return _yaml_names(path, label), name
    for name in CLASS_FILES:
        path = root / name
        if path.is_file():
            lines = [line.strip() for line in _text(path, label, name).splitlines()]
            return [n for n in lines if n], name
    raise DataError(f"{label}: no data.yaml or classes.txt names the classes; add one")  # matches() saw one


def _yaml_names(path: Path, label: str) -> list[str]:
    where = f"{label}: {path.name}"
    try:
        data = yaml.safe_load(_text(path, label, path.name))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DataError(f"{where}: invalid YAML{at}; fix the file") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        ids = sorted(names) if all(isinstance(k, int) for k in names) else None
        if ids != list(range(len(names))):
            raise DataError(f'{where}: "names" must map ids 0, 1, 2, ... to class names, got {list(names)[:6]}')
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) and str(n) for n in names):
        raise DataError(f'{where}: "names" must list the class names, e.g. names: [cola, water]; fix the file')
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f'{where}: "nc" is {nc} but "names" lists {len(names)} classes; make them agree')
    return [str(n) for n in names]


def _text(path: Path, label: str, name: str) -> str:
    try:
        if path.stat().st_size > MAX_LABEL_BYTES:
            raise DataError(f"{label}: {name} is larger than {MAX_LABEL_BYTES >> 20} MB; is it a label file?")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: {name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read {name} ({os_reason(exc)})") from None


def _read_labels(
    path: Path, root: Path, label: str, n_classes: int, names_file: str
) -> list[tuple[int, int, list[float], list[float]]]:
    """``(line, class id, [cx, cy, w, h], polygon or [])`` for every line, all fractions."""
    name = rel(path, root)
    out = []
    for line_no, line in enumerate(_text(path, label, name).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        at = f"{label}: {name} line {line_no}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            raise DataError(f"{at}: {bad!r} is not a number; a YOLO line is numbers only") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{at}: every value must be a finite number, got {line.strip()[:60]!r}")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < n_classes:
            raise DataError(
                f"{at}: class id {fields[0]} is out of range; {names_file} names {n_classes} classes "
                f"(ids 0 to {n_classes - 1}) — fix the id or add the class"
            )
        coords = values[1:]
        if len(coords) == 4:
            out.append((line_no, int(cls), coords, []))
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
            out.append((line_no, int(cls), box, coords))
        else:
            raise DataError(
                f"{at}: {len(coords)} numbers after the class id; a YOLO line is `class cx cy w h` (4) "
                "or a polygon `class x1 y1 x2 y2 x3 y3 ...` (an even count, 6 or more)"
            )
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _scale_box(box: list[float], size: tuple[int, int]) -> list[float]:
    """Centre and size as fractions -> COCO's ``[x, y, w, h]`` in pixels."""
    (cx, cy, w, h), (width, height) = box, size
    return [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]


def _scale_polygon(polygon: list[float], size: tuple[int, int]) -> list[float]:
    return [v * (size[0] if i % 2 == 0 else size[1]) for i, v in enumerate(polygon)]
