"""Spending caps: a job's bill against its own caps and its project's (``schemas.Caps``).

The worker bills a running stage once a heartbeat (about a second): its seconds, its GPUs'
seconds and their price (Modal's per-second list prices, ``pipeline.preflight``; a local worker's
stages bill seconds only). The bill is added to the job's ``spend`` (fenced on its attempt) and to
its project's. When a cap is reached the worker asks the stage to checkpoint and stop, and the
job becomes ``paused`` with the reason (:func:`pause`); raising the cap (``PUT /api/jobs/{id}/caps``,
``PUT /api/caps``) puts it back in the queue (:func:`resume_paused`), and its stage resumes from
that checkpoint. Nothing is billed while a job waits, and nothing after it ends or is cancelled:
only a stage running under a worker's lease is.
"""

from __future__ import annotations

from typing import Any

from dreamforge.jobs import queue
from dreamforge.schemas import JobStatus
from dreamforge.store import JOBS, PROJECTS

# (spend field, cap field, words, spend → the cap's unit)
_MEASURES = (("gpu_seconds", "gpu_seconds", "GPU-seconds", 1.0), ("usd", "usd", "dollars", 1.0),
             ("seconds", "wall_minutes", "minutes of running stages", 1 / 60))  # fmt: skip


def over_cap(spend: dict[str, Any] | None, caps: dict[str, Any] | None, whose: str) -> str | None:
    """Why ``spend`` is at one of ``caps`` (``whose``: "the job's" / "the project's"), else None."""
    spend, caps = spend or {}, caps or {}
    for field, cap_field, words, scale in _MEASURES:
        cap = caps.get(cap_field)
        spent = float(spend.get(field) or 0.0) * scale
        if cap is not None and spent >= cap:
            return f"{whose} cap of {cap:g} {words} reached ({spent:.4g} spent)"
    return None


def cap_reason(db, job: dict[str, Any]) -> str | None:
    """Why ``job`` may not run now: its own cap or its project's, else None."""
    project = db[PROJECTS].find_one({"_id": job["project_id"]}, {"caps": 1, "spend": 1}) or {}
    return over_cap(job.get("spend"), job.get("caps"), "the job's") or over_cap(project.get("spend"), project.get("caps"),
                                                                              "the project's")  # fmt: skip


def cap_reason_of(db, job_id: str) -> str | None:
    return cap_reason(db, db[JOBS].find_one({"_id": job_id}, {"project_id": 1, "spend": 1, "caps": 1}) or {"project_id": None})


def bill(db, job_id: str, attempt: int, seconds: float, gpus: int, usd_per_s: float) -> str | None:
    """Add a running stage's last ``seconds`` to the job's and its project's spend; returns why
    the job must pause now, else None. Raises ``LostLease`` when the attempt no longer runs."""
    inc = {"spend.seconds": seconds, "spend.gpu_seconds": seconds * gpus, "spend.usd": seconds * usd_per_s}
    queue.fenced(db, job_id, attempt, {"$inc": inc})
    job = db[JOBS].find_one({"_id": job_id}, {"project_id": 1, "spend": 1, "caps": 1}) or {}
    if job.get("project_id"):
        db[PROJECTS].update_one({"_id": job["project_id"]}, {"$inc": inc})
    return cap_reason(db, job) if job else None


def pause(db, job: dict[str, Any], attempt: int, stage: str, reason: str) -> None:
    """A running job at a cap becomes ``paused``: out of the queue, its stage to run again (from
    its checkpoint) when resumed; a GitHub job's commit status is due."""
    t = queue.now()
    sets: dict[str, Any] = {"status": JobStatus.PAUSED, "paused": {"reason": reason, "stage": stage, "at": t},
                            f"stages.{stage}.status": "pending"}  # fmt: skip
    if (job.get("source") or {}).get("kind") == "github":
        sets["github_outbox"] = queue.stamp(t)
    queue.fenced(db, job["_id"], attempt, {"$set": sets, "$unset": {"lease_expires": "", "worker": ""}})


async def resume_paused(db, flt: dict[str, Any]) -> list[str]:
    """Put the paused jobs ``flt`` matches back in the queue when no cap holds them any more (on
    the API's async database); returns their ids."""
    resumed = []
    async for job in db[JOBS].find({**flt, "status": JobStatus.PAUSED}, {"project_id": 1, "spend": 1, "caps": 1, "source": 1}):
        project = await db[PROJECTS].find_one({"_id": job["project_id"]}, {"caps": 1, "spend": 1}) or {}
        if over_cap(job.get("spend"), job.get("caps"), "") or over_cap(project.get("spend"), project.get("caps"), ""):
            continue
        update = queue.requeue_update(job, queue.now())
        update["$unset"]["paused"] = ""
        res = await db[JOBS].update_one({"_id": job["_id"], "status": JobStatus.PAUSED}, update)
        if res.modified_count:
            resumed.append(job["_id"])
    return resumed

