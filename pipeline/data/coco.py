"""Load a dataset (folder, ZIP, .json, file:// or synthetic://) into a ``Dataset``: COCO, or
YOLO / Pascal VOC / Hugging Face imagefolder converted to COCO's shape (``pipeline.data.formats``).

Reading order, and why: all JSON is parsed and checked first (cheap, and structural mistakes
are fatal ``DataError``s); only then is every image opened, size-checked from its header,
verified and decoded once into RGB; finally the annotations of each usable image are
converted to the canonical ``Target`` (xyxy half-open boxes, one polygon per instance plus
every part of a multi-part mask in ``mask_parts``, K keypoints, first caption). Per-file problems become warnings in ``Dataset.warnings``.

Weak labels (detect and segment, README "Weak labels"): an annotation with ``"point": [x, y]``
and no box is a click, an image's ``"counts": {"cola": 3}`` counts its objects, and
``"unlabeled": true`` marks an image nobody labelled. Each image gets one ``label_kind``
(``pipeline.structures``); only fully labelled images are split by hash into val and test.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import reprlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.errors import DataError, os_reason
from pipeline.data.formats import convert, detect_format
from pipeline.data.images import CACHE, CACHE_ENV, LazyImage, check_decodes, rgb_bytes, upright_rgb, upright_size
from pipeline.data.layout import SPLIT_FILE, dataset_root, find_annotation_files
from pipeline.data.masks import mask_to_polygons, rle_string_counts
from pipeline.data.sources import Source, remove_extracted, resolve_source
from pipeline.data.splits import SPLITS, check_evaluable, check_fractions, split_samples
from pipeline.data.synthetic import generate
from pipeline.structures import TASKS, WEAK_TASKS, Dataset, Sample, empty_target

logger = logging.getLogger(__name__)

IMAGE_MODES = ("auto", "eager", "lazy")
EAGER_ENV = "DREAMFORGE_EAGER_IMAGES_MB"
DEFAULT_EAGER_MB = 2048  # decoded images a set may hold in memory before it is read lazily


def eager_budget() -> int:
    """Bytes of decoded images a load keeps before it turns lazy (``$DREAMFORGE_EAGER_IMAGES_MB``)."""
    return int(float(os.environ.get(EAGER_ENV, DEFAULT_EAGER_MB)) * (1 << 20))


BOX_TOLERANCE = 1.0  # pixels a box / polygon / keypoint may stick out of the image before it is an error
# What each task needs from an instance annotation (captions are image-level).
_REQUIRED = {"detect": "bbox", "segment": "segmentation", "keypoints": "keypoints"}
# Caps on what a dataset may declare: category names become labels in every prompt and are
# stored with the dataset, so a 1 MB name or 100k categories must be refused, not kept.
MAX_CATEGORIES = 2000  # LVIS, the largest common detection vocabulary, has 1203
MAX_NAME_CHARS = 200  # a category or keypoint name
MAX_KEYPOINTS = 256  # named keypoints of a category (COCO-WholeBody has 133)
MAX_FILE_NAME_CHARS = 1024
MAX_COUNT = 100_000  # objects of one category in one image (a dense crowd is ~10k); bounds BSON and JS numbers
# User values quoted in messages: short, and never recursing into deeply nested JSON.
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 2, 60, 60, 4, 4
_show = _repr.repr


# ------------------------------------------------------------------------- public entry


def load_dataset(
    source: str | Path,
    task: str,
    *,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    max_image_pixels: int = 4096 * 4096,
    name: str | None = None,
    keep_images: bool = True,
    label: str | None = None,
    images: str = "auto",
) -> Dataset:
    """Load ``source`` for ``task`` and split it into train / val / test.

    ``source``: a folder, a ``.zip`` of one, a COCO ``.json`` file, a ``file://`` URI, or
    ``synthetic://KIND?n=N&seed=S``. Per-split files (``train.json`` / ``val.json`` /
    ``test.json``, also ``instances_train2017.json`` style, at the root or under
    ``annotations/``) define the splits; otherwise images are split by a stable hash of
    ``seed`` and the file name with ``fractions``. A ``synthetic://`` URI without its own
    ``seed`` parameter is generated with ``seed`` too.

    ``images``: ``"eager"`` decodes every image once, here; ``"lazy"`` checks each (header,
    size, a decode at 1/8 scale for JPEG) and keeps a :class:`~pipeline.data.images.LazyImage`
    that decodes on use through a bounded cache (``$DREAMFORGE_IMAGE_CACHE_MB``, 1024 by
    default); ``"auto"`` decodes eagerly until the decoded images pass
    ``$DREAMFORGE_EAGER_IMAGES_MB`` (2048 by default), then turns the whole set lazy.

    ``keep_images=False`` checks every image as a load does (header, size, a full decode)
    but keeps none decoded (``Sample.image`` is None): memory stays at one image, for
    validating an upload. ``label`` names the source in messages instead of its path (the
    service's temporary folder must not show). A ZIP this call extracted into the cache is
    removed again when the load fails.

    Raises :class:`DataError` when the dataset cannot be used; per-image problems are
    appended to ``Dataset.warnings`` (and logged) and that image or annotation is skipped.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if images not in IMAGE_MODES:
        raise ValueError(f"images={images!r}; choose one of {', '.join(IMAGE_MODES)}")
    fractions = check_fractions(fractions)
    resolved = resolve_source(source)
    if label is not None:
        resolved.label = label
    if resolved.synthetic is not None:
        return _load_synthetic(resolved, task, seed=seed, fractions=fractions, name=name)
    try:
        return _load_coco(resolved, task, seed, fractions, max_image_pixels, name, keep_images, images)
    except BaseException:
        remove_extracted(resolved)
        raise


def _load_coco(
    resolved: Source,
    task: str,
    seed: int,
    fractions: tuple[float, float, float],
    max_image_pixels: int,
    name: str | None,
    keep_images: bool,
    images: str = "auto",
) -> Dataset:
    reader = _CocoReader(resolved, task, max_image_pixels, keep_images, images)
    kind = "coco" if resolved.annotation_file is not None else detect_format(dataset_root(resolved))
    if kind == "coco":
        files = find_annotation_files(resolved, task)
        parsed = {split: reader.parse_file(path, split) for split, path in files.items()}
    else:  # YOLO, Pascal VOC, Hugging Face imagefolder: converted to COCO's shape, then read alike
        converted = convert(kind, resolved, task)
        for message in (m for part in converted for m in part.warnings):
            reader.warn(message)
        parsed = {
            part.split: reader.parse_data(part.data, part.path, part.split, part.where, part.origins)
            for part in converted
        }
    categories, keypoint_names = reader.merge_categories(parsed)
    all_samples = {split: reader.build_samples(part) for split, part in parsed.items()}
    held_out_wanted = fractions[1] + fractions[2] > 0 if "all" in parsed else bool({"val", "test"} & set(parsed))
    reader.check_usable(all_samples, held_out_wanted)

    if "all" in all_samples:
        splits = split_samples(all_samples["all"], seed=seed, fractions=fractions)
    else:
        splits = {split: all_samples.get(split, []) for split in SPLITS}
    check_evaluable(reader.label, splits, held_out_wanted)
    return Dataset(
        name=name or resolved.name,
        task=task,
        categories=categories,
        splits=splits,
        keypoint_names=keypoint_names,
        warnings=list(reader.warnings),
    )


# ----------------------------------------------------------------------------- helpers


def _load_synthetic(
    resolved: Source, task: str, *, seed: int, fractions: tuple[float, float, float], name: str | None
) -> Dataset:
    params = dict(resolved.synthetic or {})
    uri_task = params.pop("task", None)
    if uri_task is not None and uri_task != task:
        raise DataError(
            f"{resolved.label}: the URI says task={uri_task} but task {task!r} was requested; drop one"
        )
    kind, n = params.pop("kind"), params.pop("n")
    gen_seed = params.pop("seed", seed)
    try:
        dataset = generate(kind, n, seed=gen_seed, task=task, **params)
    except ValueError as exc:
        raise DataError(f"{resolved.label}: {exc}") from exc
    dataset.splits = split_samples(dataset.splits["train"], seed=seed, fractions=fractions)
    check_evaluable(resolved.label, dataset.splits, fractions[1] + fractions[2] > 0)
    dataset.name = name or dataset.name
    return dataset


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _box_area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _polygon_area(flat: Sequence[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


# ------------------------------------------------------------------------------ reader


@dataclass
class _ImageEntry:
    id: int
    file_name: str
    width: int | None
    height: int | None
    counts: dict[str, Any] | None = None  # the image's "counts" as written (keys resolved later)
    unlabeled: bool = False


@dataclass
class _Parsed:
    """One annotation file, checked but with no image opened yet."""

    path: Path
    where: str  # "shelf.zip: annotations.json", the prefix of every message about this file
    split: str
    images: list[_ImageEntry]
    categories: dict[int, tuple[str, list[str]]]  # id -> (name, keypoint names)
    # image id -> [(annotation id, annotation)], in file order
    instances: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)
    captions: dict[int, list[str]] = field(default_factory=dict)
    clicks: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)  # same shape
    crowds: dict[int, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)  # iscrowd=1, same shape
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # image id -> {category name: n}, no zeros
    kinds: dict[int, str] = field(default_factory=dict)  # image id -> label kind
    origins: dict[Any, str] = field(default_factory=dict)  # annotation id -> its place in a non-COCO file

    def ann_at(self, ann_id: Any, entry: _ImageEntry, extra: str = "") -> str:
        """How messages name an annotation: its file and line where it was not COCO."""
        if ann_id in self.origins:
            return self.origins[ann_id] + (f" ({extra})" if extra else "")
        return f"{self.where}: annotation {ann_id} (image {entry.id} '{entry.file_name}'{extra and ', ' + extra})"


class _CocoReader:
    def __init__(
        self, resolved: Source, task: str, max_image_pixels: int, keep_images: bool = True, images: str = "auto"
    ) -> None:
        self.lazy = images == "lazy"
        self.eager_budget = eager_budget() if images == "auto" else None
        self.decoded_bytes = 0
        self.made: list[Sample] = []  # every sample so far, to turn lazy when the budget is passed
        self.source = resolved
        self.label = resolved.label
        self.task = task
        self.max_image_pixels = int(max_image_pixels)
        self.keep_images = keep_images
        self.warnings: list[str] = []
        self.instances_kept = 0

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)  # logged as it happens, so it shows even if a DataError follows

    # ---- JSON ----------------------------------------------------------------------

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

    # ---- images ----------------------------------------------------------------------

    def _image_path(self, entry: _ImageEntry, part: _Parsed) -> tuple[Path | None, list[str]]:
        name = entry.file_name.replace("\\", "/")
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            return None, []
        root = self.source.root
        assert root is not None
        folders = [root, root / "images", part.path.parent, part.path.parent / "images"]
        match = SPLIT_FILE.match(part.path.stem)
        if match:  # COCO layout: annotations/instances_train2017.json + train2017/xxx.jpg
            for word in dict.fromkeys([match.group("split") + (match.group("year") or ""), part.split]):
                folders += [root / word, root / "images" / word]
        tried: list[str] = []
        for folder in dict.fromkeys(folders):
            candidate = folder / name
            try:
                if candidate.is_file():
                    return candidate, tried
            except (OSError, ValueError):  # a NUL byte or a name too long for the file system
                pass
            tried.append(self._rel(candidate))
        return None, tried

    def _open_image(self, entry: _ImageEntry, part: _Parsed) -> tuple[Image.Image | None, Path, int, int] | None:
        """(the decoded RGB image, or None when images are not kept; its path; width; height),
        or None when the image is skipped with a warning."""
        at = f"{part.where}: image {entry.id} '{entry.file_name}'"
        path, tried = self._image_path(entry, part)
        if path is None:
            if not tried:
                self.warn(
                    f"{at}: the file name leaves the dataset folder (absolute or '..'); "
                    "image skipped — use a path relative to the dataset"
                )
            else:
                self.warn(
                    f"{at}: file not found (looked for {', '.join(tried[:4])}); "
                    "image skipped — add the file or remove the image entry"
                )
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.warn(f"{at}: cannot read the file ({os_reason(exc)}); image skipped")
            return None
        # Pillow warns (and raises past 2×) on decompression bombs; as errors here, so a
        # bomb is refused before its pixels are ever allocated.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    width, height = probe.size  # from the header only: nothing decoded yet
                    if width * height > self.max_image_pixels:
                        self.warn(
                            f"{at}: the header says {width}×{height} = {width * height} pixels, more than "
                            f"max_image_pixels={self.max_image_pixels} (a decompression bomb or far too "
                            "large an image); image skipped, not decoded — resize it"
                        )
                        return None
                    probe.verify()
                with Image.open(io.BytesIO(data)) as reopened:  # verify() leaves the image unusable
                    width, height = upright_size(reopened)  # EXIF is read after verify(), which must come first
                    if self.keep_images and not self.lazy:
                        image = upright_rgb(reopened)  # decodes: the one decode this image gets
                    else:  # decode to find truncated data as a load would, then let the pixels go
                        check_decodes(reopened)
                        image = LazyImage(path, (width, height)) if self.keep_images else None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            self.warn(
                f"{at}: refused as a decompression bomb ({exc}); image skipped, not decoded — resize it"
            )
            return None
        except Exception as exc:  # noqa: BLE001 — Pillow raises many types on corrupt data; each becomes a named warning
            self.warn(
                f"{at}: cannot be decoded ({type(exc).__name__}: {exc}); image skipped — replace the file"
            )
            return None
        if isinstance(image, Image.Image) and self._over_budget(image):
            image = LazyImage(path, (width, height))
        if (entry.width, entry.height) not in ((None, None), (width, height)):
            self.warn(
                f"{at}: the JSON says {entry.width}×{entry.height} but the image is {width}×{height}; "
                'using the real size — fix "width"/"height" in the JSON'
            )
        return image, path, width, height

    def _over_budget(self, image: Image.Image) -> bool:
        """Count a decoded image; past the eager budget, turn every sample so far lazy (and
        say True: this image too)."""
        self.decoded_bytes += rgb_bytes(image.size)
        if self.eager_budget is None or self.decoded_bytes <= self.eager_budget:
            return False
        for sample in self.made:
            sample.image = LazyImage(sample.path, (sample.width, sample.height))
        self.lazy = True
        logger.info(
            "%s: the decoded images pass %d MB, so images are decoded when used, through a cache of %d MB "
            "(set %s to change it)", self.label, self.eager_budget >> 20, CACHE.max_bytes >> 20, CACHE_ENV,
        )
        return True

    # ---- targets ---------------------------------------------------------------------

    def build_samples(self, part: _Parsed) -> list[Sample]:
        samples: list[Sample] = []
        split_objects = 0
        for entry in part.images:
            captions = [c for c in part.captions.get(entry.id, []) if c]
            if self.task == "caption" and not captions:
                self.warn(
                    f"{part.where}: image {entry.id} '{entry.file_name}' has no caption, "
                    "which task caption needs; image skipped"
                )
                continue
            opened = self._open_image(entry, part)
            if opened is None:
                continue
            image, path, width, height = opened
            target = empty_target(width, height)
            if captions:
                target["text"] = captions[0]
            for ann_id, ann in part.instances.get(entry.id, []):
                at = part.ann_at(ann_id, entry)
                instance = self._instance(ann, at, width, height, part.categories[ann["category_id"]][1])
                if instance is None:
                    continue
                box, parts, keypoints = instance
                target["boxes"].append(box)
                target["labels"].append(part.categories[ann["category_id"]][0])
                area = ann.get("area")
                target["areas"].append(float(area) if _is_number(area) and area > 0 else _box_area(box))
                if self.task == "segment":
                    # The codec writes one polygon per object: it learns the largest part, and
                    # the metrics score the whole mask (pipeline.structures, "mask_parts").
                    target["masks"].append(max(parts, key=_polygon_area))
                    target["mask_parts"].append(parts)
                    split_objects += len(parts) > 1
                if self.task == "keypoints":
                    target["keypoints"].append(keypoints)
                    target["points"].extend([[x, y] for x, y, v in keypoints if v > 0])
                self.instances_kept += 1
            for ann_id, ann in part.crowds.get(entry.id, []):
                at = part.ann_at(ann_id, entry, "iscrowd=1")
                box = self._crowd_box(ann, at, width, height)
                if box is not None:
                    target["crowd"].append({"box": box, "label": part.categories[ann["category_id"]][0]})
            kind = part.kinds.get(entry.id, "full")
            if kind == "points":
                self._fill_clicks(target, part, entry, width, height)
            elif kind == "counts":
                target["counts"] = dict(part.counts[entry.id])
            elif kind == "full" and self.task in WEAK_TASKS:
                target["counts"] = dict(Counter(target["labels"]))
            samples.append(
                Sample(
                    id=entry.id,
                    file_name=entry.file_name,
                    width=width,
                    height=height,
                    target=target,
                    image=image,
                    path=path,
                    label_kind=kind,
                )
            )
            self.made.append(samples[-1])
        if split_objects:
            self.warn(
                f"{part.where}: {split_objects} object{'s have' if split_objects > 1 else ' has'} a mask in "
                "several parts (split by an occluder); the model learns and writes one polygon per object, "
                "the largest part, and drops the others — evaluation scores every part, so such objects "
                "score below 1.0 mask IoU even when the largest part is exact"
            )
        return samples

    def _fill_clicks(
        self, target: dict[str, Any], part: _Parsed, entry: _ImageEntry, width: int, height: int
    ) -> None:
        """Points and point labels of a clicked image; its counts when every click names its
        category (a click without one says "an object", not which), else those of "counts"."""
        for ann_id, ann in part.clicks[entry.id]:
            x, y = (float(v) for v in ann["point"])
            if not (-BOX_TOLERANCE <= x <= width + BOX_TOLERANCE and -BOX_TOLERANCE <= y <= height + BOX_TOLERANCE):
                self.warn(
                    f"{part.where}: annotation {ann_id} (image {entry.id} '{entry.file_name}') has a click at "
                    f"({x:g}, {y:g}) outside the {width}×{height} image; annotation dropped — fix the click"
                )
                continue
            target["points"].append([min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))])
            cid = ann.get("category_id")
            target["point_labels"].append(part.categories[cid][0] if cid is not None else "")
        if all(target["point_labels"]):
            target["counts"] = dict(Counter(target["point_labels"]))
        else:
            target["counts"] = dict(part.counts.get(entry.id, {}))

    def _crowd_box(self, ann: dict[str, Any], at: str, width: int, height: int) -> list[float] | None:
        """The xyxy box of a crowd region, clipped to the image; None (with a warning) without one."""
        if ann.get("bbox") is None:
            self.warn(f'{at} has no "bbox"; crowd region dropped — add its box so evaluation can ignore it')
            return None
        x, y, w, h = self._numbers(ann, "bbox", at, length=4)
        box = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
        if box[2] <= box[0] or box[3] <= box[1]:
            self.warn(f"{at} has a box {_fmt([x, y, w, h])} with no area inside the {width}×{height} image; "
                      "crowd region dropped")  # fmt: skip
            return None
        return box

    def _numbers(
        self, ann: dict[str, Any], key: str, at: str, *, length: int | None = None, multiple: int = 1
    ) -> list[float]:
        value = ann[key]
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise DataError(
                f'{at}: "{key}" must be a list of finite numbers, got {_show(value)}; fix the annotation'
            )
        if (length is not None and len(value) != length) or len(value) % multiple:
            expected = f"{length} numbers" if length is not None else f"a multiple of {multiple} numbers"
            raise DataError(
                f'{at}: "{key}" has {len(value)} numbers, expected {expected}; fix the annotation'
            )
        return [float(v) for v in value]

    def _instance(
        self, ann: dict[str, Any], at: str, width: int, height: int, keypoint_names: list[str]
    ) -> tuple[list[float], list[float], list[list[Any]]] | None:
        """(box, polygon, keypoints) in canonical form, or None when dropped (with a warning)."""
        needed = _REQUIRED.get(self.task)
        if needed is not None and ann.get(needed) is None:
            self.warn(f'{at} has no "{needed}", which task {self.task} needs; annotation dropped')
            return None
        parts: list[list[float]] = []
        keypoints: list[list[Any]] = []
        if self.task == "segment":
            parts_or_none = self._mask(ann["segmentation"], at, width, height)
            if parts_or_none is None:
                return None
            parts = parts_or_none
        if self.task == "keypoints":
            flat = self._numbers(ann, "keypoints", at, multiple=3)
            if keypoint_names and len(flat) != 3 * len(keypoint_names):
                raise DataError(
                    f'{at}: "keypoints" has {len(flat) // 3} keypoints but its category names '
                    f"{len(keypoint_names)} ({', '.join(keypoint_names)}); "
                    "give x, y, v for each named keypoint"
                )
            for i in range(0, len(flat), 3):
                x, y, v = flat[i : i + 3]
                if v > 0 and not (
                    -BOX_TOLERANCE <= x <= width + BOX_TOLERANCE
                    and -BOX_TOLERANCE <= y <= height + BOX_TOLERANCE
                ):
                    self.warn(
                        f"{at}: keypoint {i // 3} at ({x:g}, {y:g}) is outside the {width}×{height} image; "
                        "annotation dropped — fix the keypoint"
                    )
                    return None
                if v > 0:
                    x, y = min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))
                keypoints.append([x, y, int(v)])

        if ann.get("bbox") is not None:
            x, y, w, h = self._numbers(ann, "bbox", at, length=4)
            if w <= 0 or h <= 0:
                self.warn(
                    f"{at} has a box {_fmt([x, y, w, h])} with non-positive width or height; "
                    "annotation dropped — fix the box or drop the annotation"
                )
                return None
            box = [x, y, x + w, y + h]
        elif parts:  # segment: derive the box from the polygons, every part
            xs = [v for part in parts for v in part[0::2]]
            ys = [v for part in parts for v in part[1::2]]
            box = [min(xs), min(ys), max(xs), max(ys)]
        elif keypoints and any(v > 0 for _, _, v in keypoints):
            xs = [x for x, _, v in keypoints if v > 0]
            ys = [y for _, y, v in keypoints if v > 0]
            box = [min(xs), min(ys), max(xs) + 1, max(ys) + 1]  # +1: a lone keypoint is still a 1-px box
        elif self.task == "caption":
            return None  # caption datasets may carry instance annotations without boxes: nothing to keep
        else:
            self.warn(f'{at} has no "bbox" and nothing to derive one from; annotation dropped')
            return None

        x1, y1, x2, y2 = box
        if (
            x1 < -BOX_TOLERANCE
            or y1 < -BOX_TOLERANCE
            or x2 > width + BOX_TOLERANCE
            or y2 > height + BOX_TOLERANCE
        ):
            self.warn(
                f"{at} has a box [x, y, w, h] = {_fmt([x1, y1, x2 - x1, y2 - y1])} "
                f"outside the {width}×{height} image; "
                "annotation dropped — fix the box or drop the annotation"
            )
            return None
        # Clip the overhang the tolerance allowed (annotation tools often round to x + w = W + 0.5).
        box = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
        if box[2] <= box[0] or box[3] <= box[1]:
            self.warn(
                f"{at} has a box {_fmt(box)} with no area inside the {width}×{height} image; "
                "annotation dropped"
            )
            return None
        return box, parts, keypoints

    def _mask(self, segmentation: Any, at: str, width: int, height: int) -> list[list[float]] | None:
        """Every part of the instance's mask as flat polygons, clipped to the image; None
        (with a warning) when it has none or leaves the image."""
        if isinstance(segmentation, dict):
            polygons = self._rle_polygons(segmentation, at, width, height)
            if polygons is None:
                return None
        else:
            if not isinstance(segmentation, list) or not segmentation:
                raise DataError(
                    f'{at}: "segmentation" must be a list of polygons or an RLE object; fix the annotation'
                )
            # COCO nests polygons in a list; some tools write one flat polygon: accept both.
            polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
            valid = []
            for k, poly in enumerate(polygons):
                if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                    raise DataError(
                        f"{at}: segmentation polygon {k} must be a list of numbers; fix the annotation"
                    )
                if len(poly) >= 6 and len(poly) % 2 == 0:
                    valid.append([float(v) for v in poly])
            if not valid:
                self.warn(f"{at}: no segmentation polygon has 3 or more points; annotation dropped")
                return None
            polygons = valid
        xs = [v for polygon in polygons for v in polygon[0::2]]
        ys = [v for polygon in polygons for v in polygon[1::2]]
        if (
            min(xs) < -BOX_TOLERANCE
            or min(ys) < -BOX_TOLERANCE
            or max(xs) > width + BOX_TOLERANCE
            or max(ys) > height + BOX_TOLERANCE
        ):
            self.warn(
                f"{at}: the segmentation polygon leaves the {width}×{height} image; "
                "annotation dropped — fix the polygon"
            )
            return None
        return [
            [min(max(v, 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(polygon)]
            for polygon in polygons
        ]

    def _rle_polygons(self, rle: dict[str, Any], at: str, width: int, height: int) -> list[list[float]] | None:
        from pycocotools import mask as mask_utils  # C extension; only RLE datasets need it

        size, counts = rle.get("size"), rle.get("counts")
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        ) or not isinstance(counts, (str, list)):
            raise DataError(
                f'{at}: RLE segmentation needs "size": [height, width] and "counts"; fix the annotation'
            )
        if size != [height, width]:
            self.warn(
                f"{at}: the RLE mask is {size[1]}×{size[0]} but the image is {width}×{height}; "
                "annotation dropped"
            )
            return None
        # pycocotools trusts its input (an empty or short "counts" decodes to garbage memory),
        # so the run lengths are parsed and checked here before it sees them.
        try:
            runs = rle_string_counts(counts) if isinstance(counts, str) else counts
            if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
                raise ValueError("run lengths must be non-negative integers")
            if sum(runs) != height * width:
                raise ValueError(
                    f"the runs cover {sum(runs)} pixels, not {height}×{width} = {height * width}"
                )
        except ValueError as exc:
            raise DataError(f"{at}: the RLE segmentation is invalid ({exc}); fix the annotation") from exc
        encoded = mask_utils.frPyObjects({"size": size, "counts": runs}, height, width)
        with warnings.catch_warnings():  # pycocotools' own NumPy-2 DeprecationWarning is not ours to show
            warnings.simplefilter("ignore", DeprecationWarning)
            binary = np.asarray(mask_utils.decode(encoded), dtype=bool)
        if binary.ndim == 3:
            binary = binary[:, :, 0]
        polygons = mask_to_polygons(binary)
        if not polygons:
            self.warn(f"{at}: the RLE mask is empty; annotation dropped")
            return None
        return polygons

    def check_usable(self, parts: dict[str, list[Sample]], held_out_wanted: bool = True) -> None:
        total = sum(len(samples) for samples in parts.values())
        if total == 0:
            raise DataError(
                f"{self.label}: no usable image (see the warnings above: {len(self.warnings)}); "
                "add images, or fix the ones that were skipped"
                + (f" — first: {self.warnings[0]}" if self.warnings else "")
            )
        everything = [s for samples in parts.values() for s in samples]
        if not any(s.label_kind == "full" for s in everything):  # before the check below blames "bbox"
            check_evaluable(self.label, {"all": everything}, held_out_wanted)
        if self.task in _REQUIRED and self.instances_kept == 0:
            raise DataError(
                f'{self.label}: no annotation has a usable "{_REQUIRED[self.task]}", which task '
                f"{self.task} needs; check the task or the annotations"
            )
