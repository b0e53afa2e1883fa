"""``ModalExecutor``: each stage runs as a call of the deployed app's GPU function for that stage.

Selected with ``DREAMFORGE_EXECUTOR=modal``; the orchestrator function of ``modal_app`` runs the
ordinary ``Worker`` with it. A stage's call is bookkept on the job (``modal_calls``) before it
runs, polled with ``FunctionCall.get(timeout=0)``, cancelled when the user cancels, and adopted
(not spawned again) by a worker that takes the job over: a crashed orchestrator must never cost
two paid GPU runs. The stage function reports logs and metrics to MongoDB itself
(``modal_stage``); this side only records how the stage ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamforge.executors import modal_calls
from dreamforge.executors.local import PAUSE_GRACE_S, StageOutcome, stage_info
from dreamforge.executors.modal_limits import DEFAULT_GPU, stage_budget_s, stage_resources
from dreamforge.jobs import queue, streams
from dreamforge.settings import Settings
from dreamforge.store import client
from pipeline.stage_table import SECTION

log = logging.getLogger("dreamforge.modal_executor")



def stage_gpu(config: dict[str, Any], stage: str) -> str:
    """The job's compute hint for ``stage`` (``rl.compute`` for the reward stage), else the default."""
    return (config.get(SECTION[stage]) or {}).get("compute") or DEFAULT_GPU[stage]


def stage_rate(executor: str, job: dict[str, Any], stage: str) -> tuple[int, float]:
    """``(GPUs, dollars per second)`` a running ``stage`` of ``job`` is billed at (jobs/budgets.py):
    Modal's list price of its GPUs (``pipeline.preflight``); a local worker's stages bill seconds only."""
    if executor != "modal":
        return 0, 0.0
    from dreamforge.executors.modal_limits import gpu_count
    from pipeline.cost import CPU_MEMORY_USD_PER_HOUR, GPU_USD_PER_HOUR

    gpu = stage_gpu(job.get("config") or {}, stage)
    n = gpu_count(gpu)
    return n, n * (GPU_USD_PER_HOUR.get(gpu.partition(":")[0].upper(), 0.0) + CPU_MEMORY_USD_PER_HOUR) / 3600


def modal_lookup(app_name: str) -> Callable[[str], Any]:
    """The deployed function of ``app_name`` by name (lazy: Modal is contacted on first use)."""
    import modal

    return lambda name: modal.Function.from_name(app_name, name)


def modal_call(call_id: str) -> Any:
    import modal

    return modal.FunctionCall.from_id(call_id)


def poll_answer(exc: BaseException) -> str:
    """What an exception from ``FunctionCall.get(timeout=0)`` says about the call, in Modal 1.6.4:
    "running", "transient" (Modal could not be asked: ask again), "timeout" or "ended".

    - The built-in TimeoutError: no output yet (``_Invocation.poll_function``).
    - Terminal: ``FunctionTimeoutError`` (the last try ran past its timeout), ``InternalFailure``
      and ``RemoteError`` (a failed or terminated input), ``ExecutionError`` /
      ``DeserializationError`` (an output that cannot be read) — all from
      ``_utils.function_utils._process_result`` — ``OutputExpiredError`` (no output will come),
      ``NotFoundError`` (no such call), and the function's own exception re-raised once Modal's
      retries are spent (the stage function raises only ``StageInfraError``).
    - Transient: every other Modal error (``ConnectionError``, which the client raises for
      OSError, asyncio timeouts and HTTP/2 errors once its own retries are spent; ``ServiceError``
      for gRPC UNAVAILABLE / DEADLINE_EXCEEDED; its retry ``TimeoutError``), and OSError.
    """
    import modal.exception as me

    if type(exc) is TimeoutError:
        return "running"
    if isinstance(exc, me.FunctionTimeoutError):
        return "timeout"
    if isinstance(exc, me.OutputExpiredError | me.InternalFailure | me.RemoteError | me.ExecutionError
                  | me.DeserializationError | me.NotFoundError):  # fmt: skip
        return "ended"
    if isinstance(exc, me.Error | OSError):
        return "transient"
    return "ended"


BACKOFF_CAP_S = 60.0  # between polls while Modal cannot be reached


class ModalExecutor:
    def __init__(self, settings: Settings | None = None, *, lookup: Callable[[str], Any] | None = None,
                 call_from_id: Callable[[str], Any] = modal_call, reload: Callable[[], None] | None = None,
                 poll_s: float = 2.0, budget_s: Callable[[str], float] = stage_budget_s) -> None:  # fmt: skip
        self.settings = settings or Settings()
        self.lookup = lookup or modal_lookup(self.settings.modal_app)
        self.call_from_id = call_from_id
        # On Modal the orchestrator mounts the artifacts Volume: reload it to see what a stage wrote.
        self.reload = reload or (lambda: None)
        self.poll_s = poll_s
        self.budget_s = budget_s
        self._client = client(self.settings.require_uri())
        self.db = self._client[self.settings.db_name]

    def run_stage(self, job, stage, workdir, sink, check, timeout_s):
        """``timeout_s`` (the local executor's limit) is not used: a call's budget follows from
        its Modal timeout and retries (``modal_limits``), counted from its spawn."""
        job_id, attempt = job["_id"], job["attempt"]
        stored = (job.get("modal_calls") or {}).get(stage) or {}
        # While the call runs, the function appends logs under this attempt; two processes
        # appending at once would hand out the same sequence numbers, so this side writes
        # only before the call is ours (spawned or adopted) and after it ends.
        if stored.get("call_id"):
            sink.log(f"stage {stage}: following Modal call {stored['call_id']} of attempt {stored['attempt']}",
                     stage=stage)  # fmt: skip
            sink.flush()
            modal_calls.adopt(self.db, job_id, attempt, stage)
            call = self.call_from_id(stored["call_id"])
            spawned_at = stored.get("spawned_at") or queue.now()
        else:
            spawned_at = queue.now()
            call = self._spawn(job, stage, workdir, sink)
            if isinstance(call, StageOutcome):
                return call
        # A takeover keeps the call's budget: it does not start again with the new orchestrator.
        left = self.budget_s(stage) - (queue.now() - spawned_at).total_seconds()
        outcome = self._poll(call, job, stage, check, time.monotonic() + left)
        streams.reset_seq(job_id)
        if outcome.kind in ("done", "lost"):
            return outcome
        try:
            modal_calls.forget(self.db, job_id, attempt, stage)
        except queue.LostLease:
            return StageOutcome("lost", "lease lost")
        return outcome

    def _spawn(self, job: dict[str, Any], stage: str, workdir: Path, sink) -> Any:
        """The stage's new call, or the ``StageOutcome`` of failing to start one."""
        job_id, attempt = job["_id"], job["attempt"]
        config, reward_source = _inputs(workdir)
        gpu = stage_gpu(config["config"], stage)
        token = modal_calls.new_token()
        modal_calls.record_token(self.db, job_id, attempt, stage, token, gpu)  # before anything runs
        sink.log(f"stage {stage}: spawning Modal function {stage} on {gpu}", stage=stage)
        sink.flush()
        try:
            fn = self.lookup(stage)  # modal_app/app.py registers one function per stage, named after it
            if gpu != DEFAULT_GPU[stage]:
                fn = fn.with_options(gpu=gpu, **stage_resources(gpu))  # CPU and memory scale with the GPUs
            call = fn.spawn(job_id, token, config, reward_source, gpu)
        except Exception as e:  # noqa: BLE001 — never crash the orchestrator: sorted below
            try:
                modal_calls.forget(self.db, job_id, attempt, stage)
            except queue.LostLease:
                return StageOutcome("lost", "lease lost")
            return _spawn_failed(e, stage, gpu)
        try:
            modal_calls.record_call(self.db, job_id, attempt, stage, token, call.object_id)
        except queue.LostLease:
            _cancel(call)  # nobody owns the job any more; its successor spawns its own call
            return StageOutcome("lost", "lease lost while spawning")
        return call

    def _poll(self, call, job: dict[str, Any], stage: str, check: Callable[[], str | None],
              deadline: float) -> StageOutcome:  # fmt: skip
        unreachable = 0  # polls in a row that could not reach Modal
        pause_by: float | None = None  # when a call asked to pause must have ended
        while True:
            try:
                result = call.get(timeout=0)
            except Exception as e:  # noqa: BLE001 — sorted by poll_answer
                answer = poll_answer(e)
                if answer == "timeout":
                    return StageOutcome("timeout", f"stage {stage} ran past its Modal timeout on its last try")
                if answer == "ended":
                    return StageOutcome("infra_error", f"stage {stage} on Modal: {type(e).__name__}: {e}"[:2000])
                if answer == "transient":
                    # The call may well be running: keep it (forgetting it would stop a paid run).
                    unreachable += 1
                    log.warning("job %s stage %s: cannot ask Modal about call %s (%s: %s), try %d", job["_id"], stage,
                                call.object_id, type(e).__name__, e, unreachable)  # fmt: skip
                else:
                    unreachable = 0
            else:
                outcome = self._ended(result, job, stage)
                if outcome.kind == "lost" and check() != "lost":
                    # The call gave up on a job this worker still owns: spawn a new one.
                    return StageOutcome("infra_error", f"stage {stage}: the Modal call stopped: {outcome.message}")
                return outcome
            reason = check()
            if reason == "cancelled":
                _cancel(call)
                return StageOutcome("cancelled", "cancelled by the user")
            if reason == "lost":
                return StageOutcome("lost", "lease lost")  # the call runs on; the next owner adopts it
            if reason == "paused":
                # The function reads the caps itself (modal_stage.FollowingSink.check), checkpoints
                # at its next step and ends "paused". One with no trainer loop (evaluate) is stopped
                # after the grace, as LocalExecutor stops its process, and runs again on resume.
                pause_by = pause_by or time.monotonic() + PAUSE_GRACE_S
                if time.monotonic() > pause_by:
                    _cancel(call)
                    return StageOutcome("paused", f"stage {stage} stopped without a new checkpoint")
            if time.monotonic() > deadline:
                _cancel(call)
                return StageOutcome("timeout", f"stage {stage} ran past its {self.budget_s(stage):.0f} s budget on Modal "
                                               "(its timeout on each of its tries)")  # fmt: skip
            time.sleep(min(self.poll_s * 2**unreachable, BACKOFF_CAP_S) if unreachable else self.poll_s)

    def _ended(self, result: dict[str, Any], job: dict[str, Any], stage: str) -> StageOutcome:
        kind = result.get("kind")
        if kind != "done":
            return StageOutcome(kind or "infra_error", result.get("message") or f"stage {stage} ended: {kind}")
        self.reload()
        info = result.get("info") or stage_info(self.settings.artifacts / job["_id"] / "out", stage)
        return StageOutcome("done", info=info)


def _spawn_failed(exc: Exception, stage: str, gpu: str) -> StageOutcome:
    """Modal refusing the request (``InvalidError``: a GPU it does not offer, arguments it cannot
    take) is the job's to fix, so it fails without retries; anything else (Modal unreachable, the
    app not deployed yet) is retried as infrastructure."""
    import modal.exception as me

    if isinstance(exc, me.InvalidError):
        where = f"{SECTION[stage]}.compute"
        return StageOutcome("user_error", f"Modal refused to start stage {stage} on GPU {gpu!r} ({exc}); "
                                          f"check {where} in the config")  # fmt: skip
    return StageOutcome("infra_error", f"stage {stage}: could not start it on Modal: {type(exc).__name__}: {exc}"[:2000])


def _cancel(call) -> None:
    """Cancel a call; if Modal cannot be reached, the function still stops on its own when it
    next reads the job (cancel flag, or its token no longer the job's)."""
    try:
        call.cancel()
    except Exception as e:  # noqa: BLE001 — best effort, see above
        log.warning("cancelling Modal call %s failed (%s: %s)", call.object_id, type(e).__name__, e)


def _inputs(workdir: Path) -> tuple[dict[str, Any], None]:
    """The sealed config the worker prepared (``pipeline.sealed``: a stored JavaScript reward's
    source inside it): the GPU container gets it as an argument instead of reading the
    orchestrator's files. The second value, once the reward's source, is kept for the function's
    signature and always None."""
    import json

    return json.loads((workdir / "config.json").read_text()), None
