"""Captions of a drawn image, in words a person would use: counts, colours and positions.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.data.synthetic.painters import _PRODUCT_COLOURS
from pipeline.data.synthetic.shapes import CATEGORIES, _centre, _Obj

# ------------------------------------------------------------------------------ captions

_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    plural = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else n} {plural}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _position(box: tuple[int, int, int, int], size: int) -> str:
    """Where a box's centre is, in a 3×3 grid: "upper left", "middle right", "center"…"""
    cx, cy = _centre(box)
    col = 0 if cx < size / 3 else 2 if cx >= 2 * size / 3 else 1
    row = 0 if cy < size / 3 else 2 if cy >= 2 * size / 3 else 1
    return (
        ("upper left", "upper middle", "upper right"),
        ("middle left", "center", "middle right"),
        ("lower left", "lower middle", "lower right"),
    )[row][col]


def _groups(objects: list[_Obj], key: Callable[[_Obj], str], order: list[str]) -> list[tuple[str, int]]:
    counts = {name: 0 for name in order}
    for obj in objects:
        counts[key(obj)] += 1
    return [(name, n) for name, n in counts.items() if n]


def _caption(kind: str, objects: list[_Obj], size: int) -> str:
    if kind == "photo":
        groups = _groups(objects, lambda o: o.label, list(CATEGORIES["photo"]))
        return _join([_count(n, name) for name, n in groups]) if objects else "an empty background"
    if kind == "generic":
        if not objects:
            return "an empty background"
        if len(objects) == 1:
            obj = objects[0]
            return f"a {obj.extra['colour']} {obj.label} in the {_position(obj.box, size)}"
        groups = _groups(objects, lambda o: o.label, list(CATEGORIES["generic"]))
        return _join([_count(n, name) for name, n in groups])
    if kind == "retail-shelf":
        if not objects:
            return "an empty shelf"
        colours = [_PRODUCT_COLOURS[c][0] for c in CATEGORIES["retail-shelf"]]
        groups = _groups(objects, lambda o: o.extra["colour"], colours)
        parts = [(_count(n, "product").replace(" product", f" {c} product", 1)) for c, n in groups]
        shelves = len({o.extra["shelf"] for o in objects})
        return _join(parts) + (" on a shelf" if shelves == 1 else " on two shelves")
    if kind == "medical-scan":
        if not objects:
            return "a scan with no lesions"
        ordered = sorted(objects, key=lambda o: (o.box[0], o.box[1]))
        places: list[str] = []
        for obj in ordered:
            place = _position(obj.box, size)
            if place not in places:
                places.append(place)
        lesions = _count(len(objects), "lesion").replace(" lesion", " bright lesion", 1)
        return f"{lesions} in the {_join(places)} of the scan"
    if not objects:
        return "an empty road"
    groups = _groups(objects, lambda o: o.label, ["bus", "truck", "car"])  # big vehicles first
    return _join([_count(n, name) for name, n in groups]) + " on the road"
