"""How an idle worker waits for work without polling the queue."""

from __future__ import annotations

import threading
import time

from pymongo.database import Database

from dreamforge.store import JOBS


class Wakeup:
    """An idle worker's wait for work: a change stream on jobs gaining a ``queue_key`` (a
    submit, an approval, a retry, a reap, a requeue), so a new job is claimed within
    milliseconds of its insert instead of at the next poll. ``wait`` still returns after
    ``timeout`` (delayed retries become ready with no write), and degrades to that plain poll
    where change streams are unavailable (a standalone mongod) or while the database is away."""

    PIPELINE = [{"$match": {"$or": [
        {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.queue_key": {"$exists": True}},
        {"operationType": "update", "updateDescription.updatedFields.queue_key": {"$exists": True}},
    ]}}]  # fmt: skip
    AWAIT_MS = 100  # one server-side wait; bounds how late a stop or a timeout is noticed

    def __init__(self, db: Database, stop: threading.Event | None = None) -> None:
        self.db, self.stop = db, stop or threading.Event()
        self._stream = None
        self._supported = True

    def _open(self) -> None:
        from pymongo.errors import OperationFailure, PyMongoError

        try:
            self._stream = self.db[JOBS].watch(self.PIPELINE, max_await_time_ms=self.AWAIT_MS)
        except OperationFailure as e:
            if e.code in (40573, 40324, 136):  # not a replica set / unknown stage / disabled
                self._supported = False
        except PyMongoError:
            pass  # the database is away: poll now, try again at the next wait

    def wait(self, timeout: float) -> bool:
        """Until a job may have become ready (True), ``timeout`` passed or stop was set (False)."""
        from pymongo.errors import PyMongoError

        deadline = time.monotonic() + timeout
        if self._stream is None and self._supported:
            self._open()
        if self._stream is None:
            self.stop.wait(timeout)
            return False
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if self._stream.try_next() is not None:
                    return True
            except PyMongoError:
                self.close()
                self.stop.wait(max(0.0, deadline - time.monotonic()))
                return False
        return False

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 — closing a broken cursor must not fail the worker
                pass
            self._stream = None
