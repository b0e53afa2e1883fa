"""A decoded target (pixels, ``pipeline.structures``) as Moondream Station's answers: every
coordinate image-relative, 0–1, as Moondream's client returns them.

Which skills a model has follows from the task it was trained for: boxes answer ``detect`` and
``point`` (the box centres), polygons also ``segment``, captions ``caption``. Anything else is
the client's mistake, said as such (:class:`Unsupported`), never an empty answer.
"""

from __future__ import annotations

from typing import Any

from dreamforge.serve.inputs import BadInput
from pipeline.stage_table import SKILLS


def check_skill(task: str, skill: str) -> None:
    """Refuse (422) a skill the model was not trained for, naming the ones it has."""
    have = SKILLS.get(task, ())
    if skill not in have:
        raise BadInput(
            f"this model was trained for {task}, so it cannot {skill}; "
            f"it answers {', '.join('/v1/' + s for s in have)}",
            422,
        )


def pick_category(categories: list[str], name: object) -> str | None:
    """The category ``object`` names (case-insensitive), None for all of them."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return None
    if not isinstance(name, str):
        raise BadInput(f"object must be a category name (a string), got {name!r}")
    by_lower = {c.lower(): c for c in categories}
    found = by_lower.get(name.strip().lower())
    if found is None:
        raise BadInput(f"object {name!r} is not a category this model knows; it knows: {', '.join(categories)}")
    return found


def _rel(v: float, size: int) -> float:
    return round(min(max(v / size, 0.0), 1.0), 6)


def _matching(target: dict[str, Any], category: str | None, max_objects: int | None) -> list[int]:
    idx = [i for i, label in enumerate(target["labels"]) if category is None or label == category]
    return idx[:max_objects] if max_objects is not None else idx


def detections(target: dict[str, Any], category: str | None, max_objects: int | None = None) -> list[dict[str, Any]]:
    """``[{"x_min", "y_min", "x_max", "y_max"}]`` (plus ``label``, which Station's clients ignore)."""
    w, h = target["image"]["width"], target["image"]["height"]
    out = []
    for i in _matching(target, category, max_objects):
        x1, y1, x2, y2 = target["boxes"][i]
        out.append({"x_min": _rel(x1, w), "y_min": _rel(y1, h), "x_max": _rel(x2, w), "y_max": _rel(y2, h),
                    "label": target["labels"][i]})  # fmt: skip
    return out


def points(target: dict[str, Any], category: str | None, max_objects: int | None = None) -> list[dict[str, Any]]:
    """``[{"x", "y"}]``: each matching box's centre."""
    return [
        {"x": round((d["x_min"] + d["x_max"]) / 2, 6), "y": round((d["y_min"] + d["y_max"]) / 2, 6), "label": d["label"]}
        for d in detections(target, category, max_objects)
    ]


def segment(target: dict[str, Any], category: str | None) -> dict[str, Any]:
    """``{"path": SVG path, "bbox": {x_min, …}}`` of the first matching object, as Moondream's
    segment answers (relative coordinates); ``path`` is empty and ``bbox`` null when none."""
    w, h = target["image"]["width"], target["image"]["height"]
    idx = _matching(target, category, 1)
    if not idx:
        return {"path": "", "bbox": None}
    i = idx[0]
    poly = target["masks"][i] if i < len(target.get("masks") or []) else []
    if len(poly) < 6:  # no polygon: the box's rectangle, as the codec decodes one
        x1, y1, x2, y2 = target["boxes"][i]
        poly = [x1, y1, x2, y1, x2, y2, x1, y2]
    xy = [(_rel(poly[k], w), _rel(poly[k + 1], h)) for k in range(0, len(poly) - 1, 2)]
    path = "M " + " L ".join(f"{x:g} {y:g}" for x, y in xy) + " Z"
    return {"path": path, "bbox": {k: v for k, v in detections(target, None)[i].items() if k != "label"}}
