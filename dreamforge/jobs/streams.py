"""A job's log lines and metric points: numbered per job under the lease, stored in chunks.

Only the lease owner appends; every row gets a dense sequence number (``seq``) that readers
page by (``GET /api/jobs/{id}/logs?after=SEQ``), across takeovers and database outages.
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from dreamforge.jobs.queue import LostLease, fence, fenced
from dreamforge.store import JOBS, LOGS, METRICS

# Next sequence numbers per (job, attempt, kind): only the lease owner appends, so after one
# read the counter lives here and each batch costs one fenced update_one and one insert_many.
_SEQ: dict[tuple[str, int, str], int] = {}


def append(db: Database, job_id: str, attempt: int, kind: str, rows: list[dict[str, Any]],
           latest: dict[str, Any] | None = None, steps: dict[str, int] | None = None) -> None:  # fmt: skip
    """Append log lines (``kind="logs"``) or metric points (``"metrics"``) with sequence numbers:
    :func:`reserve` then :func:`insert_chunks`."""
    insert_chunks(db, kind, reserve(db, job_id, attempt, kind, rows, latest, steps))


def reserve(db: Database, job_id: str, attempt: int, kind: str, rows: list[dict[str, Any]],
            latest: dict[str, Any] | None = None, steps: dict[str, int] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Number ``rows`` and return them as chunk documents for :func:`insert_chunks`.

    The range is reserved by a fenced ``$inc`` of the job's counter, so numbers are unique and
    dense per job across takeovers, and a worker that lost its lease writes nothing. ``steps``
    raises the job's ``metric_steps.<stage>``, the newest training step stored per stage, which a
    resumed stage reads to skip the steps it repeats (``sink.MongoSink``). After a database
    error nobody knows whether the ``$inc`` happened, so the counter is read again next time
    (a gap in the numbers, never a number used twice).
    """
    if not rows and not latest and not steps:
        return []
    counter = "log_seq" if kind == "logs" else "metric_seq"
    key = (job_id, attempt, kind)
    update: dict[str, Any] = {"$inc": {counter: len(rows)}}
    if latest:
        update["$set"] = dict(latest)
    if steps:
        update["$max"] = {f"metric_steps.{stage}": int(step) for stage, step in steps.items()}
    try:
        if key not in _SEQ:
            doc = db[JOBS].find_one(fence(job_id, attempt), {counter: 1})
            if doc is None:
                raise LostLease(job_id)
            _SEQ[key] = int(doc.get(counter, 0))
        fenced(db, job_id, attempt, update)
    except PyMongoError:
        _SEQ.pop(key, None)
        raise
    first = _SEQ[key] + 1
    _SEQ[key] += len(rows)
    # One document per chunk of up to CHUNK rows (MongoDB's bucket pattern): SecantusDB
    # inserts ~3.5k small documents/s, so a document per log line could not keep up.
    rows = [{**r, "seq": first + i} for i, r in enumerate(rows)]
    chunks = [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)]
    return [{"job_id": job_id, "seq": c[-1]["seq"], "first": c[0]["seq"], "attempt": attempt, "rows": c} for c in chunks]


def insert_chunks(db: Database, kind: str, chunks: list[dict[str, Any]]) -> None:
    """Store numbered chunks; safe to repeat after an error: a chunk already stored (its
    acknowledgement lost with the connection) is a duplicate ``(job_id, seq)`` and skipped."""
    if not chunks:
        return
    try:
        db[LOGS if kind == "logs" else METRICS].insert_many([dict(c) for c in chunks], ordered=False)
    except BulkWriteError as e:
        if any(err.get("code") != DUPLICATE_KEY for err in e.details.get("writeErrors", [])) or e.details.get("writeConcernErrors"):
            raise


CHUNK = 500
DUPLICATE_KEY = 11000  # MongoDB's error code


def read_rows(chunks: list[dict[str, Any]], after: int, limit: int) -> list[dict[str, Any]]:
    """Flatten chunk documents (any order) into rows with ``seq > after``, oldest first."""
    rows = [r for c in sorted(chunks, key=lambda c: c["seq"]) for r in c["rows"] if r["seq"] > after]
    return rows[:limit]


def reset_seq(job_id: str) -> None:
    """Forget this process's sequence counters of ``job_id``: another process (a Modal stage
    function) appended for the same attempt, so the next append re-reads them from the job."""
    for key in [k for k in _SEQ if k[0] == job_id]:
        _SEQ.pop(key, None)
