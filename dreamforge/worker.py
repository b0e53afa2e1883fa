"""``dreamforge worker``: claims jobs from MongoDB and drives their stages through an executor.

One job at a time per worker; run as many workers as you have machines (or GPUs). A
heartbeat thread renews the lease and notices cancels; the stage loop resumes at the first
stage not yet done, so a job taken over after a crash repeats only the stage that was cut off.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from dreamforge import queue
from dreamforge.executors import Executor, LocalExecutor, StageOutcome
from dreamforge.github_status import start_sync_thread
from dreamforge.settings import Settings
from dreamforge.store import JOBS, REWARDS, client, ensure_indexes
from pipeline.config import STAGES
from pipeline.reporter import overall_progress

log = logging.getLogger("dreamforge.worker")


class MongoSink:
    """Buffers a stage's events and writes them to MongoDB fenced on (job, attempt)."""

    def __init__(self, db, job_id: str, attempt: int, max_rows: int = 500) -> None:
        self.db, self.job_id, self.attempt, self.max_rows = db, job_id, attempt, max_rows
        self.logs: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {}
        self.progress: tuple[str, float] | None = None

    def log(self, message: str, level: str = "info", stage: str | None = None) -> None:
        self.logs.append({"t": time.time(), "level": level, "stage": stage, "message": message})

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "log":
            self.logs.append({"t": ev.get("t", time.time()), "level": ev.get("level", "info"), "stage": ev.get("stage"),
                              "message": str(ev.get("message", ""))[:10_000]})  # fmt: skip
        elif kind == "metric":
            values = {k: float(v) for k, v in ev.items() if k not in ("t", "type", "stage", "step")
                      and isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
            row = {"t": ev.get("t", time.time()), "stage": ev["stage"], "step": int(ev.get("step", 0)), "values": values}
            self.metrics.append(row)
            self.latest[f"metrics.{ev['stage']}"] = {"step": row["step"], **values}
        elif kind == "progress":
            self.progress = (ev["stage"], overall_progress(ev["stage"], float(ev.get("fraction", 0))))
        elif kind == "stage":
            msg = f"stage {ev['stage']} {ev.get('state')}"
            if ev.get("seconds") is not None:
                msg += f" in {ev['seconds']:.1f}s"
            self.log(msg, stage=ev["stage"])
        if len(self.logs) + len(self.metrics) >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        if self.logs:
            queue.append(self.db, self.job_id, self.attempt, "logs", self.logs)
            self.logs = []
        if self.metrics or self.latest:
            queue.append(self.db, self.job_id, self.attempt, "metrics", self.metrics, self.latest or None)
            self.metrics, self.latest = [], {}
        if self.progress:
            queue.set_progress(self.db, self.job_id, self.attempt, *self.progress)
            self.progress = None


class Worker:
    def __init__(self, settings: Settings | None = None, executor: Executor | None = None,
                 worker_id: str | None = None) -> None:  # fmt: skip
        self.settings = settings or Settings()
        if executor is None and self.settings.executor == "modal":
            from dreamforge.modal_executor import ModalExecutor

            executor = ModalExecutor(self.settings)
        elif executor is None and self.settings.executor != "local":
            raise ValueError(f"DREAMFORGE_EXECUTOR={self.settings.executor!r}: use 'local' or 'modal'")
        self.executor = executor or LocalExecutor(poll_s=self.settings.poll_s)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.client = client(self.settings.require_uri())
        self.db = self.client[self.settings.db_name]
        self._indexed = False
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Claim and run jobs until stopped; survives the database going away and coming back."""
        last_reap = last_cleanup = 0.0
        start_sync_thread(self.db, self.settings, self._stop)  # commit statuses to GitHub (github_status.py)
        wake = queue.Wakeup(self.db, self._stop)  # a change stream: idle workers pick up new jobs at once
        while not self._stop.is_set():
            try:
                if not self._indexed:
                    ensure_indexes(self.db)
                    self._indexed = True
                if time.monotonic() - last_reap > self.settings.lease_s / 3:
                    queue.reap(self.db, limit=self.settings.infra_retries)
                    last_reap = time.monotonic()
                if time.monotonic() - last_cleanup > 600:
                    cleanup_temporary(self.settings, self.db)
                    last_cleanup = time.monotonic()
                if not self.run_once():
                    wake.wait(self.settings.poll_s)
            except PyMongoError as e:
                log.warning("database unavailable (%s); retrying", type(e).__name__)
                self._stop.wait(1.0)

    def run_once(self) -> bool:
        job = queue.claim(self.db, self.id, self.settings.lease_s)
        if job is None:
            return False
        self.run_job(job)
        return True

    # -- one job -------------------------------------------------------------------------
    def run_job(self, job: dict[str, Any]) -> None:
        job_id, attempt = job["_id"], job["attempt"]
        state = {"cancel": bool(job.get("cancel_requested")), "lost": False}
        beat = threading.Thread(target=self._heartbeat, args=(job_id, attempt, state), daemon=True)
        beat.start()
        try:
            self._run_stages(job, state)
        except queue.LostLease:
            log.warning("job %s attempt %s: lease lost, stopping", job_id, attempt)
        finally:
            state["done"] = True
            beat.join(5)

    def _heartbeat(self, job_id: str, attempt: int, state: dict) -> None:
        interval = max(self.settings.lease_s / 3, 0.1)
        while not state.get("done"):
            try:
                if queue.heartbeat(self.db, job_id, attempt, self.settings.lease_s):
                    state["cancel"] = True
            except queue.LostLease:
                state["lost"] = True
                return
            except PyMongoError:
                pass  # the lease is long enough to ride out a short outage
            time.sleep(interval)

    def workdir(self, job_id: str) -> Path:
        return self.settings.artifacts / job_id

    def _prepare(self, job: dict[str, Any], workdir: Path) -> None:
        """Write the job's config (and its stored reward) where the stage process reads them."""
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = dict(job["config"])
        if job.get("reward_ref"):
            doc = self.db[REWARDS].find_one({"_id": job["reward_ref"], "project_id": job["project_id"]})
            if doc is None:
                raise _UserError(f"reward {job['reward_ref']} no longer exists")
            (workdir / "reward.js").write_text(doc["source"])
            cfg["reward"] = str(workdir / "reward.js")
        (workdir / "config.json").write_text(json.dumps(cfg, indent=1))

    def _run_stages(self, job: dict[str, Any], state: dict) -> None:
        db, job_id, attempt = self.db, job["_id"], job["attempt"]
        sink = MongoSink(db, job_id, attempt)
        workdir = self.workdir(job_id)
        sink.log(f"attempt {attempt} on worker {self.id}")
        try:
            self._prepare(job, workdir)
        except _UserError as e:
            sink.flush()
            queue.finish(db, job_id, attempt, "failed", error={"kind": "user", "message": str(e)})
            return

        def check() -> str | None:
            if state["lost"]:
                return "lost"
            if state["cancel"]:
                return "cancelled"
            return None

        for stage in STAGES:
            if job["stages"][stage]["status"] in ("done", "skipped"):
                continue
            if check():
                break
            elapsed = (queue.now() - job["created_at"]).total_seconds()
            if elapsed > self.settings.job_timeout_s:
                sink.flush()
                queue.finish(db, job_id, attempt, "failed", error={"kind": "timeout", "stage": stage,
                             "message": f"the job ran past its {self.settings.job_timeout_s:.0f} s limit"})  # fmt: skip
                return
            queue.stage_started(db, job_id, attempt, stage)
            sink.log(f"stage {stage} starting", stage=stage)
            outcome = self.executor.run_stage(job, stage, workdir, sink, check, self.settings.stage_timeout_s)
            if not self._settle(job, stage, outcome, sink):
                return
        if state["lost"]:
            raise queue.LostLease(job_id)
        if state["cancel"]:
            sink.flush()
            queue.finish(db, job_id, attempt, "cancelled", error={"kind": "cancelled", "message": self._cancel_reason(job_id)})
            return
        sink.log("job succeeded")
        sink.flush()
        queue.finish(db, job_id, attempt, "succeeded", result=job_result(workdir / "out"))

    def _cancel_reason(self, job_id: str) -> str:
        """Why a running job was cancelled: a newer push of its branch, or the user."""
        doc = self.db[JOBS].find_one({"_id": job_id}, {"superseded_by": 1}) or {}
        return doc.get("superseded_by") or "cancelled by the user"

    def _settle(self, job: dict[str, Any], stage: str, outcome: StageOutcome, sink: MongoSink) -> bool:
        """Record how a stage ended; returns whether the job goes on to the next stage."""
        db, job_id, attempt = self.db, job["_id"], job["attempt"]
        if outcome.kind == "lost":
            raise queue.LostLease(job_id)
        if outcome.kind == "done":
            sink.flush()
            queue.stage_finished(db, job_id, attempt, stage, "done", outcome.info)
            return True
        sink.log(f"stage {stage}: {outcome.message}", level="error", stage=stage)
        sink.flush()
        if outcome.kind == "cancelled":
            queue.stage_finished(db, job_id, attempt, stage, "cancelled", {})
            queue.finish(db, job_id, attempt, "cancelled", error={"kind": "cancelled", "stage": stage,
                         "message": self._cancel_reason(job_id)})  # fmt: skip
        elif outcome.kind in ("user_error", "timeout"):
            queue.stage_finished(db, job_id, attempt, stage, "failed", {})
            kind = "user" if outcome.kind == "user_error" else "timeout"
            queue.finish(db, job_id, attempt, "failed", error={"kind": kind, "stage": stage, "message": outcome.message})
        else:
            queue.retry_later(db, job_id, attempt, stage, outcome.message, limit=self.settings.infra_retries,
                              backoff_s=self.settings.backoff_s)  # fmt: skip
        return False


class _UserError(Exception):
    pass


def job_result(out: Path) -> dict[str, Any]:
    """The model's metadata for the job document: metrics per stage, sizes, artifact paths."""
    path = out / "metrics.json"
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    ev = record.get("evaluation") or {}
    key = ev.get("primary_metric")
    release = ev.get("release") or {}
    return {
        "primary_metric": key,
        "models": ev.get("models", {}),
        "release": release,
        "train_fit": ev.get("train_fit") or {},
        "verdict": ev.get("verdict") or {},
        "selection": ev.get("selection") or {},
        "artifacts": {name: str(out / name) for name in ("model", "model-4bit", "metrics.json", "README.md")
                      if (out / name).exists()},  # fmt: skip
        "wall_seconds": record.get("wall_seconds"),
    }


def cleanup_temporary(settings: Settings, db) -> list[str]:
    """Delete intermediate checkpoints and unpacked datasets of jobs finished longer ago than the
    retention; the final models (``out/model``, ``out/model-4bit``) and metrics stay."""
    cutoff = queue.now().timestamp() - settings.temp_retention_s
    removed = []
    for job_dir in settings.artifacts.glob("job_*"):
        doc = db["jobs"].find_one({"_id": job_dir.name}, {"status": 1, "finished_at": 1})
        if not doc or doc.get("status") not in ("succeeded", "failed", "cancelled", "dead"):
            continue
        if doc.get("finished_at") and doc["finished_at"].timestamp() > cutoff:
            continue
        for tmp in [job_dir / "out" / "stages", job_dir / "dataset.zip"]:
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(str(tmp))
    return removed


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    w = Worker()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        w.run_forever()
    except KeyboardInterrupt:
        w.stop()


if __name__ == "__main__":
    main()
