"""A job's log lines and metric points: pages by sequence number, and a server-sent event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project, own_job
from dreamforge.jobs import streams
from dreamforge.schemas import FINAL_STATUSES, LogLine, MetricPoint
from dreamforge.store import JOBS, LOGS, METRICS
from pipeline.deprecations import resolve_stage

router = APIRouter(prefix="/api/jobs/{job_id}", tags=["jobs"])

# Sequence numbers are stored as BSON 64-bit integers; a larger cursor cannot be compared.
SEQ_MAX = 2**63 - 1


async def tail(db, coll: str, job_id: str, after: int, limit: int, stage: str | None = None) -> list[dict[str, Any]]:
    """Rows with ``seq > after``: chunks are keyed by their last seq, so ``seq > after``
    selects exactly the chunks holding newer rows; read a few chunks at a time."""
    rows: list[dict[str, Any]] = []
    cursor_seq = after
    while len(rows) < limit:
        n_chunks = max(1, min(50, limit // streams.CHUNK + 2))
        chunks = await db[coll].find({"job_id": job_id, "seq": {"$gt": cursor_seq}}, {"rows": 1, "seq": 1}) \
            .limit(n_chunks).to_list(n_chunks)
        if not chunks:
            break
        got = streams.read_rows(chunks, cursor_seq, 10**9)
        cursor_seq = max(c["seq"] for c in chunks)
        rows += [r for r in got if stage is None or r.get("stage") == stage]
        if len(chunks) < n_chunks:
            break
    return rows[:limit]


@router.get("/logs", responses=errors.responses(404))
async def logs(db: Db, job_id: str, pid: Project, after: int = Query(0, ge=0, le=SEQ_MAX),
               limit: int = Query(1000, ge=1, le=5000),
               last: int | None = Query(None, ge=1, le=5000, description="Only the last N lines.")):  # fmt: skip
    """Log lines with ``seq > after``, oldest first; pass the last ``seq`` back to follow."""
    doc = await own_job(db, job_id, pid, {"_id": 1, "log_seq": 1})
    if last:  # sequence numbers are dense per job, so the last N lines start after log_seq - N
        after = max(after, int(doc.get("log_seq", 0)) - last)
    rows = await tail(db, LOGS, job_id, after, limit)
    return {"lines": [LogLine(**r).model_dump() for r in rows], "next": rows[-1]["seq"] if rows else after}


async def _owned(db: Db, job_id: str, pid: Project) -> str:
    await own_job(db, job_id, pid, {"_id": 1})  # before the stream starts: a 404 is still possible
    return job_id


# FastAPI's own server-sent events (fastapi.sse, 0.165): it encodes each event, sends a keep-alive
# comment every 15 s and stops when the client goes (this used to be written by hand).
@router.get("/logs/stream", response_class=EventSourceResponse, responses=errors.json_responses(404))
async def logs_stream(request: Request, db: Db, job_id: Annotated[str, Depends(_owned)],
                      after: int = Query(0, ge=0, le=SEQ_MAX)) -> AsyncIterator[ServerSentEvent]:  # fmt: skip
    """Server-sent events: one ``log`` event per line (its ``id`` the line's seq, so a reconnect
    resumes with ``?after=``), a ``status`` event on each change, and ``end`` when the job has
    finished and every line was sent."""
    seq, last_status = after, None
    while True:
        rows = await tail(db, LOGS, job_id, seq, 1000)
        for r in rows:
            seq = r["seq"]
            yield ServerSentEvent(event="log", id=str(seq), data=LogLine(**r).model_dump())
        doc = await db[JOBS].find_one({"_id": job_id}, {"status": 1, "progress": 1, "stage": 1})
        state = (doc["status"], doc.get("progress"), doc.get("stage"))
        if state != last_status:
            last_status = state
            yield ServerSentEvent(event="status", data={"status": state[0], "progress": state[1], "stage": state[2]})
        if doc["status"] in FINAL_STATUSES and not rows:
            yield ServerSentEvent(event="end", data={})
            return
        if await request.is_disconnected():
            return
        if not rows:
            await asyncio.sleep(0.5)


@router.get("/metrics", responses=errors.responses(404))
async def metrics(db: Db, job_id: str, pid: Project, after: int = Query(0, ge=0, le=SEQ_MAX), stage: str | None = None,
                  limit: int = Query(5000, ge=1, le=20000)):  # fmt: skip
    """Metric points (loss, reward, lr … per step) with ``seq > after``; the job's latest
    metrics and final per-stage evaluation are on the job itself."""
    note = None
    if stage is not None:
        try:
            stage, note = resolve_stage(stage)
        except KeyError as e:
            raise HTTPException(422, [{"loc": ["query", "stage"], "msg": str(e).strip("'\"")}]) from None
    await own_job(db, job_id, pid, {"_id": 1})
    rows = await tail(db, METRICS, job_id, after, limit, stage)
    body = {"points": [MetricPoint(**r).model_dump() for r in rows], "next": rows[-1]["seq"] if rows else after}
    if note is None:
        return body
    return JSONResponse({**body, "warnings": [note]}, headers={"Warning": errors.deprecation_warnings([note])})
