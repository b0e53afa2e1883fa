"""``dreamforge worker``: claims jobs from MongoDB and drives their stages through an executor.

One job at a time per worker; run as many workers as you have machines (or GPUs). A
heartbeat thread renews the lease and notices cancels, every second; the stage loop resumes at
the first stage not yet done, so a job taken over after a crash repeats only the stage that was
cut off. A worker that cannot renew its lease stops its stage before the lease runs out, keeps
what the stage reported, and goes on when the database is back if nobody took the job over.
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

from dreamforge.executors.local import Executor, LocalExecutor, StageOutcome
from dreamforge.executors.modal_executor import ModalExecutor, stage_rate
from dreamforge.github import gates
from dreamforge.github.status import start_sync_thread
from dreamforge.jobs import budgets, queue, streams, wakeup
from dreamforge.jobs.sink import MongoSink
from dreamforge.jobs.submit import stored_reward_file
from dreamforge.schemas import FINAL_STATUSES
from dreamforge.settings import Settings, SettingsError
from dreamforge.store import JOBS, REWARDS, client, ensure_indexes
from pipeline.config import STAGES, ConfigError, build_config
from pipeline.gate import BaselineModel
from pipeline.sealed import SEALED, open_sealed, reward_ref, seal

log = logging.getLogger("dreamforge.worker")


class Worker:
    def __init__(self, settings: Settings | None = None, executor: Executor | None = None,
                 worker_id: str | None = None) -> None:  # fmt: skip
        self.settings = settings or Settings()
        if executor is None and self.settings.executor == "modal":
            executor = ModalExecutor(self.settings)
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
        start_sync_thread(self.db, self.settings, self._stop)  # commit statuses to GitHub (github/status.py)
        wake = wakeup.Wakeup(self.db, self._stop)  # a change stream: idle workers pick up new jobs at once
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
        state = {"cancel": bool(job.get("cancel_requested")), "lost": False, "done": False,
                 "renewed": time.monotonic()}  # fmt: skip
        beat = threading.Thread(target=self._heartbeat, args=(job_id, attempt, state), daemon=True)
        beat.start()
        try:
            self._run_stages(job, state)
        except queue.LostLease:
            log.warning("job %s attempt %s: lease lost, stopping", job_id, attempt)
        finally:
            state["done"] = True
            beat.join(5)
            streams.reset_seq(job_id)  # this process's sequence counters of the job are done with

    @property
    def beat_s(self) -> float:
        """How often the heartbeat renews the lease. It is also how the worker hears of a cancel,
        so at least every second whatever the lease (README: cancel stops a stage within a
        second or two)."""
        return min(self.settings.lease_s / 3, 1.0)

    def _heartbeat(self, job_id: str, attempt: int, state: dict) -> None:
        while not state["done"]:
            t = time.monotonic()
            try:
                if queue.heartbeat(self.db, job_id, attempt, self.settings.lease_s):
                    state["cancel"] = True
                state["renewed"] = t  # the lease now runs until t + lease_s at the earliest
                billing = state.get("billing")  # (GPUs, $/s) while a stage runs: jobs/budgets.py
                if billing is not None:
                    since, state["billed_at"] = state["billed_at"], t
                    reason = budgets.bill(self.db, job_id, attempt, t - since, *billing)
                    if reason and not state.get("pause"):
                        state["pause"] = reason
            except queue.LostLease:
                state["lost"] = True
                return
            except PyMongoError:
                pass  # _owned() stops the stage if this lasts until the lease runs out
            except Exception:  # noqa: BLE001 — the heartbeat must outlive any one failed beat
                log.exception("job %s: heartbeat failed", job_id)
            time.sleep(max(self.beat_s - (time.monotonic() - t), 0.0))

    def _owned(self, state: dict) -> bool:
        """Whether this worker may still be sure it owns the job: one beat before the lease it
        last renewed runs out, it is not (a database outage, or a pause), and its stage stops
        before another worker can take the job over."""
        return not state["lost"] and time.monotonic() - state["renewed"] < self.settings.lease_s - self.beat_s

    def _retry(self, write, *args, **kw):
        """A fenced write that waits out a database outage: retried until it lands, the lease
        turns out lost (``LostLease``), or the worker is stopped."""
        while True:
            try:
                return write(*args, **kw)
            except PyMongoError as e:
                if self._stop.is_set():
                    raise
                log.warning("database unavailable (%s); retrying %s", type(e).__name__, write.__name__)
                self._stop.wait(1.0)

    def _regained(self, state: dict, sink: MongoSink) -> bool:
        """After a lease this worker could not renew: wait for the database. If the job is still
        this attempt's (nobody took it over meanwhile), store what the sink kept and go on;
        returns False when it is not."""
        while not self._stop.is_set():
            if state["lost"]:
                return False
            if self._owned(state):
                try:
                    self._retry(sink.flush, strict=True)
                except queue.LostLease:
                    return False
                sink.log("the database is back and the job is still this attempt's: going on")
                return True
            self._stop.wait(0.2)
        return False

    def workdir(self, job_id: str) -> Path:
        return self.settings.artifacts / job_id

    def _prepare(self, job: dict[str, Any], workdir: Path) -> None:
        """Write the job's sealed config (``pipeline.sealed``; its stored reward's source inside)
        where the stage process reads it. Opened with its hash check, not validated again."""
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            cfg = open_sealed(sealed_of(self.db, job), where=f"job {job['_id']}'s config")
        except ConfigError as e:
            raise _UserError(str(e)) from None
        baseline = gates.baseline_for(self.db, job)  # a branch's preview is scored beside main's release
        if baseline is not None:
            # What the job is compared with, not what it trains (left out of config_hash): the
            # worker's own addition, built from its own record and sealed with the rest.
            cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"baseline": BaselineModel(**baseline)})})
        (workdir / "config.json").write_text(json.dumps(seal(cfg, cfg.reward_source), indent=1))

    def _run_stages(self, job: dict[str, Any], state: dict) -> None:
        db, job_id, attempt = self.db, job["_id"], job["attempt"]
        retry = self._retry
        sink = MongoSink(db, job_id, attempt, stored_steps=job.get("metric_steps"))
        workdir = self.workdir(job_id)
        sink.log(f"attempt {attempt} on worker {self.id}")
        if attempt == 1:  # old spellings the config was accepted with (submit): said once, in the job's log
            for note in job.get("warnings") or ():
                sink.log(note, level="warning")
        try:
            self._prepare(job, workdir)
        except _UserError as e:
            retry(sink.flush, strict=True)
            retry(queue.finish, db, job_id, attempt, "failed", error={"kind": "user", "message": str(e)})
            return

        def check() -> str | None:
            if not self._owned(state):
                state["unsure"] = not state["lost"]  # the lease may be lost, not known to be
                return "lost"
            if state["cancel"]:
                return "cancelled"
            if state.get("pause"):
                return "paused"
            return None

        for stage in STAGES:
            if job["stages"][stage]["status"] in ("done", "skipped"):
                continue
            if not self._owned(state) and not self._regained(state, sink):
                raise queue.LostLease(job_id)
            if state["cancel"]:
                break
            elapsed = (queue.now() - job["created_at"]).total_seconds()
            if elapsed > self.settings.job_timeout_s:
                retry(sink.flush, strict=True)
                retry(queue.finish, db, job_id, attempt, "failed", error={"kind": "timeout", "stage": stage,
                      "message": f"the job ran past its {self.settings.job_timeout_s:.0f} s limit"})  # fmt: skip
                return
            reason = state.get("pause") or retry(budgets.cap_reason_of, db, job_id)
            if reason:  # at a cap before the stage starts: pause here, nothing to checkpoint
                self._pause(job, stage, reason, sink)
                return
            while True:
                retry(queue.stage_started, db, job_id, attempt, stage)
                sink.log(f"stage {stage} starting", stage=stage)
                state["billed_at"] = time.monotonic()
                state["billing"] = stage_rate(self.settings.executor, job, stage)
                try:
                    outcome = self.executor.run_stage(job, stage, workdir, sink, check, self.settings.stage_timeout_s)
                finally:
                    state["billing"] = None
                if outcome.kind == "lost" and state.pop("unsure", False) and self._regained(state, sink):
                    continue  # stopped for a lease it could not renew, and it is still ours
                break
            if not self._settle(job, stage, outcome, sink):
                return
        if state["cancel"]:
            retry(sink.flush, strict=True)
            retry(queue.finish, db, job_id, attempt, "cancelled",
                  error={"kind": "cancelled", "message": self._cancel_reason(job_id)})  # fmt: skip
            return
        sink.log("job succeeded")
        retry(sink.flush, strict=True)
        result = job_result(workdir / "out")
        gate = retry(gates.judge, db, job, result)
        if gate is not None:
            result["gate"] = gate
            sink.log(f"gate: {'passed' if gate['passed'] else 'not compared' if gate['passed'] is None else 'failed'}: "
                     f"{gate['text']}", level="info" if gate["passed"] else "warning")  # fmt: skip
            retry(sink.flush, strict=True)
        retry(queue.finish, db, job_id, attempt, "succeeded", result=result)
        retry(gates.record_release, db, job, result)

    def _pause(self, job: dict[str, Any], stage: str, reason: str, sink: MongoSink) -> None:
        sink.log(f"paused before the end of stage {stage}: {reason}; raise the cap to resume", level="warning", stage=stage)
        self._retry(sink.flush, strict=True)
        self._retry(budgets.pause, self.db, job, job["attempt"], stage, reason)

    def _cancel_reason(self, job_id: str) -> str:
        """Why a running job was cancelled: a newer push of its branch, or the user."""
        doc = self.db[JOBS].find_one({"_id": job_id}, {"superseded_by": 1}) or {}
        return doc.get("superseded_by") or "cancelled by the user"

    def _settle(self, job: dict[str, Any], stage: str, outcome: StageOutcome, sink: MongoSink) -> bool:
        """Record how a stage ended; returns whether the job goes on to the next stage."""
        db, job_id, attempt = self.db, job["_id"], job["attempt"]
        if outcome.kind == "lost":
            raise queue.LostLease(job_id)
        retry = self._retry
        if outcome.kind == "done":
            retry(sink.flush, strict=True)
            retry(queue.stage_finished, db, job_id, attempt, stage, "done", outcome.info)
            return True
        if outcome.kind == "paused":
            self._pause(job, stage, retry(budgets.cap_reason_of, db, job_id) or outcome.message, sink)
            return False
        sink.log(f"stage {stage}: {outcome.message}", level="error", stage=stage)
        retry(sink.flush, strict=True)
        if outcome.kind == "cancelled":
            retry(queue.stage_finished, db, job_id, attempt, stage, "cancelled", {})
            retry(queue.finish, db, job_id, attempt, "cancelled", error={"kind": "cancelled", "stage": stage,
                  "message": self._cancel_reason(job_id)})  # fmt: skip
        elif outcome.kind in ("user_error", "timeout"):
            retry(queue.stage_finished, db, job_id, attempt, stage, "failed", {})
            kind = "user" if outcome.kind == "user_error" else "timeout"
            retry(queue.finish, db, job_id, attempt, "failed",
                  error={"kind": kind, "stage": stage, "message": outcome.message})  # fmt: skip
        else:
            retry(queue.retry_later, db, job_id, attempt, stage, outcome.message, limit=self.settings.infra_retries,
                  backoff_s=self.settings.backoff_s)  # fmt: skip
        return False


class _UserError(Exception):
    pass


def sealed_of(db, job: dict[str, Any]) -> dict[str, Any]:
    """The sealed config submit stored with the job. A job queued by a release before configs
    were sealed has none: its config is validated here, once, as submit does now."""
    if "config_sha256" in job:
        return {"kind": SEALED, "config": job["config"], "reward_source": job.get("reward_source"),
                "sha256": job["config_sha256"]}  # fmt: skip
    raw, source = dict(job["config"]), None
    if job.get("reward_ref"):
        doc = db[REWARDS].find_one({"_id": job["reward_ref"], "project_id": job["project_id"]})
        if doc is None:
            raise _UserError(f"reward {job['reward_ref']} no longer exists")
        source = doc["source"]
        raw["reward"] = reward_ref(stored_reward_file(doc["name"]), source)
    cfg = build_config(raw, source=f"job {job['_id']}'s config")
    return seal(cfg, source)


# What a finished job offers for download, by name: its models, the LoRA adapters a LoRA job keeps
# beside its merged model (pipeline.stages.common.save_trained), and its reports.
ARTIFACTS = {"model": "model", "model-4bit": "model-4bit", "adapter": "model/adapter",
             "metrics.json": "metrics.json", "MODEL_CARD.md": "MODEL_CARD.md"}  # fmt: skip


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
        "reward": record.get("reward"),  # the name the held-out reward score is shown under
        "models": ev.get("models", {}),
        "release": release,
        "train_fit": ev.get("train_fit") or {},
        "verdict": ev.get("verdict") or {},
        "selection": ev.get("selection") or {},
        "split_fingerprint": ev.get("split_fingerprint"),  # what a later branch's gate compares against
        "baseline": ev.get("baseline"),  # the default branch's model on the same images (github/gates.py)
        "artifacts": {name: str(out / rel) for name, rel in ARTIFACTS.items() if (out / rel).exists()},
        "wall_seconds": record.get("wall_seconds"),
    }


def cleanup_temporary(settings: Settings, db) -> list[str]:
    """Delete intermediate checkpoints and unpacked datasets of jobs finished longer ago than the
    retention; the final models (``out/model``, ``out/model-4bit``) and metrics stay."""
    cutoff = queue.now().timestamp() - settings.temp_retention_s
    removed = []
    for job_dir in settings.artifacts.glob("job_*"):
        doc = db[JOBS].find_one({"_id": job_dir.name}, {"status": 1, "finished_at": 1})
        if not doc or doc.get("status") not in FINAL_STATUSES:
            continue
        if doc.get("finished_at") and doc["finished_at"].timestamp() > cutoff:
            continue
        for tmp in [job_dir / "out" / "stages", job_dir / "dataset.zip"]:
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(str(tmp))
    return removed + cleanup_dataset_cache(cutoff)


def cleanup_dataset_cache(cutoff: float) -> list[str]:
    """Delete cached datasets (extracted ZIPs, downloads from s3/gs/https and GridFS) not read
    since ``cutoff`` (a timestamp). A loader marks an entry each time it reads it
    (``pipeline.data.sources.mark_used``), so a dataset a job still uses is never old; one that is
    deleted is downloaded again by the next job that names it."""
    from pipeline.data.sources import cache_dir

    removed = []
    for kind in ("zips", "remote"):
        for entry in sorted((cache_dir() / kind).glob("*")):
            if entry.name.startswith(".") or not entry.is_dir():
                continue  # a download or extraction in progress works in a hidden folder
            try:
                used = max([entry.stat().st_mtime, *(c.stat().st_mtime for c in entry.iterdir())])
            except OSError:
                continue
            if used < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    try:
        w = Worker()
    except SettingsError as e:
        raise SystemExit(f"worker: {e}") from None
    import signal

    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        w.run_forever()
    except KeyboardInterrupt:
        w.stop()


if __name__ == "__main__":
    main()
