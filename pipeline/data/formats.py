"""Dataset formats besides COCO: which one a folder holds, and its conversion to COCO's shape.

Every format is converted to a COCO document in memory (``images`` / ``annotations`` /
``categories``, boxes as ``[x, y, w, h]`` pixels) and then read by the one COCO reader
(``pipeline.data.coco``), so that images are opened, checked and turned into canonical
targets in one place, with one set of warnings. What only the source format can know (a
class id out of range, a malformed line) is an error raised here, naming the file and line;
what the reader finds later (a box outside its image) names them too, through ``origins``.

We convert by hand rather than through ``supervision``'s loaders (``DetectionDataset.from_yolo``
/ ``from_pascal_voc``): those read every image with OpenCV to learn its size (a new
dependency, and an eager decode of a whole set), turn YOLO-seg polygons into raster masks
(we keep polygons), and raise bare ``IndexError`` / ``ValueError`` on bad lines instead of
naming the file and line. The formats themselves are a few lines each.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.data.images import orientation, upright_size
from pipeline.data.sources import Source

# Folders that are part of a dataset's layout: a ZIP holding only one of them is not
# "a folder wrapped in a ZIP" to step into.
LAYOUT_FOLDERS = ("annotations", "images", "labels", "Annotations", "JPEGImages")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Split folder names as the common exporters write them (Ultralytics, Roboflow, Hugging Face).
SPLIT_WORDS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


@dataclass
class Converted:
    """One split of a non-COCO dataset, as a COCO document."""

    split: str  # "all" (split by hash later) or "train" / "val" / "test"
    path: Path  # the file or folder it was read from (images are looked up beside it too)
    where: str  # the prefix of messages about the split as a whole
    data: dict[str, Any]  # {"images": [...], "annotations": [...], "categories": [...]}
    origins: dict[Any, str] = field(default_factory=dict)  # annotation id -> "labels/a.txt line 3"
    warnings: list[str] = field(default_factory=list)  # what the conversion found, for the job log


def detect_format(root: Path) -> str:
    """``"yolo"``, ``"voc"``, ``"hf-imagefolder"`` or ``"coco"`` (the default, whose reader
    explains what it expected when nothing is found)."""
    from pipeline.data import hf_folder, voc, yolo  # local: they import this module

    if (root / "annotations.json").is_file() or (root / "annotations" / "annotations.json").is_file():
        return "coco"
    for name, module in (("hf-imagefolder", hf_folder), ("yolo", yolo), ("voc", voc)):
        if module.matches(root):
            return name
    return "coco"


def convert(kind: str, resolved: Source, task: str) -> list[Converted]:
    """The dataset at ``resolved.root`` in format ``kind``, as COCO documents, one per split."""
    from pipeline.data import hf_folder, voc, yolo

    module = {"yolo": yolo, "voc": voc, "hf-imagefolder": hf_folder}[kind]
    assert resolved.root is not None
    return module.convert(resolved.root, resolved.label, task)


def rel(path: Path, root: Path) -> str:
    """``path`` as the user knows it: relative to the dataset folder, with forward slashes."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def split_of(relative: str) -> str | None:
    """The split a file's folders put it in ("images/valid/a.jpg" -> "val"), or None."""
    for part in relative.split("/")[:-1]:
        split = SPLIT_WORDS.get(part.lower())
        if split:
            return split
    return None


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of the upright image from its header, or None when it cannot be
    read (the COCO reader then skips the image with a warning that says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb is refused by the reader, with its own message
            with Image.open(path) as probe:
                return upright_size(probe)
    except Exception:  # noqa: BLE001 — any unreadable header is reported by the reader's full check
        return None


def stored_size(path: Path) -> tuple[tuple[int, int], int] | None:
    """``((width, height) as stored, EXIF orientation)`` from the header, or None (as :func:`image_size`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as probe:
                return probe.size, orientation(probe)
    except Exception:  # noqa: BLE001 — as image_size: the reader reports it
        return None


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts)


def image_files(root: Path) -> list[Path]:
    """Every image under ``root``, in a stable order, hidden files and macOS forks left out."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_hidden(p, root)
    )  # fmt: skip


def categories(names: list[str]) -> list[dict[str, Any]]:
    """COCO categories for class names, ids from 0 as YOLO and Hugging Face number them."""
    return [{"id": i, "name": name} for i, name in enumerate(names)]
