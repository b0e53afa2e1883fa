"""Datasets: a COCO ZIP uploaded as the raw body, checked like any hostile archive, kept in GridFS."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from gridfs import AsyncGridFSBucket

from dreamforge.api.deps import AppSettings, Db, Project
from dreamforge.jobs import queue
from dreamforge.schemas import DatasetView
from dreamforge.store import DATASETS, GRIDFS_BUCKET

router = APIRouter(prefix="/api/datasets", tags=["datasets"])
SHOWN = ("name", "created_at", "size", "images", "categories", "warnings")


@router.post("", status_code=201, response_model=DatasetView)
async def upload_dataset(request: Request, db: Db, settings: AppSettings, pid: Project,
                         name: str = Query(..., max_length=100), task: str = Query("detect")):  # fmt: skip
    """Upload a COCO dataset as a ZIP (the raw request body). It is checked like any
    hostile archive (zip-slip, symlinks, bombs, images) before anything is stored."""
    with tempfile.TemporaryDirectory(prefix="df-upload-") as tmp:  # removed on every path, failures too
        path = Path(tmp) / "upload.zip"
        size = 0
        with path.open("wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                fh.write(chunk)
        # Uncompressed, a dataset may be twice the upload limit (images barely compress; the
        # ratio cap in extract_zip catches bombs below this).
        summary = await asyncio.to_thread(_validate_zip, path, task, f"{name}.zip", 2 * settings.max_upload_bytes)
        bucket = AsyncGridFSBucket(db, GRIDFS_BUCKET)
        with path.open("rb") as fh:
            gid = await bucket.upload_from_stream(f"{pid}/{name}.zip", fh, metadata={"project_id": pid, "name": name})
    doc = {"_id": "ds_" + secrets.token_hex(8), "project_id": pid, "name": name, "gridfs_id": str(gid),
           "created_at": queue.now(), "size": size, **summary}  # fmt: skip
    await db[DATASETS].insert_one(doc)
    return DatasetView(id=doc["_id"], **{k: doc[k] for k in SHOWN})


@router.get("", response_model=list[DatasetView])
async def list_datasets(db: Db, pid: Project):
    docs = await db[DATASETS].find({"project_id": pid}).sort("created_at", -1).to_list(200)
    return [DatasetView(id=d["_id"], **{k: d[k] for k in SHOWN}) for d in docs]


def _validate_zip(path: Path, task: str, label: str, max_bytes: int) -> dict[str, Any]:
    """Open the upload as a job will (safe extraction, every image checked), with bounded disk
    and memory: extracted beside the upload (so removed with it, whatever happens), at most
    ``max_bytes`` uncompressed, images checked one at a time and none kept. Messages name the
    upload (``label``) and its members, never a server path; 422 on failure."""
    from pipeline.data.coco import load_dataset  # the data stack loads on the first upload, not at start-up
    from pipeline.data.errors import DataError
    from pipeline.data.sources import extract_zip

    tmp = str(path.parent)

    def shown(message: str) -> str:  # the last line of defence: no message may show our temp folder
        return message.replace(tmp + "/", "").replace(tmp, label)[:2000]

    try:
        folder = extract_zip(path, label=label, dest_root=path.parent / "extracted", max_bytes=max_bytes)
        ds = load_dataset(folder, task, label=label, keep_images=False)
    except DataError as e:
        raise HTTPException(422, f"upload rejected: {shown(str(e))}") from None
    n = sum(len(v) for v in ds.splits.values())
    return {"images": n, "categories": list(ds.categories), "warnings": [shown(str(w)) for w in ds.warnings[:50]]}
