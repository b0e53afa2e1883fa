"""Images as people see them: upright, in RGB.

A phone stores a photo taken sideways with its sensor's pixels and an EXIF orientation tag;
every viewer and labelling tool shows it turned upright, so its boxes are drawn on the upright
image. Training, evaluation, ``predict`` and serving all read images through here, so the
pixels the model sees are the ones the labels were drawn on.
"""

from __future__ import annotations

from PIL import Image, ImageOps

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
