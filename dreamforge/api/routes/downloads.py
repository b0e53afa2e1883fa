"""``GET /api/jobs/{id}/artifacts``: what a finished job left (its models and reports), with
sizes, which model the evaluation released, and the command that serves it.
``GET /api/jobs/{id}/artifacts/{name}``: one of them, a model folder as a tar
(``dreamforge.api.tarball``), a file as itself, with ``Content-Length`` and ``Range`` (resume).

The names and paths come from the job's result, as the worker recorded them
(``dreamforge.worker.job_result``); a path is only looked at when it lies under the artifacts
root (``dreamforge.api.artifacts.relative``). Both read through the artifacts store: the disk
locally, the Volume's API on Modal (``web`` mounts no Volume).
"""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from dreamforge.api import errors, tarball
from dreamforge.api.artifacts import relative, store_of
from dreamforge.api.deps import AppSettings, Db, Project, own_job
from dreamforge.schemas import ArtifactList, ArtifactView

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

MODELS = {"model": "16-bit", "model-4bit": None}  # the 4-bit one's format is the job's quantization


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=errors.responses(404, 409))
async def list_artifacts(request: Request, db: Db, settings: AppSettings, job_id: str, pid: Project) -> ArtifactList:
    """The job's artifacts; only a succeeded job has them (409 otherwise)."""
    doc = await own_job(db, job_id, pid, {"status": 1, "result": 1})
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; its artifacts are listed once it has succeeded")
    result = doc.get("result") or {}
    release = result.get("release") or {}
    released = "model" if release.get("release_format") in (None, "16-bit") else "model-4bit"
    store = store_of(request, settings.artifacts)
    views = []
    for name, path in (result.get("artifacts") or {}).items():
        rel = relative(str(path), settings.artifacts)
        entries = await store.files(rel) if rel is not None else None
        size, files = (sum(e.size for e in entries), len(entries)) if entries else (None, None)
        is_model = name in MODELS
        fmt = (MODELS[name] or release.get("quantization")) if is_model else None
        kind = "model" if is_model else "adapter" if name == "adapter" else "file"
        views.append(ArtifactView(name=name, kind=kind, format=fmt,
                                  released=is_model and name == released, bytes=size, files=files))  # fmt: skip
    return ArtifactList(jobId=job_id, artifacts=views, serve=f"dreamforge serve {job_id}")


@router.get("/{job_id}/artifacts/{name}", responses={
    **errors.responses(404, 409, 416),
    200: {"description": "The artifact: a model folder as an uncompressed tar, a file as itself.",
          "content": {"application/x-tar": {}, "application/octet-stream": {}}},
    206: {"description": "The byte range the Range header asked for (a resumed download)."},
}, response_class=Response)  # fmt: skip
async def download(request: Request, db: Db, settings: AppSettings, job_id: str, name: str, pid: Project,
                   range: str | None = Header(None)) -> Response:  # noqa: A002 — the header's name  # fmt: skip
    """Download one artifact (names from ``GET …/artifacts``); send ``Range: bytes=N-`` to resume."""
    doc = await own_job(db, job_id, pid, {"status": 1, "result": 1})
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; its artifacts can be downloaded once it has succeeded")
    recorded = (doc.get("result") or {}).get("artifacts") or {}
    if name not in recorded:
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}; it has: {', '.join(recorded) or 'none'}")
    rel = relative(str(recorded[name]), settings.artifacts)
    store = store_of(request, settings.artifacts)
    entries = await store.files(rel) if rel is not None else None
    if not entries:
        raise HTTPException(404, f"job {job_id}: {name} is no longer stored (its files were deleted)")
    if entries[0].name == "":  # a file, as itself
        tar, media, filename = tarball.Tarball(((rel, entries[0].size),), entries[0].size), "application/octet-stream", name
    else:
        tar, media, filename = tarball.plan(rel, entries, f"{job_id}-{name}"), "application/x-tar", f"{job_id}-{name}.tar"
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{filename}"'}
    try:
        span = tarball.byte_range(range, tar.size)
    except ValueError as e:
        raise HTTPException(416, f"Range {e}: the artifact is {tar.size} bytes",
                            headers={"Content-Range": f"bytes */{tar.size}"}) from None  # fmt: skip
    start, end = span or (0, tar.size - 1)
    headers["Content-Length"] = str(end - start + 1)
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{tar.size}"
    return StreamingResponse(tar.read(store, start, end), status_code=206 if span else 200, media_type=media, headers=headers)
