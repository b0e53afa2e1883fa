"""Opening a dataset's images: found beside the JSON, size-checked from the header, verified,
decoded once (or lazily past the eager budget).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path, PurePosixPath

from PIL import Image

from pipeline.data.coco.checks import _ImageEntry, _Parsed
from pipeline.data.errors import os_reason
from pipeline.data.images import CACHE, CACHE_ENV, LazyImage, check_decodes, rgb_bytes, upright_rgb, upright_size
from pipeline.data.layout import SPLIT_FILE

logger = logging.getLogger(__name__)


class ImageOpening:
    """Find, check and decode images (part of ``_CocoReader``)."""

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
