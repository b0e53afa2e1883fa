"""The body of a stage's Modal function: run one pipeline stage and report it to MongoDB.

No worker tails this container's events, so the function reports itself: the stage's
``events.jsonl`` (kept on the Volume beside the artifacts) is tailed into a ``MongoSink`` fenced
on (job, attempt), exactly what ``LocalExecutor`` does for a child process. The attempt is the
one that owns the call (``modal_calls``), so after a takeover the writes follow the new owner.

Failures are sorted as in ``pipeline.run``: the user's mistakes are returned (retrying cannot
fix them), infrastructure failures raise so that Modal's ``Retries`` rerun the same input,
which resumes from the stage's newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from dreamforge.executors.local import EventTail, LocalExecutor, StageOutcome, stage_info
from dreamforge.executors.modal_calls import owner
from dreamforge.executors.modal_limits import STAGE_TIMEOUT_S, gpu_count
from dreamforge.jobs import budgets, queue, streams
from dreamforge.jobs.sink import MongoSink
from dreamforge.settings import Settings
from dreamforge.store import JOBS, client
from pipeline.reporter import BaseReporter, MetricsFileReporter, MultiReporter
from pipeline.stage_table import BY_NAME

log = logging.getLogger("dreamforge.modal_stage")


class StageInfraError(RuntimeError):
    """The stage failed for a reason a rerun may fix (crash, lost GPU, database outage)."""


class FollowingSink(MongoSink):
    """A ``MongoSink`` whose fence follows the worker that owns the stage's call, and which
    knows when to stop: the job cancelled, or this call replaced by another."""

    def __init__(self, db, job_id: str, attempt: int, stage: str, token: str, check_every_s: float = 2.0) -> None:
        # a retried call resumes from its checkpoint: the steps it repeats are stored already
        steps = (db[JOBS].find_one({"_id": job_id}, {"metric_steps": 1}) or {}).get("metric_steps")
        super().__init__(db, job_id, attempt, stored_steps=steps)
        self.stage, self.token, self.check_every_s = stage, token, check_every_s
        self._checked = (0.0, None)  # (monotonic time, reason)
        self.superseded = False

    def _follow(self) -> str:
        state, attempt = owner(self.db, self.job_id, self.stage, self.token)
        if state == "superseded":
            self.superseded = True
        elif attempt is not None and attempt != self.attempt:
            log.info("job %s: stage %s now reports to attempt %s", self.job_id, self.stage, attempt)
            self.attempt = attempt
        return state

    def flush(self, *, strict: bool = False) -> bool:
        try:
            return super().flush(strict=strict)
        except queue.LostLease:
            state = self._follow()
            if state in ("run", "cancelled"):
                try:
                    return super().flush(strict=strict)
                except queue.LostLease:
                    pass  # ownership moved again; the next flush follows it
            elif state == "superseded":
                self.logs, self.metrics, self.latest, self.progress = [], [], {}, None
            else:  # the job waits for a worker to take it over: keep the newest rows until then
                self.logs, self.metrics = self.logs[-20_000:], self.metrics[-20_000:]
            return False

    def check(self) -> str | None:
        """``LocalExecutor``'s check: "cancelled", "lost" (superseded), "paused" (the job or its
        project at a spending cap, as the worker's heartbeat bills it: ``jobs/budgets.py``) or
        None; reads the job at most every ``check_every_s`` seconds."""
        t, reason = self._checked
        if time.monotonic() - t >= self.check_every_s:
            try:
                state = self._follow()
                reason = {"cancelled": "cancelled", "superseded": "lost"}.get(state)
                if reason is None and budgets.cap_reason_of(self.db, self.job_id):
                    reason = "paused"
            except PyMongoError:  # a database outage must not stop a paid GPU run: ask again later
                reason = None
            self._checked = (time.monotonic(), reason)
        return reason


class _StopWhenAsked(BaseReporter):
    """The worker's check, as a stage reads it: stop (cancelled, superseded), or checkpoint and
    stop at a cap (``pipeline.reporter.PauseRequest`` on a local worker)."""

    def __init__(self, sink: FollowingSink) -> None:
        self.sink = sink

    def should_stop(self) -> bool:
        return self.sink.check() in ("cancelled", "lost")

    def should_pause(self) -> bool:
        return self.sink.check() == "paused"


def _wait_for_ownership(db, job_id: str, stage: str, token: str, call_id: str | None,
                        wait_s: float) -> tuple[str, int | None]:  # fmt: skip
    """On Modal, wait until the worker has recorded this call's id: a call whose id never
    appears belongs to a worker that died right after spawning, and its successor's call runs.
    A job waiting for a takeover is no reason to wait: the next worker adopts this call."""
    deadline = time.monotonic() + wait_s
    while True:
        state, attempt = owner(db, job_id, stage, token)
        if state in ("superseded", "cancelled"):
            return state, attempt
        if call_id is None:
            return state, attempt
        doc = db[JOBS].find_one({"_id": job_id}, {f"modal_calls.{stage}.call_id": 1})
        if ((doc or {}).get("modal_calls") or {}).get(stage, {}).get("call_id") == call_id:
            return state, attempt
        if time.monotonic() > deadline:
            return "superseded", None
        time.sleep(1.0)


def commit_volume(commit: Callable[[], None], what: str) -> bool:
    """Commit the artifacts Volume, retried once; returns whether it succeeded.

    Only once the stage's files are closed: in Modal 1.6.4 ``Volume.commit()`` reloads the Volume
    after committing, and a reload fails while files on it are open (modal/volume.py,
    ``_Volume.commit`` and ``reload``: "Reloading will fail if there are open files for the
    volume"), so a commit while the stage writes ``events.jsonl`` would fail or, worse, show the
    container an empty mount while it reloads. Modal commits in the background while the function
    runs and once more at container shutdown (modal.com/docs/guide/volumes, "Background commits");
    this explicit one makes the stage's model visible to the orchestrator before it hears "done"."""
    for tries in (1, 2):
        try:
            commit()
            return True
        except Exception as e:  # noqa: BLE001 — RuntimeError for open files, Modal's errors for the rest
            log.warning("%s: committing the Volume failed (%s: %s), try %d of 2", what, type(e).__name__, e, tries)
    return False


def run_stage(job_id: str, stage: str, token: str, config: dict[str, Any], reward_source: str | None = None,
              gpu: str | None = None, *, call_id: str | None = None, settings: Settings | None = None,
              own_wait_s: float = 120.0, commit: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``stage`` of job ``job_id`` into ``<artifacts>/<job_id>/out``; returns
    ``{"kind": "done" | "user_error" | "cancelled" | "lost" | "paused", "message", "info"}`` ("paused":
    at a spending cap, the stage saved a checkpoint on the Volume, and the next call resumes from it). ``commit``
    (on Modal) commits the artifacts Volume once the stage has ended. Raises only
    ``StageInfraError``: the orchestrator tells the function's own failure from a failure to reach
    Modal by its type (``modal_executor.poll_answer``), and an OSError here must not read as one."""
    try:
        return _run_stage(job_id, stage, token, config, reward_source, gpu, call_id=call_id, settings=settings,
                          own_wait_s=own_wait_s, commit=commit)  # fmt: skip
    except StageInfraError:
        raise
    except Exception as e:  # noqa: BLE001 — the database gone, a full disk: Modal retries it
        raise StageInfraError(f"stage {stage}: {type(e).__name__}: {e}"[:2000]) from None


def _run_stage(job_id: str, stage: str, token: str, config: dict[str, Any], reward_source: str | None, gpu: str | None,
               *, call_id: str | None, settings: Settings | None, own_wait_s: float,
               commit: Callable[[], None] | None) -> dict[str, Any]:  # fmt: skip
    settings = settings or Settings()
    with client(settings.require_uri()) as mongo:
        db = mongo[settings.db_name]
        state, attempt = _wait_for_ownership(db, job_id, stage, token, call_id, own_wait_s)
        if state == "superseded" or attempt is None:
            return {"kind": "lost", "message": f"stage {stage}: this call was replaced by another", "info": {}}
        if state == "cancelled":
            return {"kind": "cancelled", "message": "cancelled by the user", "info": {}}
        workdir = settings.artifacts / job_id
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = dict(config)  # sealed (pipeline.sealed), a stored reward's source inside: written as it came
        (workdir / "config.json").write_text(json.dumps(cfg, indent=1))
        streams.reset_seq(job_id)  # a warm container may hold counters of an earlier call
        sink = FollowingSink(db, job_id, attempt, stage, token)
        n = gpu_count(gpu)
        if n > 1:
            outcome = LocalExecutor(num_processes=n).run_stage({"attempt": attempt}, stage, workdir, sink, sink.check,
                                                               STAGE_TIMEOUT_S[stage])  # fmt: skip
        else:
            outcome = _in_process(cfg, stage, workdir / "out", sink)
    if commit is not None and not commit_volume(commit, f"job {job_id} stage {stage}") and outcome.kind in ("done", "paused"):
        # The orchestrator would look for a model (a checkpoint to resume from) the Volume does not
        # have: let Modal retry (a retried paused stage pauses again at its first step).
        raise StageInfraError(f"stage {stage}: its {'model' if outcome.kind == 'done' else 'checkpoint'} could not be "
                              "committed to the Volume")  # fmt: skip
    if outcome.kind == "infra_error":
        raise StageInfraError(outcome.message)
    return {"kind": outcome.kind, "message": outcome.message, "info": outcome.info}


def _in_process(cfg_dict: dict[str, Any], stage: str, out: Path, sink: FollowingSink) -> StageOutcome:
    """One GPU: the stage runs in this process (the container is the isolation), its events
    pumped from ``events.jsonl`` into MongoDB every second."""
    from pipeline.config import ConfigError
    from pipeline.data.errors import DataError
    from pipeline.job import run_job
    from pipeline.rewards.base import RewardError
    from pipeline.run import quiet_libraries
    from pipeline.sealed import open_sealed
    from pipeline.stages.common import StageCancelled, StagePaused

    quiet_libraries()
    out.mkdir(parents=True, exist_ok=True)
    events = out / "events.jsonl"
    tail = EventTail(events)
    reporter = MultiReporter(MetricsFileReporter(events), _StopWhenAsked(sink))
    stop = threading.Event()

    def pump() -> None:
        while not stop.wait(1.0):
            try:
                for ev in tail.read():
                    sink.event(ev)
                sink.flush()
            except PyMongoError as e:  # rows stay buffered in the sink until the database is back
                log.warning("job %s: cannot report to the database (%s)", sink.job_id, type(e).__name__)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    try:
        run_job(open_sealed(cfg_dict), out, stages=[BY_NAME[stage].number], reporter=reporter)
        outcome = StageOutcome("done", info=stage_info(out, stage))
    except (ConfigError, DataError, RewardError) as e:
        reporter.log(f"error: {e}", level="error", stage=stage)
        outcome = StageOutcome("user_error", str(e))
    except StageCancelled:
        outcome = StageOutcome("lost" if sink.superseded else "cancelled", "cancelled by the user")
    except StagePaused as e:  # at a cap: its checkpoint is in the stage's folder, on the Volume
        outcome = StageOutcome("paused", str(e))
    except Exception as e:  # noqa: BLE001 — anything else is the infrastructure's: Modal retries it
        log.exception("stage %s failed", stage)
        outcome = StageOutcome("infra_error", f"{type(e).__name__}: {e}"[:2000])
    finally:
        stop.set()
        pumping.join(10)
        reporter.close()
    for ev in tail.read():
        sink.event(ev)
    sink.flush()
    return outcome
