"""Draw a canonical target on its image (for ``dreamforge predict --draw`` and the dashboard)."""

from __future__ import annotations

from PIL import Image, ImageDraw

_COLOURS = [(255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 128, 255), (255, 160, 64)]


def draw_target(image: Image.Image, target: dict, scale: int = 4) -> Image.Image:
    """A copy of ``image``, upscaled ``scale``× so small images stay readable, with the target drawn."""
    im = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for i, box in enumerate(target.get("boxes", [])):
        c = _COLOURS[i % len(_COLOURS)]
        x1, y1, x2, y2 = (v * scale for v in box)
        d.rectangle([x1, y1, x2 - 1, y2 - 1], outline=c, width=2)
        labels = target.get("labels", [])
        if i < len(labels):
            d.text((x1 + 2, y1 + 1), str(labels[i]), fill=c)
    for i, poly in enumerate(target.get("masks", [])):
        if len(poly) >= 6:
            d.polygon([(poly[j] * scale, poly[j + 1] * scale) for j in range(0, len(poly), 2)], outline=_COLOURS[i % 6])
    for x, y in target.get("points", []):
        d.ellipse([x * scale - 3, y * scale - 3, x * scale + 3, y * scale + 3], fill=(255, 255, 255))
    if target.get("text"):
        d.text((4, im.height - 14), target["text"][:80], fill=(255, 255, 255))
    return im
