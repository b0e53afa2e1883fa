"""Jobs: submit, read, list, cancel, requeue and approve (the state changes are ``queue``'s)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project, own_job
from dreamforge.api.views import JOB_FIELDS, job_view
from dreamforge.jobs import queue
from dreamforge.jobs.submit import IdempotencyConflict, NotFound, submit
from dreamforge.schemas import REQUEUABLE_STATUSES, JobPage, JobView, TrainRequest
from dreamforge.store import JOBS
from pipeline.config import ConfigError

router = APIRouter(tags=["jobs"])


@router.post("/api/train", status_code=201)
async def train(db: Db, body: TrainRequest, pid: Project,
                idempotency_key: Annotated[str | None, Header(max_length=200)] = None):  # fmt: skip
    """Validate and enqueue a training job; answers its ``jobId``. The same
    ``Idempotency-Key`` with the same body returns the first job (200) instead of a second
    one; with a different body it is a 409."""
    try:
        doc, created = await submit(db, pid, body, idempotency_key=idempotency_key)
    except ConfigError as e:
        raise HTTPException(422, [{"loc": e_["loc"].split(".") if e_["loc"] else [], "msg": e_["msg"]}
                                  for e_ in e.errors]) from None  # fmt: skip
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    except IdempotencyConflict as e:
        raise HTTPException(409, str(e)) from None
    body_out: dict[str, Any] = {"jobId": doc["_id"], "status": doc["status"], "created": created}
    headers = {}
    if doc.get("warnings"):  # old spellings accepted (pipeline.deprecations): said here and in the job's log
        body_out["warnings"] = doc["warnings"]
        headers["Warning"] = errors.deprecation_warnings(doc["warnings"])
    return JSONResponse(body_out, status_code=201 if created else 200, headers=headers)


@router.get("/api/train/status", response_model=JobView, responses=errors.responses(404))
async def status(db: Db, pid: Project, jobId: str = Query(...)):  # noqa: N803 — the seed's API name
    return job_view(await own_job(db, jobId, pid))


@router.get("/api/jobs", response_model=JobPage)
async def jobs(db: Db, pid: Project, repo: str | None = None, branch: str | None = None,
               status: str | None = None, limit: int = Query(50, ge=1, le=200), cursor: str | None = None):  # fmt: skip
    want: dict[str, Any] = {}
    if repo:
        want["repo"] = repo
    if branch:
        want["branch"] = branch
    statuses = set(status.split(",")) if status else None

    def keep(d: dict[str, Any]) -> bool:
        src = d.get("source") or {}
        return all(src.get(k) == v for k, v in want.items()) and (statuses is None or d["status"] in statuses)

    # One range on one indexed field per page (see store.py); filters run on bounded pages.
    # Both bounds lie inside this project's keys whatever the cursor says.
    lower, upper = f"{pid}|", f"{pid}|~"
    if cursor is not None:
        if not queue.is_list_key(cursor, pid):
            raise HTTPException(422, [{"loc": ["query", "cursor"],
                                       "msg": "not a cursor of this project's job list; pass next_cursor back unchanged"}])  # fmt: skip
        upper = cursor
    docs: list[dict[str, Any]] = []
    for _ in range(20):
        page = await db[JOBS].find({"list_key": {"$gt": lower, "$lt": upper}}, JOB_FIELDS) \
            .sort("list_key", -1).limit(200).to_list(200)
        docs += [d for d in page if keep(d)]
        if len(page) < 200 or len(docs) >= limit:
            break
        upper = page[-1]["list_key"]
    docs = docs[:limit]
    nxt = docs[-1]["list_key"] if len(docs) == limit else None
    return JobPage(jobs=[job_view(d) for d in docs], next_cursor=nxt)


@router.get("/api/jobs/{job_id}", response_model=JobView, responses=errors.responses(404))
async def get_job(db: Db, job_id: str, pid: Project):
    return job_view(await own_job(db, job_id, pid))


@router.post("/api/jobs/{job_id}/cancel", status_code=202, response_model=JobView, responses=errors.responses(404))
async def cancel(db: Db, job_id: str, pid: Project):
    """A queued job (or one awaiting approval) is cancelled at once; a running one stops within seconds."""
    await queue.cancel(db, {"_id": job_id, "project_id": pid}, "cancelled by the user")
    return job_view(await own_job(db, job_id, pid))


@router.post("/api/jobs/{job_id}/requeue", response_model=JobView, responses=errors.responses(404, 409))
async def requeue(db: Db, job_id: str, pid: Project):
    """Put a dead, failed or cancelled job back in the queue; its finished stages are kept."""
    doc = await own_job(db, job_id, pid)
    if doc["status"] not in REQUEUABLE_STATUSES:
        raise HTTPException(409, f"job {job_id} is {doc['status']}; only dead, failed or cancelled jobs can be requeued")
    await db[JOBS].update_one({"_id": job_id, "project_id": pid, "status": doc["status"]},
                              queue.requeue_update(doc, queue.now()))  # fmt: skip
    return job_view(await own_job(db, job_id, pid))


@router.post("/api/jobs/{job_id}/approve", response_model=JobView, responses=errors.responses(404, 409))
async def approve(db: Db, job_id: str, pid: Project):
    """Let a fork's pull request train: the held job joins the queue."""
    approved = await queue.approve(db, job_id, pid)
    doc = await db[JOBS].find_one({"_id": job_id, "project_id": pid}, JOB_FIELDS)
    if doc is None:
        raise HTTPException(404, f"job {job_id} not found")
    if not approved:
        raise HTTPException(409, f"job {job_id} is {doc['status']}; only jobs awaiting approval can be approved")
    return job_view(doc)
