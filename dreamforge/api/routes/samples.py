"""``GET /api/jobs/{id}/samples``: a finished job's held-out predictions drawn on their images.

The evaluate stage writes ``predictions.json`` (per evaluated model, the first held-out images
with the model's raw answer, its decoded prediction and the ground truth) next to
``metrics.json``. This route reads it and draws the prediction and the ground truth on each
image, so the dashboard can show them without loading a model (the API never imports torch). The
file is read through ``dreamforge.api.artifacts``: from disk, or on Modal from the Volume.

Images come from the job's own dataset: ``synthetic://`` is regenerated (deterministic),
uploaded datasets (``gridfs://``) and server paths are read from the worker's cache or disk.
Datasets on s3://, gs:// or https:// are not downloaded by the API: their samples come back
without pictures, and the response says why.
"""

from __future__ import annotations

import base64
import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from dreamforge.api import errors
from dreamforge.api.artifacts import read_artifact
from dreamforge.api.deps import AppSettings, Project
from dreamforge.jobs.lanes import lane
from dreamforge.store import JOBS
from pipeline.stage_table import models_newest_first

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

# Drawn answers per (job, model, n): a finished job's predictions never change, and the
# dashboard asks again on every rerun of the job page.
_CACHE: OrderedDict[tuple[str, str, int], dict[str, Any]] = OrderedDict()
_CACHE_SIZE = 32
IMAGE_SCHEMES = ("synthetic://", "gridfs://")


@router.get("/{job_id}/samples", responses=errors.responses(404, 409, 429))
async def samples(request: Request, settings: AppSettings, job_id: str, pid: Project,
                  n: int = Query(6, ge=1, le=16), model: str | None = None):  # fmt: skip
    """Held-out images with the model's prediction and the ground truth drawn as PNG (base64).

    ``model`` picks an evaluated checkpoint (``base``, ``warm_start``, ``domain``, ``reward``);
    the default is the released one. Only a succeeded job has samples (409 otherwise).
    """
    doc = await request.app.state.db[JOBS].find_one({"_id": job_id, "project_id": pid}, {"status": 1, "result": 1, "config": 1})
    if doc is None:
        raise HTTPException(404, f"job {job_id} not found")
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; samples are drawn once it has succeeded")
    path = _predictions_path(doc)
    raw = await read_artifact(request, settings.artifacts, path) if path else None
    if raw is None:
        raise HTTPException(404, f"job {job_id}: no held-out predictions stored (the evaluate stage writes predictions.json)")
    by_model = json.loads(raw)
    name = model or _default_model(doc, by_model)
    if name not in by_model:
        raise HTTPException(422, f"model {name!r} was not evaluated; choose one of: {', '.join(by_model)}")
    key = (job_id, name, n)
    if key not in _CACHE:
        _CACHE[key] = await lane("probes").run(pid, _draw, doc, by_model, name, n)  # reads or regenerates the dataset
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return _CACHE[key]


def _predictions_path(doc: dict[str, Any]) -> Path | None:
    """``predictions.json`` beside the job's ``metrics.json`` (``read_artifact`` keeps it under
    the artifacts root: the path comes from the job document)."""
    metrics = ((doc.get("result") or {}).get("artifacts") or {}).get("metrics.json")
    return Path(metrics).parent / "predictions.json" if metrics else None


def _default_model(doc: dict[str, Any], by_model: dict[str, Any]) -> str:
    """The released model: the 4-bit one when it passed the quality gate, else the released stage."""
    release = (doc.get("result") or {}).get("release") or {}
    if release.get("release_format") in ("nf4", "fp4") and "4bit" in by_model:
        return "4bit"
    for name in models_newest_first(release.get("stage"), base=True):
        if name in by_model:
            return name
    return next(iter(by_model))


def _draw(doc: dict[str, Any], by_model: dict[str, Any], name: str, n: int) -> dict[str, Any]:
    from pipeline.draw import draw_target

    examples = by_model[name][:n]
    images, note = _images(doc, {e["file_name"] for e in examples})
    out = []
    for e in examples:
        item = {"file_name": e["file_name"], "text": e["text"], "pred": e["pred"], "gt": e["gt"], "pred_png": None, "gt_png": None}
        im = images.get(e["file_name"])
        if im is not None:
            item["pred_png"] = _png(draw_target(im, e["pred"]))
            item["gt_png"] = _png(draw_target(im, e["gt"]))
        out.append(item)
    return {"jobId": doc["_id"], "model": name, "models": list(by_model), "samples": out, "note": note}


def _images(doc: dict[str, Any], wanted: set[str]) -> tuple[dict[str, Any], str | None]:
    """The wanted held-out images of the job's dataset, loaded as the job loaded them."""
    from pipeline.data import load_dataset
    from pipeline.data.errors import DataError

    cfg = doc.get("config") or {}
    data = cfg.get("data") or {}
    uri = str(data.get("dataset", ""))
    if "://" in uri and not uri.startswith(IMAGE_SCHEMES):
        return {}, f"images of {uri.split('://')[0]}:// datasets are not fetched by the API; predictions are listed without pictures"
    try:
        ds = load_dataset(uri, cfg.get("task", "detect"), seed=int(cfg.get("seed", 0)),
                          fractions=tuple(data.get("split") or (0.8, 0.1, 0.1)))  # fmt: skip
    except (DataError, OSError) as e:
        return {}, f"the job's dataset can no longer be read ({e}); predictions are listed without pictures"
    found = {s.file_name: s.image for split in ds.splits.values() for s in split if s.file_name in wanted}
    return found, None


def _png(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
