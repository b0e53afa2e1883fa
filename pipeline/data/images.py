"""Images as people see them: upright, in RGB.

A phone stores a photo taken sideways with its sensor's pixels and an EXIF orientation tag;
every viewer and labelling tool shows it turned upright, so its boxes are drawn on the upright
image. Training, evaluation, ``predict`` and serving all read images through here, so the
pixels the model sees are the ones the labels were drawn on.
"""

from __future__ import annotations

import os
import threading
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

    def decode(self) -> Image.Image:
        return self.cache.get(self.key, self._read)

    def mirrored(self) -> LazyImage:
        return LazyImage(self.path, self.size, not self.mirrored_, self.cache)

    def _read(self) -> Image.Image:
        try:
            with Image.open(self.path) as raw:
                image = upright_rgb(raw)
        except Exception as exc:  # noqa: BLE001 — checked at load; it changed on disk since
            raise OSError(f"{self.path.name}: cannot be decoded any more ({type(exc).__name__}: {exc})") from None
        if image.size != self.size:
            raise OSError(f"{self.path.name}: is {image.size[0]}×{image.size[1]} now, not {self.size[0]}×{self.size[1]}")
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
