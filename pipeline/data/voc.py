"""Pascal VOC folders: ``Annotations/*.xml`` + ``JPEGImages/``, splits from ``ImageSets/Main``.

Boxes: VOC numbers pixels from 1 and its ``xmax`` / ``ymax`` are inclusive, so the half-open
0-based box is ``[xmin - 1, ymin - 1, xmax, ymax]`` (as Detectron2's ``pascal_voc.py`` and
torchvision's VOC references convert). Objects marked ``difficult`` are left out of VOC's own
evaluation; here they become ignore regions (``crowd``): never trained on, and a detection on
one is neither a true nor a false positive.

The XML is the uploader's: a document with a DOCTYPE (where entity bombs and external
entities live) is refused before it is parsed.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pipeline.data.errors import DataError, os_reason
from pipeline.data.formats import IMAGE_SUFFIXES, Converted, categories, rel

MAX_XML_BYTES = 4 << 20  # one image's annotation; thousands of objects fit in far less
_SPLIT_LISTS = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


def matches(root: Path) -> bool:
    folder = root / "Annotations"
    return folder.is_dir() and any(folder.glob("*.xml"))


def convert(root: Path, label: str, task: str) -> list[Converted]:
    if task != "detect":
        raise DataError(
            f"{label}: a Pascal VOC folder holds boxes only, which task {task} cannot use; "
            "use task detect, or convert the dataset to COCO"
        )
    documents = [_read(path, root, label) for path in sorted((root / "Annotations").glob("*.xml"))]
    names = sorted({obj["name"] for doc in documents for obj in doc["objects"]})
    ids = {name: i for i, name in enumerate(names)}
    assign = _split_lists(root, label)
    parts: dict[str, Converted] = {}
    next_id = 1
    for image_id, doc in enumerate(documents, start=1):
        split = assign.get(doc["stem"], "train") if assign else "all"
        part = parts.setdefault(
            split,
            Converted(split, root / "Annotations", label,
                      {"images": [], "annotations": [], "categories": categories(names)}),
        )  # fmt: skip
        entry: dict[str, Any] = {"id": image_id, "file_name": _image_name(root, doc)}
        part.data["images"].append(entry)
        for k, obj in enumerate(doc["objects"], start=1):
            x1, y1, x2, y2 = obj["box"]
            part.data["annotations"].append({
                "id": next_id, "image_id": image_id, "category_id": ids[obj["name"]],
                "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1], "iscrowd": int(obj["difficult"]),
            })  # fmt: skip
            part.origins[next_id] = f"{label}: {doc['where']} object {k} ({obj['name']!r})"
            next_id += 1
    return list(parts.values())


def _read(path: Path, root: Path, label: str) -> dict[str, Any]:
    name = rel(path, root)
    at = f"{label}: {name}"
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            raise DataError(f"{at}: larger than {MAX_XML_BYTES >> 20} MB; is it a VOC annotation?")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{at}: cannot read the file ({os_reason(exc)})") from None
    if re.search(rb"<!(DOCTYPE|ENTITY)", raw[:65536], re.IGNORECASE):
        raise DataError(f"{at}: has a DOCTYPE or ENTITY declaration, which VOC files never need; remove it")
    try:
        tree = ET.fromstring(raw)
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(f"{at}: not valid XML at line {line}, column {column + 1}; fix the file") from None
    if tree.tag != "annotation":
        raise DataError(f"{at}: the top element is <{tree.tag}>, not <annotation>; is it a VOC file?")
    objects = []
    for k, obj in enumerate(tree.findall("object"), start=1):
        where = f"{at}: object {k}"
        cname = (obj.findtext("name") or "").strip()
        if not cname:
            raise DataError(f"{where} has no <name>; give every object its class name")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where} ({cname!r}) has no <bndbox>; give its xmin, ymin, xmax, ymax")
        values = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = (box.findtext(tag) or "").strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DataError(f"{where} ({cname!r}): <{tag}> must be a number, got {text[:30]!r}")
            values.append(value)
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        objects.append({"name": cname, "box": values, "difficult": difficult})
    return {"stem": path.stem, "where": name, "filename": (tree.findtext("filename") or "").strip(), "objects": objects}


def _image_name(root: Path, doc: dict[str, Any]) -> str:
    """The image's path relative to ``root``: ``JPEGImages/<filename>``, else the file with the
    annotation's stem (some tools write a stale ``<filename>``)."""
    folder = root / "JPEGImages"
    if doc["filename"] and "/" not in doc["filename"] and (folder / doc["filename"]).is_file():
        return f"JPEGImages/{doc['filename']}"
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (folder / f"{doc['stem']}{suffix}", folder / f"{doc['stem']}{suffix.upper()}"):
            if candidate.is_file():
                return rel(candidate, root)
    return f"JPEGImages/{doc['filename'] or doc['stem'] + '.jpg'}"  # not there: the reader warns by name


def _split_lists(root: Path, label: str) -> dict[str, str]:
    """Image stem -> split, from ``ImageSets/Main/{train,val,test}.txt`` ({} when none)."""
    assign: dict[str, str] = {}
    for split, name in _SPLIT_LISTS.items():
        path = root / "ImageSets" / "Main" / name
        if not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError):
            raise DataError(f"{label}: ImageSets/Main/{name} cannot be read as UTF-8 text; fix the file") from None
        for line in lines:
            if line.split():
                assign.setdefault(line.split()[0], split)
    return assign
