"""Datasets: COCO folders / ZIPs / synthetic:// loaded into the canonical ``Dataset``.

>>> from pipeline.data import load_dataset
>>> ds = load_dataset("synthetic://retail-shelf?n=8&seed=0", "detect")
>>> sorted(ds.splits)
['test', 'train', 'val']
"""

from pipeline.data.coco import check_evaluable, label_summary, load_dataset, mask_to_polygon, split_samples
from pipeline.data.errors import DataError
from pipeline.data.sources import parse_synthetic_uri, synthetic_uri
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
