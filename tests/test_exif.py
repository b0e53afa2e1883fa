"""A phone photo stored sideways with an EXIF orientation tag is read upright, as its labels were drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data import load_dataset
from pipeline.data.images import EXIF_ORIENTATION, upright_rgb, upright_size


def _sideways_photo(path, orientation: int, fmt: str = "JPEG") -> None:
    """A 40×80 upright picture (a red patch at the top left, x 4–14, y 6–26) stored as the
    sensor would store it for ``orientation``, with the tag that turns it back."""
    upright = np.zeros((80, 40, 3), np.uint8)
    upright[6:26, 4:14] = (255, 0, 0)
    img = Image.fromarray(upright)
    # exif_transpose applies the inverse of these: store what it turns back into `upright`
    stored = {1: img, 6: img.transpose(Image.Transpose.ROTATE_90), 8: img.transpose(Image.Transpose.ROTATE_270),
              3: img.transpose(Image.Transpose.ROTATE_180)}[orientation]  # fmt: skip
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    stored.save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize(("orientation", "fmt"), [(1, "JPEG"), (3, "JPEG"), (6, "JPEG"), (8, "JPEG"), (6, "PNG")])
def test_a_sideways_photo_is_read_upright_with_its_boxes_on_the_right_pixels(tmp_path, orientation, fmt):
    _sideways_photo(tmp_path / "photo.jpg", orientation, fmt)  # Pillow reads by content, not by extension
    raw = Image.open(tmp_path / "photo.jpg")
    assert upright_size(raw) == (40, 80)
    assert raw.size == ((80, 40) if orientation in (6, 8) else (40, 80))
    doc = {"images": [{"id": 1, "file_name": "photo.jpg", "width": 40, "height": 80}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 6, 10, 20]}],
           "categories": [{"id": 1, "name": "patch"}]}  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    ds = load_dataset(tmp_path, "detect", fractions=(1.0, 0.0, 0.0))
    (s,) = ds.splits["train"]
    assert (s.width, s.height) == (40, 80) and not ds.warnings  # no size mismatch against the JSON
    pixels = np.asarray(s.image)
    x1, y1, x2, y2 = (int(v) for v in s.target["boxes"][0])
    inside = pixels[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
    assert inside[0] > 200 and inside[1] < 60  # the box holds the red patch, not the black
    assert pixels[:, 20:].mean() < 10  # and the right half is black, as upright
    (lazy,) = load_dataset(tmp_path, "detect", fractions=(1.0, 0.0, 0.0), images="lazy").splits["train"]
    assert np.array_equal(np.asarray(lazy.image), pixels)  # a big set, decoded on use, is turned upright too


def test_an_image_without_exif_or_with_a_broken_tag_is_shown_as_stored(tmp_path):
    img = Image.new("RGB", (30, 20), (0, 128, 0))
    assert upright_size(img) == (30, 20) and upright_rgb(img).size == (30, 20)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 42  # not an orientation
    img.save(tmp_path / "odd.jpg", exif=exif)
    odd = Image.open(tmp_path / "odd.jpg")
    assert upright_size(odd) == (30, 20) and upright_rgb(odd).size == (30, 20)
