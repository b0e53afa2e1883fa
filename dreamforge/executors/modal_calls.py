"""Who owns a stage's Modal call: bookkeeping on the job document, shared by the worker side
(``modal_executor``) and the function side (``modal_stage``).

``modal_calls.<stage>`` on the job holds ``{token, attempt, call_id, gpu}``. The executor writes
the token (fenced on job and attempt) *before* it spawns, then the call id right after. The
function refuses to train unless its token is the stored one, so a worker that crashed between
spawning and recording, and the worker that then respawned, never both pay for a GPU run: the
older call sees a different token and exits. A takeover that finds a call id adopts the call
(``attempt`` is moved to the new owner) instead of spawning again.
"""

from __future__ import annotations

import secrets
from typing import Any

from pymongo.database import Database

from dreamforge.jobs import queue
from dreamforge.schemas import FINAL_STATUSES
from dreamforge.store import JOBS


def new_token() -> str:
    return secrets.token_hex(12)


def _set(db: Database, job_id: str, attempt: int, update: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """A fenced write in ``queue``'s style; raises LostLease when (job, attempt) is not running."""
    update.setdefault("$set", {})["updated_at"] = queue.now()
    res = db[JOBS].update_one({**queue.fence(job_id, attempt), **(extra or {})}, update)
    if not res.matched_count:
        raise queue.LostLease(job_id)


def record_token(db: Database, job_id: str, attempt: int, stage: str, token: str, gpu: str | None) -> None:
    _set(db, job_id, attempt, {"$set": {f"modal_calls.{stage}": {"token": token, "attempt": attempt, "call_id": None,
                                                                  "gpu": gpu, "spawned_at": queue.now()}}})  # fmt: skip


def record_call(db: Database, job_id: str, attempt: int, stage: str, token: str, call_id: str) -> None:
    _set(db, job_id, attempt, {"$set": {f"modal_calls.{stage}.call_id": call_id}},
         extra={f"modal_calls.{stage}.token": token})  # fmt: skip


def adopt(db: Database, job_id: str, attempt: int, stage: str) -> None:
    """This attempt now owns the stage's running call; the call's writes follow it."""
    _set(db, job_id, attempt, {"$set": {f"modal_calls.{stage}.attempt": attempt}})


def forget(db: Database, job_id: str, attempt: int, stage: str) -> None:
    """The call ended without a model: a retry of the stage spawns a new one."""
    _set(db, job_id, attempt, {"$unset": {f"modal_calls.{stage}": ""}})


def owner(db: Database, job_id: str, stage: str, token: str) -> tuple[str, int | None]:
    """From the function's side: ``("run", attempt)`` while the call is still the job's,
    ``("wait", attempt)`` while the job waits for a worker to take it over, ``("cancelled", …)``
    when the user cancelled, ``("superseded", None)`` when another call replaced this one or
    the job is over."""
    doc = db[JOBS].find_one({"_id": job_id}, {"status": 1, "attempt": 1, "cancel_requested": 1, f"modal_calls.{stage}": 1})
    call = ((doc or {}).get("modal_calls") or {}).get(stage) or {}
    if doc is None:
        return "superseded", None
    if doc.get("cancel_requested"):  # before the token: a cancelled job's worker forgets the call
        return "cancelled", call.get("attempt")
    if call.get("token") != token or doc["status"] in FINAL_STATUSES:
        return "superseded", None
    attempt = int(call.get("attempt", doc["attempt"]))
    return ("run" if doc["status"] == "running" else "wait"), attempt
