"""The ``jobs`` collection is the queue.

A queued job carries ``queue_key`` (its ready time, then its id); a claim takes the smallest
ready key atomically, removes the key, bumps ``attempt`` and sets a lease. Every later write
of the worker is fenced on ``(_id, attempt)``: after a takeover the old worker's writes match
nothing, so a paused worker that wakes up cannot overwrite the new one's state. The reaper
returns jobs whose lease expired to the queue, counting an infrastructure failure against the
stage that was running; past the stage's budget the job is dead-lettered with its reason.
User errors (bad data, bad reward, bad config) fail the job at once: retrying cannot fix them.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from dreamforge.schemas import FINAL_STATUSES, new_stages
from dreamforge.store import JOBS, LOGS, METRICS


def now() -> datetime:
    return datetime.now(UTC)


def queue_key(ready_at: datetime, job_id: str) -> str:
    """Sorts by ready time as a string (one field for filter and sort, see ``store``)."""
    return ready_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "|" + job_id


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def new_job(
    project_id: str,
    config: dict[str, Any],
    config_hash: str,
    *,
    source: dict[str, Any],
    idempotency_key: str | None = None,
    dedupe_key: str | None = None,
    reward_ref: str | None = None,
    status: str = "queued",
) -> dict[str, Any]:
    t = now()
    job_id = new_job_id()
    doc: dict[str, Any] = {
        "_id": job_id,
        "project_id": project_id,
        "status": status,
        "config": config,
        "config_hash": config_hash,
        "preset": config.get("preset"),
        "task": config.get("task", "detect"),
        "source": source,
        "stages": new_stages(),
        "stage": None,
        "progress": 0.0,
        "metrics": {},
        "error": None,
        "attempt": 0,
        "infra_failures": {},
        "log_seq": 0,
        "metric_seq": 0,
        "cancel_requested": False,
        "created_at": t,
        "updated_at": t,
    }
    if status == "queued":
        doc["queue_key"] = queue_key(t, job_id)
    if idempotency_key:
        doc["idempotency_key"] = idempotency_key
    if dedupe_key:
        doc["dedupe_key"] = dedupe_key
    if reward_ref:
        doc["reward_ref"] = reward_ref
    return doc


def claim(db: Database, worker_id: str, lease_s: float) -> dict[str, Any] | None:
    t = now()
    return db[JOBS].find_one_and_update(
        {"queue_key": {"$lte": queue_key(t, "~")}},
        {
            "$set": {"status": "running", "worker": worker_id, "lease_expires": t + timedelta(seconds=lease_s),
                     "updated_at": t, "claimed_at": t},
            "$unset": {"queue_key": ""},
            "$inc": {"attempt": 1},
        },
        sort=[("queue_key", 1)],
        return_document=ReturnDocument.AFTER,
    )  # fmt: skip


def fence(job_id: str, attempt: int) -> dict[str, Any]:
    return {"_id": job_id, "attempt": attempt, "status": "running"}


class LostLease(Exception):
    """This worker no longer owns the job (reaped and taken over, or cancelled and finished)."""


def _fenced(db: Database, job_id: str, attempt: int, update: dict[str, Any], **kw) -> dict[str, Any]:
    update.setdefault("$set", {})["updated_at"] = now()
    doc = db[JOBS].find_one_and_update(fence(job_id, attempt), update, return_document=ReturnDocument.AFTER, **kw)
    if doc is None:
        raise LostLease(job_id)
    return doc


def heartbeat(db: Database, job_id: str, attempt: int, lease_s: float) -> bool:
    """Renew the lease; returns whether a cancel was requested. Raises LostLease."""
    doc = _fenced(db, job_id, attempt, {"$set": {"lease_expires": now() + timedelta(seconds=lease_s)}},
                  projection={"cancel_requested": 1})  # fmt: skip
    return bool(doc.get("cancel_requested"))


def stage_started(db: Database, job_id: str, attempt: int, stage: str) -> None:
    _fenced(db, job_id, attempt, {
        "$set": {f"stages.{stage}.status": "running", f"stages.{stage}.started_at": now(), "stage": stage},
        "$inc": {f"stages.{stage}.attempts": 1},
    })  # fmt: skip


def stage_finished(db: Database, job_id: str, attempt: int, stage: str, status: str, info: dict[str, Any]) -> None:
    sets = {f"stages.{stage}.status": status, f"stages.{stage}.finished_at": now()}
    for k in ("seconds", "metrics", "artifact"):
        if info.get(k) is not None:
            sets[f"stages.{stage}.{k}"] = info[k]
    _fenced(db, job_id, attempt, {"$set": sets})


def set_progress(db: Database, job_id: str, attempt: int, stage: str, progress: float) -> None:
    _fenced(db, job_id, attempt, {"$set": {"progress": round(float(progress), 2), "stage": stage}})


def finish(db: Database, job_id: str, attempt: int, status: str, *, error: dict | None = None,
           result: dict | None = None) -> None:  # fmt: skip
    assert status in FINAL_STATUSES
    sets: dict[str, Any] = {"status": status, "finished_at": now(), "error": error}
    if status == "succeeded":
        sets["progress"] = 100.0
    if result is not None:
        sets["result"] = result
    _fenced(db, job_id, attempt, {"$set": sets, "$unset": {"lease_expires": "", "worker": ""}})


def retry_later(db: Database, job_id: str, attempt: int, stage: str, message: str, *, limit: int,
                backoff_s: float) -> str:  # fmt: skip
    """An infrastructure failure: back to the queue with exponential backoff, or dead past ``limit``."""
    doc = db[JOBS].find_one(fence(job_id, attempt), {"infra_failures": 1})
    if doc is None:
        raise LostLease(job_id)
    failures = int((doc.get("infra_failures") or {}).get(stage, 0)) + 1
    if failures > limit:
        _fenced(db, job_id, attempt, {"$set": {f"infra_failures.{stage}": failures}})
        finish(db, job_id, attempt, "dead", error={
            "kind": "infra", "stage": stage,
            "message": f"stage {stage} failed {failures} times for infrastructure reasons; last: {message}",
        })  # fmt: skip
        return "dead"
    ready = now() + timedelta(seconds=backoff_s * 2 ** (failures - 1))
    _fenced(db, job_id, attempt, {
        "$set": {"status": "queued", "queue_key": queue_key(ready, job_id), f"infra_failures.{stage}": failures,
                 f"stages.{stage}.status": "pending", "error": {"kind": "infra", "stage": stage, "message": message}},
        "$unset": {"lease_expires": "", "worker": ""},
    })  # fmt: skip
    return "queued"


def reap(db: Database, *, limit: int) -> list[str]:
    """Return jobs whose lease expired to the queue (or dead-letter them); returns their ids."""
    t = now()
    reaped = []
    for doc in db[JOBS].find({"lease_expires": {"$lt": t}}, {"attempt": 1, "stage": 1, "infra_failures": 1}).limit(100):
        stage = doc.get("stage") or "warm_start"
        failures = int((doc.get("infra_failures") or {}).get(stage, 0)) + 1
        flt = {"_id": doc["_id"], "attempt": doc["attempt"], "lease_expires": {"$lt": t}}
        common = {f"infra_failures.{stage}": failures, "updated_at": t}
        msg = f"the worker running stage {stage} stopped renewing its lease"
        if failures > limit:
            update = {"$set": {**common, "status": "dead", "finished_at": t,
                               "error": {"kind": "infra", "stage": stage, "message": f"{msg} ({failures} times)"}},
                      "$unset": {"lease_expires": "", "worker": ""}}  # fmt: skip
        else:
            update = {"$set": {**common, "status": "queued", "queue_key": queue_key(t, doc["_id"]),
                               f"stages.{stage}.status": "pending",
                               "error": {"kind": "infra", "stage": stage, "message": msg}},
                      "$unset": {"lease_expires": "", "worker": ""}}  # fmt: skip
        if db[JOBS].update_one(flt, update).modified_count:
            reaped.append(doc["_id"])
    return reaped


def requeue(db: Database, job_id: str, project_id: str) -> bool:
    """Explicitly requeue a dead, failed or cancelled job; finished stages are kept."""
    t = now()
    res = db[JOBS].update_one(
        {"_id": job_id, "project_id": project_id, "status": {"$in": ["dead", "failed", "cancelled"]}},
        {"$set": {"status": "queued", "queue_key": queue_key(t, job_id), "infra_failures": {}, "error": None,
                  "cancel_requested": False, "updated_at": t}, "$unset": {"finished_at": ""}},
    )  # fmt: skip
    return bool(res.modified_count)


def append(db: Database, job_id: str, attempt: int, kind: str, rows: list[dict[str, Any]],
           latest: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Append log lines (``kind="logs"``) or metric points (``"metrics"``) with sequence numbers.

    The sequence range is allocated by a fenced ``$inc`` on the job, so numbers are unique and
    dense per job and a worker that lost its lease writes nothing.
    """
    if not rows:
        return
    counter = "log_seq" if kind == "logs" else "metric_seq"
    update: dict[str, Any] = {"$inc": {counter: len(rows)}}
    if latest:
        update["$set"] = latest
    doc = _fenced(db, job_id, attempt, update, projection={counter: 1})
    first = int(doc[counter]) - len(rows) + 1
    docs = [{**r, "job_id": job_id, "seq": first + i, "attempt": attempt} for i, r in enumerate(rows)]
    db[LOGS if kind == "logs" else METRICS].insert_many(docs, ordered=False)
