"""Datasets: COCO, YOLO, Pascal VOC and Hugging Face imagefolder folders / ZIPs, and
synthetic://, loaded into the canonical ``Dataset``.

Modules: ``sources`` (where a set comes from: folders, ZIPs, remote), ``formats`` with
``yolo`` / ``voc`` / ``hf_folder`` (other formats converted to COCO's shape), ``layout``
(which COCO files), ``coco`` (the one reader: checks, images, canonical targets), ``masks``
(RLE and polygons), ``splits`` (train / val / test), ``images`` (upright RGB, lazy decoding).

>>> from pipeline.data import load_dataset
>>> ds = load_dataset("synthetic://retail-shelf?n=8&seed=0", "detect")
>>> sorted(ds.splits)
['test', 'train', 'val']
"""

from pipeline.data.coco import load_dataset
from pipeline.data.errors import DataError
from pipeline.data.masks import mask_to_polygon
from pipeline.data.sources import parse_synthetic_uri, synthetic_uri
from pipeline.data.splits import check_evaluable, label_summary, split_samples
from pipeline.data.synthetic import KINDS, generate, write_coco

__all__ = [
    "KINDS",
    "DataError",
    "check_evaluable",
    "generate",
    "label_summary",
    "load_dataset",
    "mask_to_polygon",
    "parse_synthetic_uri",
    "split_samples",
    "synthetic_uri",
    "write_coco",
]
