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

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.data.coco.checks import IMAGE_MODES, eager_budget
from pipeline.data.coco.opening import ImageOpening
from pipeline.data.coco.parse import JsonChecks
from pipeline.data.coco.targets import TargetBuilding
from pipeline.data.errors import DataError
from pipeline.data.formats import convert, detect_format
from pipeline.data.layout import dataset_root, find_annotation_files
from pipeline.data.sources import Source, remove_extracted, resolve_source
from pipeline.data.splits import SPLITS, check_evaluable, check_fractions, split_samples
from pipeline.data.synthetic import generate
from pipeline.structures import TASKS, Dataset, Sample

logger = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------ reader


class _CocoReader(JsonChecks, ImageOpening, TargetBuilding):
    """One dataset's reader: the JSON checks (``parse``), the images (``opening``) and the
    targets (``targets``) share its state."""

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

