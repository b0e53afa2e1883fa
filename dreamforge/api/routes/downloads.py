"""``GET /api/jobs/{id}/artifacts``: what a finished job left (its models and reports), with
sizes, which model the evaluation released, and the command that serves it.
``GET /api/jobs/{id}/artifacts/{name}``: one of them, a model folder as a tar
(``dreamforge.api.tarball``), a file as itself, with ``Content-Length`` and ``Range`` (resume).

The names and paths come from the job's result, as the worker recorded them
(``dreamforge.worker.job_result``); a path is only looked at when it lies under the artifacts
root (``dreamforge.api.artifacts.relative``). Where the API shares no disk with the artifacts
(Modal's ``web``) the list is the same, with sizes null.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse

from dreamforge.api import errors, tarball
from dreamforge.api.artifacts import relative
from dreamforge.api.deps import AppSettings, Db, Project, own_job
from dreamforge.schemas import ArtifactList, ArtifactView

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

MODELS = {"model": "16-bit", "model-4bit": None}  # the 4-bit one's format is the job's quantization


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=errors.responses(404, 409))
async def list_artifacts(db: Db, settings: AppSettings, job_id: str, pid: Project) -> ArtifactList:
    """The job's artifacts; only a succeeded job has them (409 otherwise)."""
    doc = await own_job(db, job_id, pid, {"status": 1, "result": 1})
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; its artifacts are listed once it has succeeded")
    result = doc.get("result") or {}
    release = result.get("release") or {}
    released = "model" if release.get("release_format") in (None, "16-bit") else "model-4bit"
    views = []
    for name, path in (result.get("artifacts") or {}).items():
        size, files = await asyncio.to_thread(_size, settings.artifacts, path)
        is_model = name in MODELS
        fmt = (MODELS[name] or release.get("quantization")) if is_model else None
        views.append(ArtifactView(name=name, kind="model" if is_model else "file", format=fmt,
                                  released=is_model and name == released, bytes=size, files=files))  # fmt: skip
    return ArtifactList(jobId=job_id, artifacts=views, serve=f"dreamforge serve {job_id}")


@router.get("/{job_id}/artifacts/{name}", responses={
    **errors.responses(404, 409, 416),
    200: {"description": "The artifact: a model folder as an uncompressed tar, a file as itself.",
          "content": {"application/x-tar": {}, "application/octet-stream": {}}},
    206: {"description": "The byte range the Range header asked for (a resumed download)."},
}, response_class=Response)  # fmt: skip
async def download(db: Db, settings: AppSettings, job_id: str, name: str, pid: Project,
                   range: str | None = Header(None)) -> Response:  # noqa: A002 — the header's name  # fmt: skip
    """Download one artifact (names from ``GET …/artifacts``); send ``Range: bytes=N-`` to resume."""
    doc = await own_job(db, job_id, pid, {"status": 1, "result": 1})
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; its artifacts can be downloaded once it has succeeded")
    recorded = (doc.get("result") or {}).get("artifacts") or {}
    if name not in recorded:
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}; it has: {', '.join(recorded) or 'none'}")
    rel = relative(str(recorded[name]), settings.artifacts)
    path = settings.artifacts / rel if rel is not None else None
    if path is None or not path.exists():
        raise HTTPException(404, f"job {job_id}: {name} is not on this server's disk (where the API does not share "
                                 "the workers' disk, as on Modal, fetch it from the artifacts volume)")  # fmt: skip
    if path.is_file():
        return FileResponse(path, filename=name)  # Starlette answers Range itself
    tar = await asyncio.to_thread(tarball.plan, path, f"{job_id}-{name}")
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{job_id}-{name}.tar"'}
    try:
        span = tarball.byte_range(range, tar.size)
    except ValueError as e:
        raise HTTPException(416, f"Range {e}: the archive is {tar.size} bytes",
                            headers={"Content-Range": f"bytes */{tar.size}"}) from None  # fmt: skip
    start, end = span or (0, tar.size - 1)
    headers["Content-Length"] = str(end - start + 1)
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{tar.size}"
    return StreamingResponse(tar.read(start, end), status_code=206 if span else 200, media_type="application/x-tar", headers=headers)


def _size(root: Path, path: Any) -> tuple[int | None, int | None]:
    """(bytes, files) of an artifact on this disk, (None, None) where it is not here to measure."""
    rel = relative(str(path), root)
    if rel is None:
        return None, None
    p = root / rel
    if p.is_file():
        return p.stat().st_size, 1
    if p.is_dir():
        sizes = [f.stat().st_size for f in p.rglob("*") if f.is_file()]
        return sum(sizes), len(sizes)
    return None, None
