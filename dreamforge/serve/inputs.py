"""A request's image: a ``data:image/…;base64,…`` URL (what Moondream's client sends), decoded
once, upright by its EXIF orientation, and refused before decoding when its header claims more
pixels than the server allows (a decompression bomb)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from pipeline.data.images import upright_rgb

# ~ a 6000×6000 photo; Pillow's own bomb limit is 89 M pixels.
DEFAULT_MAX_PIXELS = 36_000_000


class BadInput(ValueError):
    """A request the server refuses, with the status and the sentence the client sees."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def read_image(field: str, url: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The RGB image of the data URL ``url``; ``field`` names it in the errors."""
    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:40] + "…" if isinstance(url, str) and len(url) > 40 else url
        raise BadInput(
            f"{field} must be a data URL (data:image/jpeg;base64,…), got {shown!r}; "
            "this server does not fetch images from the web: send the bytes"
        )
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise BadInput(f"{field}: a data URL needs ';base64,' before the image bytes (data:image/png;base64,…)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{field}: the data URL's payload is not valid base64") from None
    try:
        with warnings.catch_warnings():
            # Pillow only warns below 2× its limit; as an error, a bomb is never decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size  # the header alone: nothing decoded yet
                if w * h > max_pixels:
                    raise BadInput(
                        f"{field}: the image header says {w}×{h} = {w * h} pixels, more than this server's "
                        f"{max_pixels} (a decompression bomb or far too large an image); resize it",
                        413,
                    )
                return upright_rgb(probe)
    except BadInput:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise BadInput(f"{field}: refused as a decompression bomb ({e}); resize it", 413) from None
    except Exception as e:  # noqa: BLE001 — Pillow raises many types on bad data; each is the client's
        raise BadInput(f"{field}: not an image Pillow can read ({type(e).__name__})") from None
