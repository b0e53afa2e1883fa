"""A running stage's events into MongoDB: log lines, metric points and progress, fenced on
(job, attempt) so a worker that lost its job cannot write over its successor's."""

from __future__ import annotations

import logging
import time
from typing import Any

from pymongo.errors import PyMongoError

from dreamforge.jobs import queue, streams
from pipeline.reporter import overall_progress

log = logging.getLogger("dreamforge.worker")


class MongoSink:
    """Buffers a stage's events and writes them to MongoDB fenced on (job, attempt).

    While the database is away the rows wait here (at most ``max_buffer`` of each kind; past
    that the oldest log lines go, with a note) and are written by the first flush that reaches
    it, under the numbers reserved for them (``streams.reserve``), so a flush repeated after an
    error stores nothing twice. A resumed or restarted stage repeats the steps since its last
    checkpoint: metric points of a step already stored for the stage (``stored_steps``, the job's
    ``metric_steps``) are skipped, so each step is stored once.
    """

    def __init__(self, db, job_id: str, attempt: int, max_rows: int = 500, *,
                 stored_steps: dict[str, int] | None = None, max_buffer: int = 100_000) -> None:  # fmt: skip
        self.db, self.job_id, self.attempt, self.max_rows = db, job_id, attempt, max_rows
        self.max_buffer = max_buffer
        self.logs: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {}
        self.progress: tuple[str, float] | None = None
        self.steps: dict[str, int] = {k: int(v) for k, v in (stored_steps or {}).items()}
        self._new_steps: dict[str, int] = {}
        self._latest_values: dict[str, dict[str, float]] = {}
        self._reserved: dict[str, list[dict[str, Any]]] = {"logs": [], "metrics": []}
        self._dropped = 0
        self._flushed_at = time.monotonic()

    def log(self, message: str, level: str = "info", stage: str | None = None) -> None:
        self.logs.append({"t": time.time(), "level": level, "stage": stage, "message": message})

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "log":
            self.logs.append({"t": ev.get("t", time.time()), "level": ev.get("level", "info"), "stage": ev.get("stage"),
                              "message": str(ev.get("message", ""))[:10_000]})  # fmt: skip
        elif kind == "metric":
            values = {k: float(v) for k, v in ev.items() if k not in ("t", "type", "stage", "step", "attempt")
                      and isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
            stage, step = ev["stage"], int(ev.get("step", 0))
            # A validation check reports at a step the training log may report too: its own series.
            series = f"{stage}:val" if any(k.startswith("val_") for k in values) else stage
            if "train_runtime" not in values:  # the end-of-training summary shares the last step
                if step <= self.steps.get(series, -1):
                    return
                self.steps[series] = self._new_steps[series] = step
            self.metrics.append({"t": ev.get("t", time.time()), "stage": stage, "step": step, "values": values})
            # the stage's latest of every value (a validation point must not hide the latest loss)
            latest = self._latest_values.setdefault(stage, {})
            latest.update(values)
            self.latest[f"metrics.{stage}"] = {**latest, "step": step}
        elif kind == "progress":
            self.progress = (ev["stage"], overall_progress(ev["stage"], float(ev.get("fraction", 0))))
        elif kind == "stage":
            msg = f"stage {ev['stage']} {ev.get('state')}"
            if ev.get("seconds") is not None:
                msg += f" in {ev['seconds']:.1f}s"
            self.log(msg, stage=ev["stage"])
        if len(self.logs) + len(self.metrics) >= self.max_rows and time.monotonic() - self._flushed_at > 1.0:
            self.flush()  # no more than once a second while the database is away

    def flush(self, *, strict: bool = False) -> bool:
        """Write what is buffered; returns whether everything went out. A database error keeps
        the rows for the next flush (``strict``: raises it); ``LostLease`` always raises."""
        self._flushed_at = time.monotonic()
        try:
            self._write()
            return True
        except PyMongoError as e:
            if strict:
                raise
            log.warning("job %s: cannot reach the database (%s); %d log lines and %d metric points kept",
                        self.job_id, type(e).__name__, len(self.logs), len(self.metrics))  # fmt: skip
            self._bound()
            return False

    def _write(self) -> None:
        db, job_id, attempt = self.db, self.job_id, self.attempt
        if self._dropped:
            self.logs.insert(0, {"t": time.time(), "level": "warning", "stage": None,
                                 "message": f"{self._dropped} log lines were dropped while the database was away"})  # fmt: skip
            self._dropped = 0
        if self.logs:
            self._reserved["logs"] += streams.reserve(db, job_id, attempt, "logs", self.logs)
            self.logs = []
        if self.metrics or self.latest or self._new_steps:
            self._reserved["metrics"] += streams.reserve(db, job_id, attempt, "metrics", self.metrics, self.latest or None,
                                                       self._new_steps)  # fmt: skip
            self.metrics, self.latest, self._new_steps = [], {}, {}
        for kind, chunks in self._reserved.items():
            while chunks:
                streams.insert_chunks(db, kind, chunks[:1])
                chunks.pop(0)
        if self.progress:
            queue.set_progress(db, job_id, attempt, *self.progress)
            self.progress = None

    def _bound(self) -> None:
        """Keep the buffer bounded through a long outage: metric points are few and each one is
        a point of the curve, so log lines go first."""
        over = len(self.logs) - self.max_buffer
        if over > 0:
            del self.logs[:over]
            self._dropped += over
        over = len(self.metrics) - self.max_buffer
        if over > 0:
            del self.metrics[:over]
