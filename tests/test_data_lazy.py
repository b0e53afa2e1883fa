"""Big sets load lazily: images decode on use through a cache bounded in bytes, the same
pixels as an eager load, and training rows read them without copying them into a table."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.augment import hflip
from pipeline.data import load_dataset
from pipeline.data.images import ImageCache, LazyImage
from pipeline.stages.common import IMAGE_INDEX, sft_rows, with_images
from pipeline.structures import ImageRef

W, H = 48, 32


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))


def _coco(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": W, "height": H})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10 + i, 8]})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cola"}]}
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder


def _samples(ds):
    return [s for split in ds.splits.values() for s in split]


def test_a_lazy_load_keeps_paths_and_decodes_the_same_pixels_on_use(tmp_path):
    folder = _coco(tmp_path / "set")
    eager = _samples(load_dataset(folder, "detect", images="eager"))
    lazy = _samples(load_dataset(folder, "detect", images="lazy"))
    assert all(isinstance(s.image, Image.Image) and not isinstance(s.pixels, ImageRef) for s in eager)
    assert all(isinstance(s.pixels, LazyImage) for s in lazy)
    assert [s.target for s in lazy] == [s.target for s in eager]
    for e, z in zip(eager, lazy, strict=True):
        assert z.image.mode == "RGB" and np.array_equal(np.asarray(z.image), np.asarray(e.image))
    # a replaced sample (pseudo-labels, stage 3) stays lazy rather than pinning its pixels
    again = pickle.loads(pickle.dumps(lazy[0]))  # and a lazy sample crosses processes as its path
    assert isinstance(again.pixels, LazyImage) and np.array_equal(np.asarray(again.image), np.asarray(eager[0].image))
    assert isinstance(dataclasses.replace(lazy[0], label_kind="full").pixels, LazyImage)


def test_auto_turns_the_whole_set_lazy_once_decoded_images_pass_the_budget(tmp_path, monkeypatch, caplog):
    folder = _coco(tmp_path / "set")
    assert not any(isinstance(s.pixels, ImageRef) for s in _samples(load_dataset(folder, "detect")))
    monkeypatch.setenv("DREAMFORGE_EAGER_IMAGES_MB", str(3.5 * W * H * 3 / 2**20))  # three and a half images
    with caplog.at_level(logging.INFO, logger="pipeline.data.coco"):
        samples = _samples(load_dataset(folder, "detect"))
    assert all(isinstance(s.pixels, LazyImage) for s in samples)  # the first three too
    assert "images are decoded when used" in caplog.text


def test_the_cache_is_bounded_in_bytes_and_drops_the_least_recently_used(tmp_path):
    folder = _coco(tmp_path / "set")
    paths = sorted((folder / "images").glob("*.png"))
    cache = ImageCache(max_bytes=2 * W * H * 3)  # room for two images
    images = [LazyImage(p, (W, H), cache=cache) for p in paths]
    for image in images:
        image.decode()
        assert cache.bytes <= cache.max_bytes
    assert cache.misses == len(paths) and cache.hits == 0
    images[-1].decode()  # the newest is kept
    images[0].decode()  # the oldest was dropped
    assert (cache.hits, cache.misses) == (1, len(paths) + 1)
    assert ImageCache(max_bytes=W * H * 3 - 1).get("big", images[0]._read) is not None  # too big to keep, still given


def test_a_mirrored_lazy_image_stays_lazy_and_decodes_flipped(tmp_path):
    (s,) = _samples(load_dataset(_coco(tmp_path / "set", n=1), "detect", fractions=(1, 0, 0), images="lazy"))
    flipped = hflip(s)
    assert isinstance(flipped.pixels, LazyImage)
    assert np.array_equal(np.asarray(flipped.image), np.asarray(s.image)[:, ::-1])
    assert flipped.target["boxes"] == [[W - 12.0, 2.0, W - 2.0, 10.0]]


def test_training_rows_read_each_samples_image_without_storing_it(tmp_path):
    from pipeline.codec import Codec

    samples = _samples(load_dataset(_coco(tmp_path / "set"), "detect", images="lazy"))
    table = with_images(sft_rows(samples, Codec("detect", ["cola"])), samples)
    assert "image" not in table.column_names and IMAGE_INDEX in table.column_names  # no pixels in the table
    for i, s in enumerate(samples):
        assert np.array_equal(np.asarray(table[i]["image"]), np.asarray(s.image))
    assert table[i]["completion"][0]["content"]  # the rest of the row is as before


def test_a_truncated_jpeg_is_still_caught_by_a_lazy_load(tmp_path):
    folder = _coco(tmp_path / "set", n=3)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / "images" / "0.png", format="JPEG")
    data = (folder / "images" / "0.png").read_bytes()
    (folder / "images" / "0.png").write_bytes(data[: len(data) * 2 // 3])
    ds = load_dataset(folder, "detect", images="lazy")
    assert len(_samples(ds)) == 2
    assert any("'0.png': cannot be decoded" in w for w in ds.warnings), ds.warnings


def test_prediction_reads_a_lazy_set_one_batch_at_a_time(tmp_path):
    from pipeline.data.images import CACHE
    from pipeline.predict import SampleImages

    samples = _samples(load_dataset(_coco(tmp_path / "set"), "detect", images="lazy"))
    CACHE.clear()
    misses = CACHE.misses
    images = SampleImages(samples)
    assert len(images) == len(samples) and CACHE.misses == misses  # nothing decoded up front
    batch = images[0:2]
    assert CACHE.misses == misses + 2 and np.array_equal(np.asarray(batch[1]), np.asarray(samples[1].image))


def _photo(path: Path, size=(800, 600), orientation: int = 1) -> Path:
    """A JPEG with a red patch in its top-left corner (as stored) and an optional EXIF orientation."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(60, 200, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 4, : size[0] // 4] = (230, 20, 20)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def _processors():
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from pipeline.models.qwen_compat import qwen_image_processor

    class Holder:  # what a model's processor offers: its image processor
        def __init__(self, ip):
            self.image_processor = ip

    qwen = qwen_image_processor(64, 8)  # Qwen2.5-VL's resize: sides multiples of 16, pixels within bounds
    qwen.min_pixels, qwen.size = 16 * 16, {"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    return {"siglip": Holder(SiglipImageProcessorPil(size={"height": 64, "width": 64}, do_resize=True)),
            "qwen": Holder(qwen), "qwen-tiny": Holder(qwen_image_processor(64, 8))}  # fmt: skip


@pytest.mark.parametrize("family", ["siglip", "qwen"])
def test_a_big_jpeg_decodes_at_reduced_scale_to_what_the_processor_would_make(tmp_path, family):
    from pipeline.data.images import model_input_size

    processor = _processors()[family]
    path = _photo(tmp_path / "p.jpg")
    size, resample = model_input_size(processor)
    fit = size(800, 600)
    assert fit == ((64, 64) if family == "siglip" else (64, 48))  # qwen: 4:3 kept, sides multiples of 16
    # our tiny Qwen (min_pixels == max_pixels) would scale a 64×48 image up again: handed over whole
    tiny_size, _ = model_input_size(_processors()["qwen-tiny"])
    assert tiny_size(800, 600) is None
    cache = ImageCache(max_bytes=1 << 30)
    small = LazyImage(path, (800, 600), cache=cache).decode(fit=fit, resample=resample)
    assert small.size == fit and cache.bytes == fit[0] * fit[1] * 3  # the cache holds the small image only
    whole = LazyImage(path, (800, 600), cache=ImageCache(0)).decode()
    ip = processor.image_processor
    mine, theirs = (np.asarray(ip(images=[im], return_tensors="np")["pixel_values"]) for im in (small, whole))
    assert mine.shape == theirs.shape  # the processor's resize had nothing left to do: same geometry
    assert np.abs(mine - theirs).mean() < 0.02  # and the pixels agree (1/8-scale DCT against a full decode)
    # drafted: decoding skipped most of the pixels (PIL reports the scaled size it decoded at)
    with Image.open(path) as raw:
        raw.draft("RGB", fit)
        assert raw.size == (100, 75)


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_sideways_jpeg_decoded_at_reduced_scale_is_upright(tmp_path, orientation):
    path = _photo(tmp_path / "p.jpg", orientation=orientation)
    image = LazyImage(path, (600, 800), cache=ImageCache(0)).decode(fit=(48, 64))
    whole = LazyImage(path, (600, 800), cache=ImageCache(0)).decode().resize((48, 64), Image.Resampling.BICUBIC)
    assert image.size == (48, 64)
    assert np.abs(np.asarray(image).astype(int) - np.asarray(whole)).mean() < 6
    red = np.asarray(image)[..., 0] > 200
    corner = (slice(0, 16), slice(36, 48)) if orientation == 6 else (slice(48, 64), slice(0, 12))
    assert red[corner].mean() > 0.9 and red.mean() < 0.1  # the stored top-left patch, where upright puts it


def test_training_rows_come_at_the_models_input_size_lazy_or_decoded(tmp_path):
    from pipeline.codec import Codec

    folder = _coco(tmp_path / "set", n=2)
    for i in range(2):
        _photo(folder / "images" / f"{i}.png", size=(W, H))  # JPEG bytes; the name does not matter
    lazy = _samples(load_dataset(folder, "detect", images="lazy"))
    eager = _samples(load_dataset(folder, "detect", images="eager"))
    processor = _processors()["siglip"]
    codec = Codec("detect", ["cola"])
    rows = {"lazy": with_images(sft_rows(lazy, codec), lazy, processor),
            "eager": with_images(sft_rows(eager, codec), eager, processor)}  # fmt: skip
    assert [r["image"].size for mode in rows for r in rows[mode]] == [(64, 64)] * 4
    # a decoded image is handed over as the processor would have made it from the whole one
    ip = processor.image_processor
    mine, theirs = (ip(images=[im], return_tensors="np")["pixel_values"] for im in (rows["eager"][0]["image"], eager[0].image))
    assert np.array_equal(mine, theirs)
    # datasets fingerprints the transform by pickling it: a token, not the decoded photos
    from pipeline.data.images import RowImages

    transform = RowImages(eager, processor)
    assert len(pickle.dumps(transform)) < 200 and pickle.loads(pickle.dumps(transform)) is transform
