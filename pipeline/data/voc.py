"""Pascal VOC folders: ``Annotations/*.xml`` + ``JPEGImages/``, splits from ``ImageSets/Main``.

Boxes: VOC numbers pixels from 1 and its ``xmax`` / ``ymax`` are inclusive, so the half-open
0-based box is ``[xmin - 1, ymin - 1, xmax, ymax]`` (as Detectron2's ``pascal_voc.py`` and
torchvision's VOC references convert). Objects marked ``difficult`` are left out of VOC's own
evaluation; here they become ignore regions (``crowd``): never trained on, and a detection on
one is neither a true nor a false positive.

``<size>`` says which image the boxes were drawn on, and is checked against the image file:
a different size is an error naming both (the boxes belong to another image). A photo with an
EXIF orientation that turns it sideways is read upright (``pipeline.data.images``); a tool that
labelled it as stored writes the stored size, width and height swapped, and its boxes are
turned upright with the pixels. ``<depth>`` only says how many colour channels the file has;
images are read as RGB whatever it says, and boxes do not depend on it.

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
from pipeline.data.formats import IMAGE_SUFFIXES, Converted, categories, rel, stored_size
from pipeline.data.images import TURNED

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
    turned: list[str] = []
    for image_id, doc in enumerate(documents, start=1):
        split = assign.get(doc["stem"], "train") if assign else "all"
        part = parts.setdefault(
            split,
            Converted(split, root / "Annotations", label,
                      {"images": [], "annotations": [], "categories": categories(names)}),
        )  # fmt: skip
        entry: dict[str, Any] = {"id": image_id, "file_name": _image_name(root, doc)}
        part.data["images"].append(entry)
        turn = _check_size(root, doc, entry["file_name"], label)
        if turn:
            turned.append(doc["where"])
        for k, obj in enumerate(doc["objects"], start=1):
            x1, y1, x2, y2 = obj["box"]
            box = upright_box([x1 - 1, y1 - 1, x2, y2], doc["size"], turn) if turn else [x1 - 1, y1 - 1, x2, y2]
            part.data["annotations"].append({
                "id": next_id, "image_id": image_id, "category_id": ids[obj["name"]],
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": int(obj["difficult"]),
            })  # fmt: skip
            part.origins[next_id] = f"{label}: {doc['where']} object {k} ({obj['name']!r})"
            next_id += 1
    out = list(parts.values())
    if turned:
        out[0].warnings.append(
            f"{label}: {len(turned)} annotation file(s) give the size of their image as stored, before its EXIF "
            f"orientation turns it upright ({', '.join(turned[:5])}{' ...' if len(turned) > 5 else ''}); "
            "their boxes are turned upright with the image"
        )
    return out


def _check_size(root: Path, doc: dict[str, Any], file_name: str, label: str) -> int:
    """The EXIF orientation to turn the boxes by (0: none), after checking ``<size>`` against
    the image. A size that matches neither the upright nor the stored image is an error."""
    stored = stored_size(root / file_name)
    if doc["size"] is None or stored is None:
        return 0  # nothing said, or no readable image (the reader names it)
    (w, h), orientation = stored
    upright = (h, w) if orientation in TURNED else (w, h)
    said = doc["size"]
    if said == upright:
        return 0
    if said == (w, h) and orientation in TURNED:
        return orientation  # labelled as stored, sideways: turn the boxes as the pixels turn
    turn = f", {w}×{h} as stored, turned upright by its EXIF orientation" if orientation in TURNED else ""
    raise DataError(
        f"{label}: {doc['where']}: <size> says {said[0]}×{said[1]} but {file_name} is {upright[0]}×{upright[1]}"
        f"{turn}, so its boxes were drawn on another image; fix <size> and the boxes, or the image's name"
    )


def upright_box(box: list[float], size: tuple[int, int], orientation: int) -> list[float]:
    """A half-open ``[x1, y1, x2, y2]`` box on the stored ``size`` (width, height) image, on the
    upright one that ``ImageOps.exif_transpose`` makes for ``orientation`` 5 to 8 (transpose,
    rotate 270, transverse, rotate 90, in PIL's counter-clockwise degrees)."""
    (x1, y1, x2, y2), (w, h) = box, size
    return {
        5: [y1, x1, y2, x2],  # mirrored along the main diagonal
        6: [h - y2, x1, h - y1, x2],  # turned 90° clockwise: (x, y) -> (h - y, x)
        7: [h - y2, w - x2, h - y1, w - x1],  # mirrored along the other diagonal
        8: [y1, w - x2, y2, w - x1],  # turned 90° counter-clockwise: (x, y) -> (y, w - x)
    }[orientation]


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
    return {"stem": path.stem, "where": name, "filename": (tree.findtext("filename") or "").strip(),
            "objects": objects, "size": _size(tree, at)}  # fmt: skip


def _size(tree: ET.Element, at: str) -> tuple[int, int] | None:
    """``<size>``'s ``(width, height)``; None where it is missing or zero (some converters
    write 0 for "unknown"), so there is nothing to check."""
    size = tree.find("size")
    if size is None:
        return None
    values = []
    for tag in ("width", "height", "depth"):
        text = (size.findtext(tag) or "").strip()
        if tag == "depth" and not text:
            break
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0 and value == int(value)):
            raise DataError(f"{at}: <size> <{tag}> must be a whole number of pixels, got {text[:30]!r}")
        values.append(int(value))
    return None if not values[0] or not values[1] else (values[0], values[1])


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
