"""Small COCO sets cut from real photographs that ship inside scikit-image, labelled by
classical segmentation: the "user's own photos" of the tests and of benchmarks/real_images.py.

Each photograph is segmented once (threshold, fill, label), then cut into square tiles. The
tiles of each split come from their own band of the photograph, so no held-out tile overlaps a
training one. An object is boxed in a tile when at least half of its pixels fall inside the
tile; a sliver cut by the edge is left unlabelled, as a person labelling the tile would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.structures import Dataset, Sample, empty_target

SETS = ("coins", "nuclei", "galaxies")
# (along the longer side, along the shorter side), as fractions
REGIONS = {"train": ((0.0, 0.6), (0.0, 1.0)), "val": ((0.6, 1.0), (0.0, 0.5)), "test": ((0.6, 1.0), (0.5, 1.0))}


def _objects(fg: np.ndarray, min_area: int) -> np.ndarray:
    """Connected components of ``fg`` of at least ``min_area`` pixels, numbered from 1."""
    from skimage import measure

    return _objects_from_labels(measure.label(fg), min_area)


def _objects_from_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """``labels`` without regions under ``min_area`` pixels or spanning a quarter of the image."""
    from skimage import measure

    labels = labels.copy()
    drop = np.bincount(labels.ravel()) < min_area
    # a component spanning a quarter of the photograph is background or a border, not an object
    for region in measure.regionprops(labels):
        y0, x0, y1, x1 = region.bbox
        drop[region.label] |= max(y1 - y0, x1 - x0) > min(labels.shape) / 4
    drop[0] = False
    labels[drop[labels]] = 0
    return measure.label(labels, background=0)


def _labels(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(RGB photograph, integer label map, category name)."""
    from scipy import ndimage as ndi
    from skimage import color, data, filters, measure

    if name == "coins":  # 24 coins on a dark tray (303 x 384); touching coins split by watershed
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        gray = data.coins()
        # scikit-image's own recipe for this photograph (uneven light defeats one threshold):
        # flood the Sobel elevation from sure-background and sure-coin markers
        markers = np.zeros_like(gray, dtype=int)
        markers[gray < 30], markers[gray > 150] = 1, 2
        fg = watershed(filters.sobel(gray), markers) == 2
        fg = ndi.binary_fill_holes(ndi.binary_opening(fg, iterations=2))
        dist = ndi.distance_transform_edt(fg)
        peaks = peak_local_max(dist, min_distance=12, labels=measure.label(fg), exclude_border=False)
        markers = np.zeros_like(dist, dtype=int)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        split = watershed(-dist, markers, mask=fg)
        return np.stack([gray] * 3, -1), _objects_from_labels(split, 150), "coin"
    if name == "nuclei":  # stained cell nuclei in tissue (512 x 512)
        rgb = data.immunohistochemistry()
        hema = color.rgb2hed(rgb)[..., 0]
        fg = ndi.binary_fill_holes(ndi.binary_opening(hema > filters.threshold_otsu(hema), iterations=2))
        return rgb, _objects(fg, 60), "nucleus"
    if name == "galaxies":  # Hubble deep field (872 x 1000): galaxies and stars as blobs
        rgb = data.hubble_deep_field()
        return rgb, _objects(filters.gaussian(color.rgb2gray(rgb), 1.5) > 0.12, 40), "galaxy"
    raise ValueError(f"unknown real-image set {name!r}; use one of {', '.join(SETS)}")


def _boxes(labels: np.ndarray, x0: int, y0: int, size: int, areas: np.ndarray) -> list[list[float]]:
    tile = labels[y0 : y0 + size, x0 : x0 + size]
    boxes = []
    for lab in np.unique(tile):
        if lab == 0:
            continue
        ys, xs = np.nonzero(tile == lab)
        if len(xs) * 2 < areas[lab]:
            continue
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
    return boxes


def build(name: str, n: int = 120, *, tile: int = 96, seed: int = 0, max_objects: int | None = None,
          counts: dict[str, int] | None = None) -> Dataset:  # fmt: skip
    """``n`` tiles split 60/20/20 (or ``counts`` per split), each split from its own region of
    the photograph; tiles holding more than ``max_objects`` boxed objects are skipped (None
    keeps all)."""
    counts = counts or {"train": round(n * 0.6), "val": round(n * 0.2), "test": round(n * 0.2)}
    rgb, labels, category = _labels(name)
    areas = np.bincount(labels.ravel())
    h, w = labels.shape
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Sample]] = {}
    next_id = 1
    along_x = w >= h  # regions are cut along the longer side first
    long_, short = (w, h) if along_x else (h, w)
    for split, ((l0, l1), (s0, s1)) in REGIONS.items():
        want = counts[split]
        lo, lhi = int(l0 * long_), int(l1 * long_) - tile
        so, shi = int(s0 * short), int(s1 * short) - tile
        if lhi < lo or shi < so:
            raise ValueError(f"{name}: the photograph is too small for {tile}-pixel tiles in the {split} region")
        samples, tries = [], 0
        while len(samples) < want and tries < want * 50:
            tries += 1
            a, b = int(rng.integers(lo, lhi + 1)), int(rng.integers(so, shi + 1))
            x0, y0 = (a, b) if along_x else (b, a)
            boxes = _boxes(labels, x0, y0, tile, areas)
            if not boxes or (max_objects is not None and len(boxes) > max_objects):
                continue
            target = empty_target(tile, tile)
            target["boxes"], target["labels"] = boxes, [category] * len(boxes)
            image = Image.fromarray(np.ascontiguousarray(rgb[y0 : y0 + tile, x0 : x0 + tile]).astype(np.uint8)).convert("RGB")
            samples.append(Sample(id=next_id, file_name=f"{split}/{name}-{next_id:04d}.png", width=tile, height=tile,
                                  target=target, image=image))  # fmt: skip
            next_id += 1
        splits[split] = samples
    return Dataset(name=f"real-{name}", task="detect", categories=[category], splits=splits)


def write(name: str, folder: Path, **kw) -> Path:
    """The set as a COCO folder with ``train.json`` / ``val.json`` / ``test.json``."""
    from pipeline.data.synthetic import write_coco

    return write_coco(build(name, **kw), folder, per_split=True)
