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

import re
import secrets
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from dreamforge.schemas import FINAL_STATUSES, REQUEUABLE_STATUSES, WAITING_STATUSES, JobStatus, new_stages
from dreamforge.store import JOBS, QUEUE_HEAD
from pipeline.stage_table import STAGES


def now() -> datetime:
    return datetime.now(UTC)


def stamp(t: datetime) -> str:
    """A time as a string that sorts like the time (keys on one indexed field, see ``store``)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def queue_key(ready_at: datetime, job_id: str) -> str:
    """Sorts by ready time as a string (one field for filter and sort, see ``store``)."""
    return stamp(ready_at) + "|" + job_id


def scoped(project_id: str, key: str) -> str:
    """Idempotency and dedupe keys are unique per project: stored as ``project|key``."""
    return f"{project_id}|{key}"


def list_key(project_id: str, created: datetime, job_id: str) -> str:
    return f"{project_id}|{created.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}|{job_id}"


_LIST_KEY_TAIL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\|[A-Za-z0-9_-]{1,64}")


def is_list_key(value: str, project_id: str) -> bool:
    """Whether ``value`` is a :func:`list_key` of ``project_id`` (a page cursor a client sends back)."""
    head = f"{project_id}|"
    return value.startswith(head) and _LIST_KEY_TAIL.fullmatch(value, len(head)) is not None


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
        "list_key": list_key(project_id, t, job_id),
    }
    if status == "queued":
        doc["queue_key"] = queue_key(t, job_id)
    if idempotency_key:
        doc["idempotency_key"] = scoped(project_id, idempotency_key)
    if dedupe_key:
        doc["dedupe_key"] = scoped(project_id, dedupe_key)
    if reward_ref:
        doc["reward_ref"] = reward_ref
    return doc


def claim(db: Database, worker_id: str, lease_s: float, *, candidates: int = 8) -> dict[str, Any] | None:
    """Take the oldest ready job. Optimistic: read a few ready keys (:func:`ready_jobs`), then a
    conditional ``update_one`` on (``_id``, ``queue_key``) wins for exactly one racer. Not
    ``find_one_and_update``: on SecantusDB it costs about 0.26 s at 10k documents even by
    ``_id``, against 1.5 ms for ``update_one`` (benchmarks/service.py)."""
    t = now()
    head = _head(db)
    for _ in range(3):  # racers took every candidate read: read again past them
        cands = ready_jobs(db, t, candidates, head)
        if not cands:
            return None
        if (job := _take(db, cands, head, worker_id, lease_s, t)) is not None:
            return job
    return None


def _take(db: Database, cands: list[dict[str, Any]], head: _Head, worker_id: str, lease_s: float,
          t: datetime) -> dict[str, Any] | None:  # fmt: skip
    for cand in cands:
        res = db[JOBS].update_one(
            {"_id": cand["_id"], "queue_key": cand["queue_key"]},
            {
                "$set": {"status": "running", "worker": worker_id, "lease_expires": t + timedelta(seconds=lease_s),
                         "updated_at": t, "claimed_at": t},
                "$unset": {"queue_key": ""},
                "$inc": {"attempt": 1},
            },
        )  # fmt: skip
        head.passed(db, cand["queue_key"])  # claimed by us or gone: either way no longer queued
        if res.modified_count:
            return db[JOBS].find_one({"_id": cand["_id"]})
    return None


# -- finding the oldest ready keys on a planner that fetches every match ----------------------
# SecantusDB fetches every document a filter matches before it applies the limit, so
# ``queue_key <= now`` costs ~80 µs per queued job (0.8 s at a 10k backlog). The claim instead
# reads bounded windows of the key range, starting at the queue's head: a key at or below every
# queued key. Keys only ever enter the queue at about "now" (a submit, a retry's backoff, a
# reap, a requeue), and claims remove the smallest, so the head only moves forward. A key
# written below the head (its stamp taken more than HEAD_LAG before its write, or another
# machine's clock behind) is a straggler: each claim first looks below the head, where normally
# nothing is, so none is ever lost. The head lives in memory per process and in one small
# document (``store.QUEUE_HEAD``) that new processes start from.
HEAD_LAG = timedelta(seconds=2)  # how far behind "now" the head of an empty queue is kept
_FRESH = 3 * HEAD_LAG  # an idle queue's head this close to now: read up to now at once
_MIN_WINDOW = timedelta(milliseconds=1)
_SAVE_EVERY_S = 1.0


class _Head:
    def __init__(self, key: str | None) -> None:
        self.key = key  # None: not known yet (a new database): the first read is a full one
        self.window = timedelta(milliseconds=50)  # learned: a span of keys that holds about 2n jobs
        self.saved_key, self.saved_at = key, 0.0
        self.idle = False  # the last read found the queue empty up to its "now"

    def passed(self, db: Database, key: str) -> None:
        """No key up to ``key`` is queued any more (as far as this process saw)."""
        if self.key is None or key > self.key:
            self.key = key
        if self.key != self.saved_key and time.monotonic() - self.saved_at >= _SAVE_EVERY_S:
            # $max: another process may have moved the shared head further already.
            db[QUEUE_HEAD].update_one({"_id": "head"}, {"$max": {"key": self.key}}, upsert=True)
            self.saved_key, self.saved_at = self.key, time.monotonic()


_HEADS: weakref.WeakKeyDictionary[Any, dict[str, _Head]] = weakref.WeakKeyDictionary()


def _head(db: Database) -> _Head:
    heads = _HEADS.setdefault(db.client, {})
    if db.name not in heads:
        doc = db[QUEUE_HEAD].find_one({"_id": "head"}) or {}
        heads[db.name] = _Head(doc.get("key"))
    return heads[db.name]


def _key_time(key: str) -> datetime:
    return datetime.strptime(key[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def _window(db: Database, flt: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return list(db[JOBS].find({"queue_key": flt}, {"queue_key": 1}).sort("queue_key", 1).limit(n))


def ready_jobs(db: Database, t: datetime, n: int, head: _Head | None = None) -> list[dict[str, Any]]:
    """Up to ``n`` ready jobs (``_id``, ``queue_key``), oldest first, reading only a few keys
    past the head: windows start at the learned span and double across empty stretches of
    time, so a gap costs a few empty reads and a backlog is read a few keys at a time."""
    head = head or _head(db)
    top = queue_key(t, "~")
    idle_head = queue_key(t - HEAD_LAG, "")
    if head.key is None:  # first claim on this database: one full read finds the head
        found = _window(db, {"$lte": top}, n)
        head.idle = not found
        if not found:
            head.passed(db, idle_head)
        return found
    below = _window(db, {"$lt": head.key}, n)  # stragglers: normally none
    if below:
        head.idle = False
        return below
    lo_key, lo = head.key, _key_time(head.key)
    # After an empty read only what arrived since is new: read it at once (an idle worker's
    # next job). Otherwise a burst may lie past the head: step in learned windows.
    w = t - lo if head.idle and t - lo <= _FRESH else head.window
    while True:
        hi = min(lo + w, t)
        hi_key = queue_key(hi, "~") if hi < t else top
        found = _window(db, {"$gte": lo_key, "$lte": hi_key}, n)
        if len(found) == n:  # learn the span that holds about 2n keys, for the next claim
            span = _key_time(found[-1]["queue_key"]) - _key_time(found[0]["queue_key"])
            head.window = max(2 * span, _MIN_WINDOW)
        head.idle = not found and hi >= t
        if found:
            return found
        # Nothing in [lo, hi]: the head may move there, but never closer to now than HEAD_LAG
        # (a job stamped just before now may still be on its way to the database).
        head.passed(db, min(hi_key, idle_head))
        if hi >= t:
            return []
        lo_key, lo, w = hi_key, hi, w * 2


def fence(job_id: str, attempt: int) -> dict[str, Any]:
    return {"_id": job_id, "attempt": attempt, "status": "running"}


class LostLease(Exception):
    """This worker no longer owns the job (reaped and taken over, or cancelled and finished)."""


def fenced(db: Database, job_id: str, attempt: int, update: dict[str, Any], extra: dict | None = None) -> bool:
    """Apply ``update`` only while (job, attempt) is running; raises LostLease otherwise."""
    update.setdefault("$set", {})["updated_at"] = now()
    res = db[JOBS].update_one({**fence(job_id, attempt), **(extra or {})}, update)
    if res.matched_count:
        return True
    if extra:
        return False
    raise LostLease(job_id)


def heartbeat(db: Database, job_id: str, attempt: int, lease_s: float) -> bool:
    """Renew the lease; returns whether a cancel was requested. Raises LostLease."""
    lease = {"$set": {"lease_expires": now() + timedelta(seconds=lease_s)}}
    if fenced(db, job_id, attempt, lease, extra={"cancel_requested": {"$ne": True}}):
        return False
    fenced(db, job_id, attempt, {"$set": {"lease_expires": now() + timedelta(seconds=lease_s)}})
    return True


def stage_started(db: Database, job_id: str, attempt: int, stage: str) -> None:
    fenced(db, job_id, attempt, {
        "$set": {f"stages.{stage}.status": "running", f"stages.{stage}.started_at": now(), "stage": stage},
        "$inc": {f"stages.{stage}.attempts": 1},
    })  # fmt: skip


def stage_finished(db: Database, job_id: str, attempt: int, stage: str, status: str, info: dict[str, Any]) -> None:
    sets = {f"stages.{stage}.status": status, f"stages.{stage}.finished_at": now()}
    for k in ("seconds", "metrics", "artifact"):
        if info.get(k) is not None:
            sets[f"stages.{stage}.{k}"] = info[k]
    fenced(db, job_id, attempt, {"$set": sets})


def set_progress(db: Database, job_id: str, attempt: int, stage: str, progress: float) -> None:
    fenced(db, job_id, attempt, {"$set": {"progress": round(float(progress), 2), "stage": stage}})


def finish(db: Database, job_id: str, attempt: int, status: str, *, error: dict | None = None,
           result: dict | None = None) -> None:  # fmt: skip
    assert status in FINAL_STATUSES
    sets: dict[str, Any] = {"status": status, "finished_at": now(), "error": error}
    if status == "succeeded":
        sets["progress"] = 100.0
    if result is not None:
        sets["result"] = result
    fenced(db, job_id, attempt, {"$set": sets, "$unset": {"lease_expires": "", "worker": ""}})


def retry_later(db: Database, job_id: str, attempt: int, stage: str, message: str, *, limit: int,
                backoff_s: float) -> str:  # fmt: skip
    """An infrastructure failure: back to the queue with exponential backoff, or dead past ``limit``."""
    doc = db[JOBS].find_one(fence(job_id, attempt), {"infra_failures": 1})
    if doc is None:
        raise LostLease(job_id)
    failures = int((doc.get("infra_failures") or {}).get(stage, 0)) + 1
    if failures > limit:
        # the stage is over too: a dead job must not show a stage still running
        fenced(db, job_id, attempt, {"$set": {f"infra_failures.{stage}": failures, f"stages.{stage}.status": "failed"}})
        finish(db, job_id, attempt, "dead", error={
            "kind": "infra", "stage": stage,
            "message": f"stage {stage} failed {failures} times for infrastructure reasons; last: {message}",
        })  # fmt: skip
        return "dead"
    ready = now() + timedelta(seconds=backoff_s * 2 ** (failures - 1))
    fenced(db, job_id, attempt, {
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
        stage = doc.get("stage") or STAGES[0]
        failures = int((doc.get("infra_failures") or {}).get(stage, 0)) + 1
        flt = {"_id": doc["_id"], "attempt": doc["attempt"], "lease_expires": {"$lt": t}}
        common = {f"infra_failures.{stage}": failures, "updated_at": t}
        msg = f"the worker running stage {stage} stopped renewing its lease"
        if failures > limit:
            update = {"$set": {**common, "status": "dead", "finished_at": t, f"stages.{stage}.status": "failed",
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


def requeue_update(job: dict[str, Any], t: datetime) -> dict[str, Any]:
    """The update that puts a dead, failed or cancelled job back in the queue (its finished
    stages are kept); a GitHub job's commit status becomes due again (``dreamforge.github.status``)."""
    sets: dict[str, Any] = {"status": "queued", "queue_key": queue_key(t, job["_id"]), "infra_failures": {},
                            "error": None, "cancel_requested": False, "updated_at": t}  # fmt: skip
    if (job.get("source") or {}).get("kind") == "github":
        sets["github_outbox"] = stamp(t)
    return {"$set": sets, "$unset": {"finished_at": "", "superseded_by": ""}}


def requeue(db: Database, job_id: str, project_id: str) -> bool:
    """Explicitly requeue a dead, failed or cancelled job (see :func:`requeue_update`)."""
    job = db[JOBS].find_one({"_id": job_id, "project_id": project_id}, {"status": 1, "source": 1})
    if job is None or job["status"] not in REQUEUABLE_STATUSES:
        return False
    res = db[JOBS].update_one({"_id": job_id, "status": job["status"]}, requeue_update(job, now()))
    return bool(res.modified_count)


async def cancel(db, flt: dict[str, Any], reason: str, *, superseded: bool = False) -> bool:
    """Cancel the job ``flt`` matches (on the API's async database): a job no worker holds yet
    (queued, or awaiting approval) ends at once; a running one is asked to stop and its worker
    ends it within seconds, saying ``reason``. ``superseded`` records that a newer push of the
    branch replaced it (the worker then reports the loss, not a user's cancel). True if the job
    changed."""
    t = now()
    extra = {"superseded_by": reason} if superseded else {}
    res = await db[JOBS].update_one(
        {**flt, "status": {"$in": list(WAITING_STATUSES)}},
        {"$set": {"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": t, "updated_at": t, **extra,
                  "error": {"kind": "cancelled", "message": reason}}, "$unset": {"queue_key": ""}},
    )  # fmt: skip
    if not res.modified_count:
        res = await db[JOBS].update_one({**flt, "status": JobStatus.RUNNING},
                                        {"$set": {"cancel_requested": True, "updated_at": t, **extra}})  # fmt: skip
    return bool(res.modified_count)


async def approve(db, job_id: str, project_id: str) -> bool:
    """Let a job awaiting approval (a fork's pull request) join the queue; its commit status
    becomes due (``dreamforge.github.status``). False if the job is not awaiting approval."""
    t = now()
    res = await db[JOBS].update_one(
        {"_id": job_id, "project_id": project_id, "status": JobStatus.AWAITING_APPROVAL},
        {"$set": {"status": JobStatus.QUEUED, "queue_key": queue_key(t, job_id), "updated_at": t, "approved_at": t,
                  "github_outbox": stamp(t)}},
    )  # fmt: skip
    return bool(res.modified_count)
