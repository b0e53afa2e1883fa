"""The job says, before training, how the objects' sizes compare with a location bin."""

from __future__ import annotations

from pipeline.config import build_config
from pipeline.job import log_object_sizes
from pipeline.reporter import BaseReporter
from pipeline.sizing import sized
from pipeline.structures import Dataset, Sample, empty_target


class Lines(BaseReporter):
    def __init__(self):
        self.lines = []

    def log(self, message, *, level="info", stage=None):
        self.lines.append((level, message))


def _set(side: int) -> Dataset:
    samples = []
    for i in range(10):
        t = empty_target(200, 200)
        t["boxes"], t["labels"] = [[10, 10, 10 + side, 10 + side]], ["dot"]
        samples.append(Sample(id=i, file_name=f"{i}.png", width=200, height=200, target=t))
    return Dataset(name="dots", task="detect", categories=["dot"], splits={"train": samples})


def test_boxes_under_one_bin_warn_with_the_fix_and_normal_ones_are_described():
    fixed = build_config({"num_bins": 32, "image_size": 64})
    rep = Lines()
    log_object_sizes(fixed, _set(4), rep)  # 4 px of 200: 2 %, under a 1/32 bin
    ((level, line),) = rep.lines
    assert level == "warning" and "10 of 10 boxes are under one bin" in line and "Raise num_bins (e.g. 128)" in line
    # left to auto, the job takes that advice itself before it says anything
    rep = Lines()
    log_object_sizes(sized(build_config({}), _set(4)), _set(4), rep)
    ((level, line),) = rep.lines
    assert level == "info" and "a location bin is 0.8% (num_bins 128)" in line
    rep = Lines()
    log_object_sizes(fixed, _set(40), rep)
    ((level, line),) = rep.lines
    assert level == "info" and line.startswith("objects: the smaller side of a box is 20.0% of the image at the median")
    assert "the built-in model sees 64 px images (12.8 px for the small ones)" in line
