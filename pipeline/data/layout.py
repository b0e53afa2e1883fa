"""Where a COCO folder keeps its annotation files: ``annotations.json``, per-split files
(``train.json``, ``instances_val2017.json``, at the top or under ``annotations/``), or one
``*.json``; and the folder itself when a ZIP wraps it in another."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.data.errors import DataError
from pipeline.data.formats import LAYOUT_FOLDERS
from pipeline.data.sources import Source

SPLIT_FILE = re.compile(
    r"^(?:(?P<prefix>[a-z0-9]+(?:_[a-z0-9]+)*)_)?(?P<split>train|training|val|valid|validation|test|testing)"
    r"(?P<year>\d{4})?$",
    re.IGNORECASE,
)
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}


def _json_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith("."))


def find_annotation_files(resolved: Source, task: str) -> dict[str, Path]:
    """``{"all": path}`` for one annotation file, or ``{"train": .., "val": .., ...}``."""
    if resolved.annotation_file is not None:
        return {"all": resolved.annotation_file}
    root = dataset_root(resolved)
    candidates = _json_files(root) + _json_files(root / "annotations")
    for path in (root / "annotations.json", root / "annotations" / "annotations.json"):
        if path.is_file():
            return {"all": path}

    by_split: dict[str, list[Path]] = {}
    for path in candidates:
        match = SPLIT_FILE.match(path.stem)
        if match:
            split = match.group("split").lower()
            by_split.setdefault(_SPLIT_ALIASES.get(split, split), []).append(path)
    if len(by_split) >= 2:
        return {
            split: _pick_for_task(paths, split, task, resolved.label, root)
            for split, paths in by_split.items()
        }
    if len(by_split) == 1 and len(candidates) > 1:
        # One split file beside other JSON: use the split file, split it by hash.
        ((split, paths),) = by_split.items()
        return {"all": _pick_for_task(paths, split, task, resolved.label, root)}
    if len(candidates) == 1:
        return {"all": candidates[0]}
    if not candidates:
        if any(p.is_dir() for p in [root / "labels", *root.glob("*/labels")]):
            raise DataError(
                f"{resolved.label}: labels/ looks like a YOLO folder, but no data.yaml or classes.txt "
                "names its classes; add data.yaml with names: [...] (or classes.txt, one name a line)"
            )
        raise DataError(
            f"{resolved.label}: no annotation file found; expected COCO's annotations.json, "
            "train.json / val.json / test.json, or a single *.json (at the top or in annotations/), "
            "a YOLO folder (images/, labels/ and data.yaml), a Pascal VOC folder (Annotations/*.xml "
            "and JPEGImages/) or images with a metadata.jsonl"
        )
    names = ", ".join(p.relative_to(root).as_posix() for p in candidates)
    raise DataError(
        f"{resolved.label}: several annotation files ({names}) and none is annotations.json; "
        "rename the one to use to annotations.json, or pass its .json path"
    )


def dataset_root(resolved: Source) -> Path:
    """The folder the dataset lies in: a ZIP of a folder usually holds that one folder, so
    step into it (up to three levels; ``resolved.root`` is updated)."""
    root = resolved.root
    assert root is not None
    for _ in range(3):
        inner = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(inner) == 1 and inner[0].is_dir() and inner[0].name not in LAYOUT_FOLDERS:
            root = inner[0]
        else:
            break
    resolved.root = root
    return root


def _pick_for_task(paths: list[Path], split: str, task: str, label: str, root: Path) -> Path:
    """Among e.g. instances_train2017.json / captions_train2017.json, the one for ``task``."""
    if len(paths) == 1:
        return paths[0]
    hint = {"caption": "caption", "keypoints": "keypoint"}.get(task, "instances")
    preferred = [p for p in paths if hint in p.stem.lower()]
    if len(preferred) == 1:
        return preferred[0]
    names = ", ".join(p.relative_to(root).as_posix() for p in paths)
    raise DataError(f"{label}: several annotation files for the {split} split ({names}); keep one")

