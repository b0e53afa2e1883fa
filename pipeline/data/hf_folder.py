"""Hugging Face ``datasets`` image folders: images beside a ``metadata.jsonl``.

The layout ``datasets``' ImageFolder builder reads (docs: "Create an image dataset" →
ImageFolder, and AutoTrain's object-detection guide): one JSON object per line with the image's
``file_name`` (relative to the metadata file) and either

* ``"objects": {"bbox": [[x, y, w, h], ...], "category": [0, ...]}`` (COCO-style boxes in
  pixels; ``categories`` is accepted for ``category``, and a list of ``{"bbox", "category"}``
  objects too), or
* ``"text"`` (or ``"caption"``): the image's caption.

A ``metadata.jsonl`` in ``train/`` / ``validation/`` / ``test/`` folders gives the splits.
Categories may be names, or ids named by the dataset card (``README.md``'s ``class_label:
names:``) or a ``classes.txt``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from pipeline.data.errors import DataError, os_reason
from pipeline.data.formats import Converted, categories, rel, split_of

METADATA = "metadata.jsonl"
MAX_METADATA_BYTES = 512 << 20


def matches(root: Path) -> bool:
    return (root / METADATA).is_file() or any(root.glob(f"*/{METADATA}"))


def convert(root: Path, label: str, task: str) -> list[Converted]:
    if task not in ("detect", "caption"):
        raise DataError(
            f"{label}: a metadata.jsonl image folder gives boxes or captions, which task {task} cannot use; "
            "use task detect or caption, or convert the dataset to COCO"
        )
    files = [root / METADATA] if (root / METADATA).is_file() else sorted(root.glob(f"*/{METADATA}"))
    rows = [(path, n, row) for path in files for n, row in _rows(path, root, label)]
    names = _names(root, label, rows, task)
    ids = {name: i for i, name in enumerate(names)}
    parts: dict[str, Converted] = {}
    next_id = 1
    for image_id, (path, line_no, row) in enumerate(rows, start=1):
        at = f"{label}: {rel(path, root)} line {line_no}"
        split = split_of(rel(path, root)) or "all"
        part = parts.setdefault(
            split, Converted(split, path, label, {"images": [], "annotations": [], "categories": categories(names)})
        )
        file_name = row.get("file_name")
        if not isinstance(file_name, str) or not file_name or file_name.startswith("/") or ".." in file_name.split("/"):
            raise DataError(f'{at}: "file_name" must be the image\'s path relative to {rel(path, root)}, got {file_name!r:.60}')
        part.data["images"].append({"id": image_id, "file_name": rel(path.parent / file_name, root)})
        if task == "caption":
            text = row.get("text", row.get("caption"))
            if text is not None and not isinstance(text, str):
                raise DataError(f'{at}: "text" must be a string, got {type(text).__name__}')
            if text:
                part.data["annotations"].append({"id": next_id, "image_id": image_id, "caption": text})
                next_id += 1
            continue
        for k, (bbox, category) in enumerate(_objects(row, at), start=1):
            name = category if isinstance(category, str) else names[category]
            part.data["annotations"].append({"id": next_id, "image_id": image_id, "category_id": ids[name], "bbox": bbox})
            part.origins[next_id] = f"{at}, object {k}"
            next_id += 1
    return list(parts.values())


def _rows(path: Path, root: Path, label: str) -> list[tuple[int, dict[str, Any]]]:
    name = rel(path, root)
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise DataError(f"{label}: {name} is larger than {MAX_METADATA_BYTES >> 20} MB; split the dataset")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: {name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read {name} ({os_reason(exc)})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            col = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise DataError(f"{label}: {name} line {n}{col}: invalid JSON; each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{label}: {name} line {n}: must be a JSON object, not {type(row).__name__}")
        rows.append((n, row))
    return rows


def _objects(row: dict[str, Any], at: str) -> list[tuple[list[float], int | str]]:
    """``[(bbox, category)]`` of a row, either shape of ``objects``; checked."""
    objects = row.get("objects")
    if objects is None:
        return []  # an image with no objects: a negative
    if isinstance(objects, list):  # [{"bbox": [...], "category": 0}, ...]
        pairs = [(o.get("bbox"), o.get("category", o.get("categories"))) if isinstance(o, dict) else (None, None)
                 for o in objects]  # fmt: skip
    elif isinstance(objects, dict):
        boxes, cats = objects.get("bbox"), objects.get("category", objects.get("categories"))
        if not isinstance(boxes, list) or not isinstance(cats, list) or len(boxes) != len(cats):
            raise DataError(
                f'{at}: "objects" needs "bbox" and "category" lists of the same length, got '
                f"{len(boxes) if isinstance(boxes, list) else boxes!r:.30} boxes and "
                f"{len(cats) if isinstance(cats, list) else cats!r:.30} categories"
            )
        pairs = list(zip(boxes, cats))
    else:
        raise DataError(f'{at}: "objects" must be an object of "bbox" and "category" lists')
    out = []
    for k, (bbox, category) in enumerate(pairs, start=1):
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise DataError(f"{at}, object {k}: bbox must be [x, y, width, height], four numbers, got {bbox!r:.60}")
        if not (isinstance(category, str) and category) and not (isinstance(category, int) and not isinstance(category, bool)):
            raise DataError(f"{at}, object {k}: category must be a class name or id, got {category!r:.40}")
        out.append(([float(v) for v in bbox], category))
    return out


def _names(root: Path, label: str, rows: list[tuple[Path, int, dict[str, Any]]], task: str) -> list[str]:
    """Class names: the card's or classes.txt's when ids are used, else every name, sorted."""
    if task == "caption":
        return []
    used = [(path, n, c) for path, n, row in rows for _, c in _objects(row, f"{label}: {rel(path, root)} line {n}")]
    if not any(isinstance(c, int) for _, _, c in used):
        return sorted({c for _, _, c in used if isinstance(c, str)})
    known = _card_names(root, label) or _classes_txt(root)
    if not known:
        path, n, c = next(u for u in used if isinstance(u[2], int))
        raise DataError(
            f"{label}: {rel(path, root)} line {n}: category {c} is an id but nothing names the classes; "
            "write class names instead of ids, or list them in classes.txt (one per line, id 0 first)"
        )
    for path, n, c in used:
        if isinstance(c, int) and not 0 <= c < len(known):
            raise DataError(
                f"{label}: {rel(path, root)} line {n}: category id {c} is out of range; "
                f"{len(known)} classes are named (ids 0 to {len(known) - 1})"
            )
        if isinstance(c, str) and c not in known:
            raise DataError(f"{label}: {rel(path, root)} line {n}: category {c!r} is not a named class")
    return known


def _classes_txt(root: Path) -> list[str]:
    path = root / "classes.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines() if line.strip()]


def _card_names(root: Path, label: str) -> list[str]:
    """``class_label: names:`` from the dataset card's YAML header (``README.md``), if any."""
    path = root / "README.md"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if not text.startswith("---"):
        return []
    header = text[3:].split("\n---", 1)[0]
    try:
        card = yaml.safe_load(header)
    except yaml.YAMLError:
        raise DataError(f"{label}: README.md: its YAML header cannot be read; fix it or remove it") from None
    stack: list[Any] = [card]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            names = (node.get("class_label") or {}).get("names") if isinstance(node.get("class_label"), dict) else None
            if isinstance(names, dict) and names:
                try:
                    return [str(names[k]) for k in sorted(names, key=int)]
                except (TypeError, ValueError):
                    return []
            if isinstance(names, list) and names:
                return [str(n) for n in names]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return []
