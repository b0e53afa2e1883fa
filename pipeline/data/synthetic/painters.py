"""The painters: one function per look (``KINDS``) that draws an image and returns its objects.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.data.synthetic.shapes import (
    _BASE,
    _GENERIC_COLOURS,
    _TRIES,
    CATEGORIES,
    _centre,
    _darker,
    _distract,
    _ellipse_polygon,
    _free,
    _noise,
    _NoRoom,
    _Obj,
    _place,
    _rect_polygon,
    _rint,
    _s,
    _scaled,
    _Shift,
    _to_uint8,
    _vertical_keypoints,
)

# --------------------------------------------------------------------------------- kinds


def _generic(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    # A painter draws one scene in order (road, lanes, vehicles, occluders, lighting); its
    # ~80 lines are drawing calls, and splitting them would scatter one picture over functions.
    scale = size / _BASE
    # Varied backgrounds (dark, mid, light, with or without straight edges) so the warm-start
    # learns "coloured object on anything", which is what transfers to the domain presets.
    base = _rint(rng, 60, 215)
    background = np.clip(base + rng.integers(-20, 21, size=3), 0, 255)
    pixels = background[None, None, :].astype(np.int16) + _noise(rng, (size, size, 1), 4)
    if shift is not None:  # diagonal stripes, which no unshifted background has
        yy, xx = np.mgrid[0:size, 0:size]
        period = _rint(rng, _s(6, scale), _s(12, scale))
        pixels = pixels + np.where(((xx + yy) // period) % 2 == 0, 18, -18)[..., None].astype(np.int16)
    elif rng.random() < 0.3:  # vertical grain, like wood or fabric
        pixels = pixels + rng.integers(-12, 13, size=(1, size, 1))
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(_rint(rng, 0, 2)):
        y = _rint(rng, 0, size - 1)
        shade = tuple(int(v) for v in np.clip(background - _rint(rng, 40, 90), 0, 255))
        draw.line([(0, y), (size - 1, y)], fill=shade, width=max(1, round(2 * scale)))
    lo, hi = _s(14, _scaled(scale, shift)), _s(30, _scaled(scale, shift))
    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["generic"][_rint(rng, 0, 2)]
        # Each shape has its own colour family: a tiny model learns "what" from colour within
        # seconds, which is what pulls it out of the image-blind start (it otherwise predicts
        # the average box for every image). Shapes still differ, for the segment task.
        colour_name, colour = _GENERIC_COLOURS[label][_rint(rng, 0, 1)]
        colour = tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-20, 21, size=3), 0, 255))
        box = _place(rng, [o.box for o in objects], size, size, (lo, hi), (lo, hi), square=label == "square" and rng.random() < 0.5)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        if label == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)
            polygon = _rect_polygon(box)
        elif label == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour)
            polygon = _ellipse_polygon(box)
        else:
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=colour)
            polygon = [float(x1), float(y2), float(x2), float(y2), (x1 + x2) / 2, float(y1)]
        objects.append(_Obj(label, box, polygon, _vertical_keypoints(box), {"colour": colour_name}))
    if shift is not None:  # plus signs and hollow rings: shapes that are none of the categories

        def plus(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            bar = max(2, (x2 - x1) // 3)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            draw.rectangle([x1, cy - bar // 2, x2 - 1, cy - bar // 2 + bar - 1], fill=(200, 60, 170))
            draw.rectangle([cx - bar // 2, y1, cx - bar // 2 + bar - 1, y2 - 1], fill=(200, 60, 170))

        def ring(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], outline=(245, 245, 245), width=max(2, round(2 * scale)))

        _distract(rng, objects, size, shift, [plus, ring], (_s(10, scale), _s(16, scale)))
    return np.asarray(image), objects


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Random values on a ``cells``-square grid, bilinearly upsampled: light, stains, texture."""
    coarse = Image.fromarray(rng.integers(0, 256, size=(cells, cells), dtype=np.uint8), "L")
    return np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0 - 0.5


def _photo(
    rng: np.random.Generator, size: int, count: int, min_count: int
) -> tuple[np.ndarray, list[_Obj]]:
    """Objects as a camera or a microscope sees them, for a warm start that transfers to real
    photographs: uneven light and texture behind, objects from a few pixels to half the image
    that differ from it by a little or a lot (brighter or darker, textured, shaded towards the
    rim), sometimes in grey, then blur, sensor noise and JPEG artefacts. On real coins the
    flat-colour ``generic`` warm start scored below no warm start at all (benchmarks/real_images.py)."""
    grey = rng.random() < 0.4
    base = rng.uniform(30, 220, size=1 if grey else 3)
    light = _smooth_field(rng, size, _rint(rng, 2, 4)) * rng.uniform(0, 120)
    grain = _smooth_field(rng, size, _rint(rng, 8, max(9, size // 4))) * rng.uniform(0, 60)
    pixels = base[None, None, :] + (light + grain)[..., None]
    lo, hi = max(3, size // 24), max(6, size // 2)
    objects: list[_Obj] = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for index in range(count):
        label = CATEGORIES["photo"][_rint(rng, 0, 2)]
        side = int(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # as many small objects as large
        aspect = rng.uniform(0.6, 1.0)
        w_range = (max(3, int(side * aspect)), side)
        box = _place(rng, [o.box for o in objects], size, size, w_range, w_range, square=label == "blob" and rng.random() < 0.5)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        mask_img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask_img)
        if label == "box":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=255)
            polygon = _rect_polygon(box)
        elif label == "blob":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=255)
            polygon = _ellipse_polygon(box)
        else:
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=255)
            polygon = [float(x1), float(y2), float(x2), float(y2), (x1 + x2) / 2, float(y1)]
        mask = np.asarray(mask_img, dtype=np.float32)[..., None] / 255.0
        # brighter on a dark surround, darker on a light one: a step past 0 or 255 would be clipped away
        local = float((pixels * mask).sum() / max(mask.sum() * pixels.shape[-1], 1))
        sign = 1 if local < 90 else -1 if local > 165 else (1 if rng.random() < 0.6 else -1)
        contrast = rng.uniform(35, 140) * sign
        tint = np.ones(1 if grey else 3) if rng.random() < 0.5 else rng.uniform(0.3, 1.3, size=1 if grey else 3)
        cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
        rim = np.clip(1.0 - rng.uniform(0, 0.8) * ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r), 0, 1)[..., None]
        texture = _smooth_field(rng, size, _rint(rng, 4, max(5, size // 3)))[..., None] * rng.uniform(0, 80)
        pixels = pixels * (1 - mask) + (pixels + contrast * tint * rim + texture) * mask
        objects.append(_Obj(label, box, polygon, _vertical_keypoints(box), {"colour": "grey" if grey else "mixed"}))
    pixels = pixels + rng.normal(0, rng.uniform(1, 10), size=pixels.shape)
    image = Image.fromarray(_to_uint8(np.broadcast_to(pixels, (size, size, 3)) if grey else pixels), "RGB")
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=_rint(rng, 30, 90))
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(image), objects


_PRODUCT_COLOURS = {
    "cola": ("red", (205, 25, 30)),
    "water": ("blue", (35, 90, 215)),
    "chips": ("yellow", (245, 205, 25)),
    "soap": ("green", (35, 160, 60)),
}


def _retail_shelf(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    if shift is not None:  # dark slate or glossy white shelving, never seen unshifted
        dark = rng.random() < 0.5
        background = np.array([58, 62, 72] if dark else [232, 232, 226]) + _rint(rng, -8, 8)
        grain = _noise(rng, (1, size, 1), 2)
    elif rng.random() < 0.6:  # light wood, with per-column grain
        background = np.array([195, 165, 118]) + _rint(rng, -12, 12)
        grain = _noise(rng, (1, size, 1), 7)
    else:  # light gray metal shelving
        background = np.array([188, 188, 192]) + _rint(rng, -12, 12)
        grain = _noise(rng, (1, size, 1), 2)
    pixels = background[None, None, :].astype(np.int16) + grain + _noise(rng, (size, size, 1), 3)
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)

    thickness = _s(3, scale)
    shelf_tops = [round(size * 0.85)] if rng.random() < 0.5 else [round(size * 0.45), round(size * 0.9)]
    shelf_colour = (70 + _rint(rng, -10, 10), 45, 25)
    if shift is not None:
        shelf_colour = (175, 178, 184) if dark else (40, 40, 46)
    oscale = _scaled(scale, shift)
    for top in shelf_tops:
        draw.rectangle([0, top, size - 1, top + thickness - 1], fill=shelf_colour)

    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["retail-shelf"][_rint(rng, 0, 3)]
        colour_name, colour = _PRODUCT_COLOURS[label]
        box = None
        for _ in range(_TRIES):
            shelf = _rint(rng, 0, len(shelf_tops) - 1)
            ceiling = 1 if shelf == 0 else shelf_tops[shelf - 1] + thickness + 1
            room = shelf_tops[shelf] - ceiling
            width = _rint(rng, _s(12, oscale), _s(18, oscale))
            height = min(_rint(rng, _s(16, oscale), _s(26, oscale)), room)
            if height < _s(12, oscale):
                continue
            x1 = _rint(rng, 1, size - width - 1)
            candidate = (x1, shelf_tops[shelf] - height, x1 + width, shelf_tops[shelf])
            if _free(candidate, [o.box for o in objects], gap=1):
                box = candidate
                break
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        # Body with a dark outline, a darker cap, and a white label band: reads as a product.
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour, outline=_darker(colour))
        draw.rectangle([x1 + 1, y1 + 1, x2 - 2, y1 + _s(2, scale)], fill=_darker(colour, 0.75))
        band_h = max(3, round((y2 - y1) * 0.2))
        band_y1 = y1 + round((y2 - y1) * 0.45)
        draw.rectangle([x1 + 2, band_y1, x2 - 3, band_y1 + band_h - 1], fill=(245, 245, 245))
        label_y = band_y1 + band_h / 2
        objects.append(
            _Obj(
                label,
                box,
                _rect_polygon(box),
                _vertical_keypoints(box, label_y),
                {"colour": colour_name, "shelf": y2},
            )
        )
    if shift is not None:  # purple and pink round items and price tags: on the shelf, not products

        def round_item(box: tuple[int, int, int, int]) -> None:
            colour = (150, 70, 180) if rng.random() < 0.5 else (240, 150, 190)
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour, outline=_darker(colour))

        def tag(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            draw.rectangle([x1, y1, x2 - 1, min(y2, y1 + _s(6, scale)) - 1], fill=(250, 140, 40))

        _distract(rng, objects, size, shift, [round_item, tag], (_s(8, scale), _s(12, scale)))
    return np.asarray(image), objects


def _medical_scan(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    # Shifted: another scanner, a grey surround and darker tissue (lesions stay ~100 levels above it).
    gray = Image.new("L", (size, size), _rint(rng, 45, 60) if shift is not None else _rint(rng, 10, 25))
    draw = ImageDraw.Draw(gray)
    mx, my = _rint(rng, _s(2, scale), _s(6, scale)), _rint(rng, _s(2, scale), _s(6, scale))
    body = (mx, my, size - mx, size - my)
    tissue = _rint(rng, 80, 100) if shift is not None else _rint(rng, 105, 135)
    draw.ellipse([body[0], body[1], body[2] - 1, body[3] - 1], fill=tissue)
    bcx, bcy = _centre(body)
    brx, bry = (body[2] - body[0]) / 2, (body[3] - body[1]) / 2

    def inside_body(box: tuple[int, int, int, int]) -> bool:
        corners = [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])]
        return all(((x - bcx) / brx) ** 2 + ((y - bcy) / bry) ** 2 <= 0.92 for x, y in corners)

    objects: list[_Obj] = []
    lo, hi = _s(10, _scaled(scale, shift)), _s(20, _scaled(scale, shift))
    for index in range(count):
        box = _place(rng, [o.box for o in objects], size, size, (lo, hi), (lo, hi), accept=inside_body)
        if box is None:
            if index < min_count:
                raise _NoRoom()
            break
        x1, y1, x2, y2 = box
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=_rint(rng, 215, 245))
        cx, cy = _centre(box)
        keypoints = [(float(x1), cy), (cx, cy), (float(x2), cy)]
        objects.append(_Obj("lesion", box, _ellipse_polygon(box), keypoints))
    if shift is not None:  # dark cysts and tiny bright calcifications: findings that are not lesions

        def cyst(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=_rint(rng, 25, 40))

        def speck(box: tuple[int, int, int, int]) -> None:
            cx, cy = _centre(box)
            r = max(1, round(1.5 * scale))
            draw.ellipse([cx - r, cy - r, cx + r - 1, cy + r - 1], fill=_rint(rng, 215, 245))

        _distract(rng, objects, size, shift, [cyst, speck], (_s(6, scale), _s(10, scale)), accept=inside_body)
    # Mild acquisition noise over everything; lesions stay ~100 gray levels above tissue.
    pixels = np.asarray(gray).astype(np.int16) + np.round(rng.normal(0, 5, (size, size))).astype(np.int16)
    channel = _to_uint8(pixels)
    return np.repeat(channel[:, :, None], 3, axis=2), objects


_VEHICLE_COLOURS = ((200, 30, 30), (40, 70, 200), (235, 235, 235), (25, 25, 30), (30, 150, 60))


def _traffic_camera(
    rng: np.random.Generator, size: int, count: int, min_count: int, shift: _Shift | None = None
) -> tuple[np.ndarray, list[_Obj]]:
    scale = size / _BASE
    asphalt = _rint(rng, 140, 160) if shift is not None else _rint(rng, 85, 110)  # shifted: pale concrete
    pixels = np.full((size, size, 3), asphalt, np.int16) + _noise(rng, (size, size, 1), 5)
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    draw = ImageDraw.Draw(image)

    lanes = 3
    bounds = [round(size * k / lanes) for k in range(lanes + 1)]
    mark = max(1, _s(2, scale))
    dash, gap = _s(6, scale), _s(4, scale)
    phase = _rint(rng, 0, dash + gap - 1)
    for y in bounds[1:-1]:
        for x in range(-phase, size, dash + gap):
            if x + dash > 0:
                draw.rectangle(
                    [max(x, 0), y - mark // 2, min(x + dash, size) - 1, y - mark // 2 + mark - 1],
                    fill=(240, 240, 240) if shift is None else (235, 200, 40),
                )
    headings = [1 if rng.random() < 0.5 else -1 for _ in range(lanes)]  # +1: driving right

    objects: list[_Obj] = []
    for index in range(count):
        label = CATEGORIES["traffic-camera"][_rint(rng, 0, 2)]
        length_range = {"car": (16, 20), "truck": (26, 34), "bus": (28, 36)}[label]
        width_range = (12, 13) if label == "car" else (13, 15)
        oscale = _scaled(scale, shift)
        box = lane = None
        for _ in range(_TRIES):
            lane = _rint(rng, 0, lanes - 1)
            length = _rint(rng, _s(length_range[0], oscale), _s(length_range[1], oscale))
            width = _rint(rng, _s(width_range[0], oscale), _s(width_range[1], oscale))
            top_min, top_max = bounds[lane] + mark, bounds[lane + 1] - mark - width
            if top_max < top_min or length > size - 2:
                continue
            x1, y1 = _rint(rng, 1, size - length - 1), _rint(rng, top_min, top_max)
            candidate = (x1, y1, x1 + length, y1 + width)
            if _free(candidate, [o.box for o in objects], gap=2):
                box = candidate
                break
        if box is None or lane is None:
            if index < min_count:
                raise _NoRoom()
            break
        heading = headings[lane]
        x1, y1, x2, y2 = box
        if label == "bus":
            body = (235, 190, 20)
        elif label == "truck":
            body = (200, 190, 170)  # light cargo box; the cab gets its own colour below
        else:
            body = _VEHICLE_COLOURS[_rint(rng, 0, len(_VEHICLE_COLOURS) - 1)]
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=body, outline=_darker(body, 0.5))
        length = x2 - x1
        # The front must be visible, or the "front" keypoint cannot be learned: a dark
        # windscreen near the front (and, for trucks, a coloured cab).
        if label == "truck":
            cab = _s(8, scale)
            cab_colour = _VEHICLE_COLOURS[_rint(rng, 0, 2)]
            cx1 = x2 - cab if heading > 0 else x1
            draw.rectangle(
                [cx1, y1, cx1 + cab - 1, y2 - 1], fill=cab_colour, outline=_darker(cab_colour, 0.5)
            )
        glass = max(2, round(length * (0.12 if label != "car" else 0.2)))
        inset = max(2, round(length * 0.08)) if label == "car" else 1
        gx1 = x2 - inset - glass if heading > 0 else x1 + inset
        draw.rectangle([gx1, y1 + 2, gx1 + glass - 1, y2 - 3], fill=(35, 45, 65))
        cx, cy = _centre(box)
        front, rear = (float(x2), float(x1)) if heading > 0 else (float(x1), float(x2))
        objects.append(_Obj(label, box, _rect_polygon(box), [(front, cy), (cx, cy), (rear, cy)]))
    if shift is not None:  # traffic cones and manhole covers: on the road, not vehicles

        def cone(box: tuple[int, int, int, int]) -> None:
            x1, y1, x2, y2 = box
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=(250, 110, 20))

        def manhole(box: tuple[int, int, int, int]) -> None:
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=(45, 45, 50), outline=(20, 20, 20))

        _distract(rng, objects, size, shift, [cone, manhole], (_s(6, scale), _s(10, scale)))
    return np.asarray(image), objects

_PAINTERS: dict[str, Callable[..., tuple[np.ndarray, list[_Obj]]]] = {
    "generic": _generic,
    "retail-shelf": _retail_shelf,
    "medical-scan": _medical_scan,
    "traffic-camera": _traffic_camera,
    "photo": _photo,
}
