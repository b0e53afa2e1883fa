"""Reading a COCO file's JSON: every structural check, before any image is opened.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.data.coco.checks import (
    MAX_CATEGORIES,
    MAX_COUNT,
    MAX_FILE_NAME_CHARS,
    MAX_KEYPOINTS,
    MAX_NAME_CHARS,
    _ImageEntry,
    _is_number,
    _Parsed,
    _show,
)
from pipeline.data.errors import DataError, os_reason
from pipeline.structures import WEAK_TASKS

logger = logging.getLogger(__name__)


class JsonChecks:
    """Parse and check annotation files (part of ``_CocoReader``)."""

    def _rel(self, path: Path) -> str:
        root = self.source.root
        try:
            return path.relative_to(root).as_posix() if root is not None else path.name
        except ValueError:
            return path.name

    def parse_file(self, path: Path, split: str) -> _Parsed:
        where = f"{self.label}: {self._rel(path)}" if self.source.annotation_file is None else str(self.label)
        try:
            text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
        except OSError as exc:
            raise DataError(f"{where}: cannot read the file ({os_reason(exc)})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                "fix the file (`python -m json.tool FILE` points at the same place)"
            ) from exc
        except RecursionError:
            raise DataError(
                f"{where}: the JSON is nested too deeply to read (arrays or objects inside each other "
                "hundreds of levels deep); a COCO file needs only a few levels"
            ) from None
        del text
        return self.parse_data(data, path, split, where)

    def parse_data(
        self, data: Any, path: Path, split: str, where: str, origins: dict[Any, str] | None = None
    ) -> _Parsed:
        """Check one COCO document (parsed JSON, or another format converted to its shape).
        ``origins`` names where each annotation id came from ("labels/a.txt line 3"), for
        messages about annotations that were not written as COCO."""
        if not isinstance(data, dict):
            raise DataError(
                f'{where}: the top level must be a JSON object with "images", '
                f'"annotations" and "categories", not {type(data).__name__}'
            )

        for key in ("images", "annotations") + (() if self.task == "caption" else ("categories",)):
            if key not in data:
                raise DataError(
                    f'{where}: missing the top-level key "{key}"; '
                    'a COCO file needs "images", "annotations" and "categories"'
                )
        for key in ("images", "annotations", "categories"):
            if key in data and not isinstance(data[key], list):
                raise DataError(f'{where}: "{key}" must be a list, not {type(data[key]).__name__}')

        parsed = _Parsed(
            path,
            where,
            split,
            self._images(data["images"], where),
            self._categories(data.get("categories", []), where),
            origins=dict(origins or {}),
        )
        self._annotations(data["annotations"], parsed)
        return parsed

    def _images(self, raw: list[Any], where: str) -> list[_ImageEntry]:
        entries: list[_ImageEntry] = []
        seen: set[int] = set()
        for index, item in enumerate(raw):
            at = f"{where}: images[{index}]"
            if not isinstance(item, dict):
                raise DataError(f'{at} must be an object with "id" and "file_name"')
            image_id, file_name = item.get("id"), item.get("file_name")
            if not isinstance(image_id, int) or isinstance(image_id, bool):
                raise DataError(f'{at}: "id" must be an integer, got {_show(image_id)}')
            if not isinstance(file_name, str) or not file_name:
                raise DataError(
                    f'{at} (image {image_id}): "file_name" must be a non-empty string, got {_show(file_name)}'
                )
            if len(file_name) > MAX_FILE_NAME_CHARS:
                raise DataError(
                    f'{at} (image {image_id}): "file_name" is {len(file_name)} characters, more than the '
                    f"{MAX_FILE_NAME_CHARS} allowed; use the image's path relative to the dataset"
                )
            if image_id in seen:
                raise DataError(f"{at}: image id {image_id} is used twice; give every image its own id")
            seen.add(image_id)
            size = []
            for key in ("width", "height"):
                value = item.get(key)
                if value is not None and (
                    not isinstance(value, int) or isinstance(value, bool) or value <= 0
                ):
                    raise DataError(
                        f"{at} (image {image_id} '{file_name}'): \"{key}\" must be a positive integer, "
                        f"got {_show(value)}"
                    )
                size.append(value)
            entry = _ImageEntry(image_id, file_name, size[0], size[1])
            self._weak_marks(item, entry, f"{at} (image {image_id} '{file_name}')")
            entries.append(entry)
        return entries

    def _weak_marks(self, item: dict[str, Any], entry: _ImageEntry, at: str) -> None:
        """Read an image entry's "counts" and "unlabeled" (checked against the categories later)."""
        counts, unlabeled = item.get("counts"), item.get("unlabeled")
        if counts is None and unlabeled in (None, False):
            return
        if self.task not in WEAK_TASKS:
            key = '"counts"' if counts is not None else '"unlabeled"'
            raise DataError(
                f"{at}: {key} is a weak label, which only tasks {' and '.join(WEAK_TASKS)} accept, "
                f"not {self.task}; remove it"
            )
        if unlabeled is not None and not isinstance(unlabeled, bool):
            raise DataError(f'{at}: "unlabeled" must be true or false, got {_show(unlabeled)}')
        if counts is not None and not isinstance(counts, dict):
            raise DataError(
                f'{at}: "counts" must be an object of category name: number, e.g. {{"cola": 3}}, '
                f"got {_show(counts)}"
            )
        entry.counts, entry.unlabeled = counts, bool(unlabeled)

    def _categories(self, raw: list[Any], where: str) -> dict[int, tuple[str, list[str]]]:
        categories: dict[int, tuple[str, list[str]]] = {}
        names: set[str] = set()
        if len(raw) > MAX_CATEGORIES:
            raise DataError(
                f'{where}: "categories" has {len(raw)} entries, more than the {MAX_CATEGORIES} allowed; '
                "merge rare classes or split the dataset"
            )
        for index, item in enumerate(raw):
            at = f"{where}: categories[{index}]"
            if not isinstance(item, dict):
                raise DataError(f'{at} must be an object with "id" and "name"')
            cid, cname = item.get("id"), item.get("name")
            if not isinstance(cid, int) or isinstance(cid, bool):
                raise DataError(f'{at}: "id" must be an integer, got {_show(cid)}')
            if not isinstance(cname, str) or not cname:
                raise DataError(f'{at} (category {cid}): "name" must be a non-empty string, got {_show(cname)}')
            if len(cname) > MAX_NAME_CHARS:
                raise DataError(
                    f'{at} (category {cid}): "name" is {len(cname)} characters, more than the {MAX_NAME_CHARS} '
                    f"allowed ({_show(cname)}); use a short class name"
                )
            if cid in categories:
                raise DataError(f"{at}: category id {cid} is used twice; give every category its own id")
            if cname in names:
                # Labels are category names, so two ids with one name would merge silently.
                raise DataError(f"{at}: category name {_show(cname)} is used by two ids; make the names unique")
            keypoints = item.get("keypoints", [])
            if not isinstance(keypoints, list) or not all(isinstance(k, str) for k in keypoints):
                raise DataError(f'{at} (category {cid} {_show(cname)}): "keypoints" must be a list of names')
            if len(keypoints) > MAX_KEYPOINTS or any(len(k) > MAX_NAME_CHARS for k in keypoints):
                raise DataError(
                    f'{at} (category {cid} {_show(cname)}): "keypoints" may name at most {MAX_KEYPOINTS} '
                    f"keypoints of at most {MAX_NAME_CHARS} characters each; shorten the list or the names"
                )
            names.add(cname)
            categories[cid] = (cname, list(keypoints))
        return categories

    def _annotations(self, raw: list[Any], parsed: _Parsed) -> None:
        where = parsed.where
        images = {entry.id: entry for entry in parsed.images}
        ids = sorted(parsed.categories)
        known = (", ".join(str(c) for c in ids[:20]) + (", …" if len(ids) > 20 else "")) or "none"
        for index, ann in enumerate(raw):
            if not isinstance(ann, dict):
                raise DataError(f"{where}: annotations[{index}] must be an object, not {type(ann).__name__}")
            ann_id = ann.get("id", f"#{index}")
            if not isinstance(ann_id, int | str) or isinstance(ann_id, bool) or len(str(ann_id)) > 40:
                ann_id = f"#{index}"  # the id only names the annotation in messages
            at = f"{where}: annotation {ann_id}"
            image_id = ann.get("image_id")
            if not isinstance(image_id, int) or isinstance(image_id, bool):
                raise DataError(f'{at}: "image_id" must be an integer, got {_show(image_id)}')
            if image_id not in images:
                self.warn(
                    f'{at} refers to image {image_id}, which is not in "images"; '
                    "annotation dropped — add the image or remove the annotation"
                )
                continue
            if ann.get("point") is not None:
                self._click(ann, ann_id, at, images[image_id], parsed, known)
                continue
            if "caption" in ann:
                if not isinstance(ann["caption"], str):
                    raise DataError(f'{at}: "caption" must be a string, got {type(ann["caption"]).__name__}')
                parsed.captions.setdefault(image_id, []).append(ann["caption"].strip())
                continue
            category_id = ann.get("category_id")
            if category_id is None:
                raise DataError(f'{at} (image {image_id}) has neither "category_id" nor "caption"; add one')
            if not isinstance(category_id, int) or isinstance(category_id, bool) or category_id not in parsed.categories:
                raise DataError(
                    f"{at} (image {image_id} '{images[image_id].file_name}') refers to category "
                    f'{_show(category_id)}, which is not in "categories" (known ids: {known}); '
                    "add the category or fix the annotation"
                )
            if ann.get("iscrowd"):
                # "Many objects here, not boxed one by one": never a training target, an ignore
                # region for evaluation (pipeline.structures, "crowd").
                parsed.crowds.setdefault(image_id, []).append((ann_id, ann))
                continue
            parsed.instances.setdefault(image_id, []).append((ann_id, ann))
        for entry in parsed.images:
            parsed.kinds[entry.id] = self._label_kind(entry, parsed)

    def _click(
        self, ann: dict[str, Any], ann_id: Any, at: str, image: _ImageEntry, parsed: _Parsed, known: str
    ) -> None:
        """Check a click annotation (a point without a box) and file it under its image."""
        at = f"{at} (image {image.id} '{image.file_name}')"
        if self.task not in WEAK_TASKS:
            raise DataError(
                f'{at} is a click ("point" without a box), a weak label, which only tasks '
                f"{' and '.join(WEAK_TASKS)} accept, not {self.task}; remove it"
            )
        extra = [key for key in ("bbox", "segmentation") if ann.get(key) is not None]
        if extra:
            raise DataError(
                f'{at} has a "point" and a "{extra[0]}"; a click is a point alone — '
                f'drop the "point" to keep the {extra[0]}, or the {extra[0]} to keep the click'
            )
        point = ann["point"]
        if not (isinstance(point, list) and len(point) == 2 and all(_is_number(v) for v in point)):
            raise DataError(f'{at}: "point" must be [x, y], two finite numbers, got {_show(point)}')
        category_id = ann.get("category_id")
        if category_id is not None and (
            not isinstance(category_id, int) or isinstance(category_id, bool) or category_id not in parsed.categories
        ):
            raise DataError(
                f'{at} refers to category {_show(category_id)}, which is not in "categories" '
                f"(known ids: {known}); add the category, fix the click, or drop its category_id"
            )
        parsed.clicks.setdefault(image.id, []).append((ann_id, ann))

    def _label_kind(self, entry: _ImageEntry, parsed: _Parsed) -> str:
        """What the image's labels are ("full", "points", "counts", "none"), after checking
        that its boxes, clicks, counts and marker agree."""
        at = f"{parsed.where}: image {entry.id} '{entry.file_name}'"
        boxes, clicks = parsed.instances.get(entry.id, []), parsed.clicks.get(entry.id, [])
        if boxes and clicks:
            raise DataError(
                f"{at} mixes boxes (annotation {boxes[0][0]}) and clicks (annotation {clicks[0][0]}); "
                "give all objects of an image the same kind of label: box the clicked ones, or click the boxed ones"
            )
        if entry.unlabeled:
            labels = boxes or clicks
            if labels or entry.counts is not None:
                what = f"annotation {labels[0][0]}" if labels else '"counts"'
                raise DataError(f'{at} is marked "unlabeled": true but has {what}; remove the marker or the labels')
        elif entry.counts is not None:
            counts = self._resolve_counts(entry.counts, at, parsed)
            if boxes or clicks:
                self._check_counts_agree(counts, boxes or clicks, at, parsed, "boxes" if boxes else "clicks")
            parsed.counts[entry.id] = counts
        kind = (
            "none" if entry.unlabeled
            else "points" if clicks
            else "full" if boxes
            else "counts" if entry.counts is not None
            else "full"  # no annotations and no marker: a negative, every (zero) object labelled
        )  # fmt: skip
        if kind != "full" and parsed.split in ("val", "test"):
            has = {"points": "has only clicks", "counts": "has only counts", "none": "is unlabelled"}[kind]
            raise DataError(
                f"{at} {has} but is in the {parsed.split} split, which is for evaluation and needs "
                "every object boxed; move the image to the train file, or box its objects"
            )
        return kind

    def _resolve_counts(self, raw: dict[str, Any], at: str, parsed: _Parsed) -> dict[str, int]:
        """``{category name: n}`` from keys that are names or ids; zeros dropped (a category
        not listed has no objects)."""
        by_name = {name: name for name, _ in parsed.categories.values()}
        out: dict[str, int] = {}
        for key, value in raw.items():
            name = by_name.get(key)
            if name is None and key.isascii() and key.isdigit() and int(key) in parsed.categories:
                name = parsed.categories[int(key)][0]
            if name is None:
                names = ", ".join(list(by_name)[:20]) + (", …" if len(by_name) > 20 else "")
                raise DataError(
                    f'{at}: "counts" names {_show(key)}, which is not a category (known: {names or "none"}); '
                    "use a category name or id"
                )
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
                raise DataError(
                    f'{at}: "counts" gives {_show(key)} {_show(value)}; a count is a whole number from 0 '
                    f"to {MAX_COUNT}"
                )
            if name in out:
                raise DataError(f'{at}: "counts" gives category {_show(name)} twice (by name and by id); keep one')
            out[name] = value
        return {name: n for name, n in out.items() if n}

    def _check_counts_agree(
        self, counts: dict[str, int], anns: list[tuple[Any, dict[str, Any]]], at: str, parsed: _Parsed, what: str
    ) -> None:
        labelled = Counter(
            parsed.categories[a["category_id"]][0] for _, a in anns if a.get("category_id") is not None
        )
        unnamed = len(anns) - sum(labelled.values())
        if sum(counts.values()) == len(anns) and all(counts.get(c, 0) >= n for c, n in labelled.items()):
            return
        listed = ", ".join(f"{c} {n}" for c, n in counts.items()) or "nothing"
        found = ", ".join(f"{c} {n}" for c, n in labelled.items()) or "none with a category"
        raise DataError(
            f'{at}: "counts" says {listed} but its {len(anns)} {what} give {found}'
            + (f" and {unnamed} without a category" if unnamed else "")
            + '; make them agree, or drop "counts"'
        )

    def merge_categories(self, parsed: dict[str, _Parsed]) -> tuple[list[str], list[str]]:
        merged: dict[int, tuple[str, list[str]]] = {}
        for part in parsed.values():
            for cid, value in part.categories.items():
                if cid in merged and merged[cid][0] != value[0]:
                    raise DataError(
                        f"{part.where}: category {cid} is {_show(value[0])} here but {_show(merged[cid][0])} in "
                        "another split file; use the same categories in every split"
                    )
                merged.setdefault(cid, value)
        keypoint_names: list[str] = []
        for cid in sorted(merged):
            name, kps = merged[cid]
            if kps and not keypoint_names:
                keypoint_names = kps
            elif kps and kps != keypoint_names and self.task == "keypoints":
                raise DataError(
                    f"{self.label}: category {cid} {_show(name)} has keypoints {_show(kps)} but another category has "
                    f"{keypoint_names}; DreamForge needs the same K named keypoints for every category"
                )
        return [merged[cid][0] for cid in sorted(merged)], keypoint_names
