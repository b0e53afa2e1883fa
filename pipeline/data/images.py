"""Images as people see them: upright, in RGB.

A phone stores a photo taken sideways with its sensor's pixels and an EXIF orientation tag;
every viewer and labelling tool shows it turned upright, so its boxes are drawn on the upright
image. Training, evaluation, ``predict`` and serving all read images through here, so the
pixels the model sees are the ones the labels were drawn on.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from pipeline.structures import ImageRef

EXIF_ORIENTATION = 0x0112  # the TIFF/EXIF tag
TURNED = {5, 6, 7, 8}  # orientations that swap width and height


def orientation(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 (as stored) when it has none or it cannot be read."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 — a broken EXIF block is the same as none: show the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the upright image, from the header alone (nothing decoded)."""
    w, h = image.size
    return (h, w) if orientation(image) in TURNED else (w, h)


def upright_rgb(image: Image.Image) -> Image.Image:
    """The decoded image turned upright by its EXIF orientation, in RGB."""
    if orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


# ---------------------------------------------------------------------- lazy images
# A 5,000-image set of 12-megapixel photos is 180 GB decoded: such a set keeps each image
# as a LazyImage (its path) and decodes it when read, through a cache bounded in bytes.

CACHE_ENV = "DREAMFORGE_IMAGE_CACHE_MB"
DEFAULT_CACHE_MB = 1024


def rgb_bytes(size: tuple[int, int]) -> int:
    """Bytes an RGB image of ``size`` takes decoded."""
    return int(size[0]) * int(size[1]) * 3


class ImageCache:
    """Decoded images by key, least recently used dropped first, at most ``max_bytes`` in all
    (one image larger than the budget is decoded every time and not kept). Thread-safe:
    the service's batcher and a data loader may read the same set."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[Any, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Image.Image]) -> Image.Image:
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return image
            self.misses += 1
        image = make()  # outside the lock: decoding takes long, other readers go on
        size = rgb_bytes(image.size)
        with self._lock:
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = image
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self.bytes -= rgb_bytes(old.size)
        return image

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


CACHE = ImageCache(int(float(os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB)) * (1 << 20)))


class LazyImage(ImageRef):
    """An image file decoded on demand, upright and in RGB (as :func:`upright_rgb`), through
    a bounded :class:`ImageCache`; ``mirrored`` flips it left to right (``pipeline.augment``)."""

    def __init__(self, path: Path, size: tuple[int, int], mirrored: bool = False, cache: ImageCache | None = None):
        self.path, self.size, self.mirrored_ = Path(path), (int(size[0]), int(size[1])), mirrored
        self.cache = cache or CACHE

    @property
    def key(self) -> tuple[Path, bool]:
        return (self.path, self.mirrored_)

    def decode(self, fit: tuple[int, int] | None = None, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
        """The image; with ``fit``, resized to exactly ``fit`` (width, height) with ``resample``,
        as a model's processor would resize it (see :func:`model_input_size`). A JPEG is then
        decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale still at least ``fit``
        (``Image.draft``: libjpeg scales in the DCT, so a 12-megapixel photo wanted at 64×64
        decodes 1/64 of its pixels), and the cache holds the small image."""
        if fit is None or tuple(fit) == self.size:
            return self.cache.get(self.key, self._read)
        fit = (int(fit[0]), int(fit[1]))
        return self.cache.get((*self.key, fit, int(resample)), lambda: self._read(fit, int(resample)))

    def mirrored(self) -> LazyImage:
        return LazyImage(self.path, self.size, not self.mirrored_, self.cache)

    def _read(self, fit: tuple[int, int] | None = None, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
        try:
            with Image.open(self.path) as raw:
                size = upright_size(raw)
                if size == self.size and fit is not None:
                    # draft works on the pixels as stored: a sideways photo wants fit turned too
                    raw.draft("RGB", fit[::-1] if orientation(raw) in TURNED else fit)
                image = upright_rgb(raw) if size == self.size else None
        except Exception as exc:  # noqa: BLE001 — checked at load; it changed on disk since
            raise OSError(f"{self.path.name}: cannot be decoded any more ({type(exc).__name__}: {exc})") from None
        if image is None:
            raise OSError(f"{self.path.name}: is {size[0]}×{size[1]} now, not {self.size[0]}×{self.size[1]}")
        if fit is not None:
            image = image.resize(fit, resample)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.mirrored_ else image

    def __getstate__(self) -> dict[str, Any]:  # the cache (its lock) stays in this process
        return {"path": self.path, "size": self.size, "mirrored_": self.mirrored_}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, cache=CACHE)

    def __repr__(self) -> str:
        return f"LazyImage({self.path.name!r}, {self.size[0]}×{self.size[1]}{', mirrored' if self.mirrored_ else ''})"


def check_decodes(image: Image.Image) -> None:
    """Decode ``image`` to find truncated or corrupt data, as cheaply as the format allows: a
    JPEG at 1/8 scale (its DCT scaling reads every byte of the stream but computes 1/64 of
    the pixels), other formats whole. The pixels are let go."""
    w, h = image.size
    image.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # a no-op for formats without draft mode
    image.load()


def model_input_size(processor: Any) -> tuple[Callable[[int, int], tuple[int, int] | None], int] | None:
    """``(size, resample)``: the size a model's image processor resizes a ``width``×``height``
    image to, and its resampling filter, for the processors whose resize is known; None for
    the others (an image is then handed over whole). Decoding to that size
    (:meth:`LazyImage.decode`) leaves the processor's own resize nothing to do, so the pixels
    and the geometry the model sees are the processor's, while a big JPEG decodes small.
    ``size`` gives None where the processor would resize an image of that size again (Qwen's
    ``smart_resize`` with ``min_pixels == max_pixels`` scales a result under ``min_pixels``
    back up): that image is handed over whole.

    * Qwen2-VL's ``smart_resize`` (sides multiples of ``patch_size * merge_size``, pixels
      within ``[min_pixels, max_pixels]``; transformers ``image_processing_pil_qwen2_vl.py``);
    * a fixed ``{"height", "width"}`` (SigLIP, CLIP as Florence-2 uses it, without a crop).
    """
    ip = getattr(processor, "image_processor", None)
    if ip is None or not getattr(ip, "do_resize", True):
        return None
    size = dict(getattr(ip, "size", None) or {})
    resample = int(getattr(ip, "resample", None) or Image.Resampling.BICUBIC)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    lo = getattr(ip, "min_pixels", None) or size.get("shortest_edge")
    hi = getattr(ip, "max_pixels", None) or size.get("longest_edge")
    if patch and merge and lo and hi and type(ip).__name__.startswith(("Qwen2VL", "Qwen2_5_VL")):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        def qwen(width: int, height: int) -> tuple[int, int] | None:
            def resize(w: int, h: int) -> tuple[int, int]:
                h, w = smart_resize(int(h), int(w), factor=int(patch) * int(merge), min_pixels=int(lo), max_pixels=int(hi))
                return int(w), int(h)

            fit = resize(width, height)
            return fit if resize(*fit) == fit else None

        return qwen, resample
    if set(size) == {"height", "width"} and not getattr(ip, "do_center_crop", False):
        fixed = (int(size["width"]), int(size["height"]))
        return (lambda width, height: fixed), resample
    return None


class RowImages:
    """The ``datasets`` transform that gives each training row its sample's image (the row's
    ``index`` column says which), at the size the model's ``processor`` resizes it to where
    that is known (:func:`model_input_size`): a lazy image decodes straight to it, a decoded
    one is resized with the processor's own filter (so the processor gets the very pixels it
    would have made). Why resize here: the processor first turns every image of a batch into
    a full-size array before shrinking each: +640 MB at the peak for a batch of eight
    12-megapixel photos (``benchmarks/data_scale.py``, eager).
    """

    def __init__(self, samples: list[Any], processor: Any = None, index: str = "image_index", augment: Any = None) -> None:
        self.samples, self.index, self.augment = samples, index, augment
        self.to_size = model_input_size(processor) if processor is not None else None
        self.token = next(_TOKENS)
        _LIVE[self.token] = self

    def image(self, sample: Any) -> Image.Image:
        fit = self.to_size[0](sample.width, sample.height) if self.to_size is not None else None
        if fit is None:
            return sample.image
        if isinstance(sample.pixels, LazyImage):
            return sample.pixels.decode(fit=fit, resample=self.to_size[1])
        return sample.image.resize(fit, self.to_size[1])

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.augment is None:
            batch["image"] = [self.image(self.samples[i]) for i in batch[self.index]]
            return batch
        # ``augment(i, image_of)``: ``(image, columns)``, the row's image and the answer columns
        # that follow it (``stages.sft``), drawn anew at each read
        drawn = [self.augment(i, self.image) for i in batch[self.index]]
        batch["image"] = [image for image, _ in drawn]
        for key in drawn[0][1] if drawn else ():
            batch[key] = [columns[key] for _, columns in drawn]
        return batch

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        # ``Dataset.with_transform`` fingerprints its transform by pickling it
        # (``datasets.fingerprint.update_fingerprint``); pickled whole, decoded samples cost
        # two copies of every photo at once (+2.7 GB at the peak for 48 of 12 MP: the "70 MB
        # more per photo" eager SFT used to take, data_scale.py).
        # Pickled as a token for this live object instead: rows are read in this process.
        return (_live, (self.token,))


_TOKENS = itertools.count()
_LIVE: weakref.WeakValueDictionary[int, RowImages] = weakref.WeakValueDictionary()


def _live(token: int) -> RowImages:
    try:
        return _LIVE[token]
    except KeyError:
        raise RuntimeError("training rows read their images in the process that made them; use no DataLoader "
                           "workers that start fresh") from None  # fmt: skip
