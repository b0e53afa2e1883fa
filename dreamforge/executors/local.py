"""Executors run one stage of a job somewhere and report how it ended.

``LocalExecutor`` runs the stage as ``python -m pipeline.run --stages N`` in a child process;
the child's reporter appends events to ``events.jsonl`` (``pipeline.reporter``), which the
worker tails into MongoDB through a fenced sink. Before it starts the child, the executor makes
the job's attempt the owner of the job folder (``pipeline.fence``): a stale stage of an older
attempt then stops by itself and cannot publish there. ``ModalExecutor`` (``dreamforge.modal_executor``)
spawns the stage's Modal function instead. Both answer with a :class:`StageOutcome`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from dreamforge.executors.forkserver import ForkServer
from pipeline.fence import LOST_EXIT, OWNER_FILE, take_ownership
from pipeline.procs import die_with_parent
from pipeline.reporter import PAUSE_FILE, PAUSED_EXIT
from pipeline.stage_table import BY_NAME

log = logging.getLogger("dreamforge.executors")

# pipeline.run's exit code for a user's mistake (bad config, data or reward): never retried.
USER_ERROR_EXIT = 2
# How long a stage asked to pause may take to save its checkpoint and exit before it is stopped
# (then it resumes from its last periodic checkpoint, or from its start).
PAUSE_GRACE_S = float(os.environ.get("DREAMFORGE_PAUSE_GRACE_S", 300))


@dataclass
class StageOutcome:
    kind: Literal["done", "user_error", "infra_error", "cancelled", "timeout", "lost", "paused"]
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    def event(self, ev: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...


class Executor(Protocol):
    def run_stage(self, job: dict[str, Any], stage: str, workdir: Path, sink: EventSink,
                  check: Callable[[], str | None], timeout_s: float) -> StageOutcome: ...  # fmt: skip


class EventTail:
    """Reads complete new lines of ``events.jsonl`` from where the last read stopped."""

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = path
        self.offset = offset if offset is not None else path.stat().st_size if path.exists() else 0
        self._partial = b""

    def read(self, until: int | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read() if until is None else fh.read(max(until - self.offset, 0))
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def die_with_parent_group() -> None:  # public: the local stack's children use it too
    """In the child: get SIGKILL when the worker dies, so a SIGKILLed worker never leaves an
    orphan training the same stage while another worker takes it over."""
    die_with_parent()
    os.setpgrp()


def stage_info(out: Path, stage: str) -> dict[str, Any]:
    done = out / "stages" / stage / "DONE.json"
    info: dict[str, Any] = json.loads(done.read_text()) if done.exists() else {}
    model = out / "stages" / stage / "model"
    result: dict[str, Any] = {"seconds": info.get("train_seconds") or info.get("seconds"),
                              "artifact": str(model) if model.exists() else None}  # fmt: skip
    metrics = {k: v for k, v in info.items()
               if isinstance(v, int | float) and k not in ("train_seconds", "seconds", "attempt")}  # fmt: skip
    if metrics:
        result["metrics"] = metrics
    return result


def stage_command(python: str, cfg_path: Path, stage: str, out: Path, *, num_processes: int = 1,
                  fence: tuple[Path, int] | None = None) -> list[str]:  # fmt: skip
    """``python -m pipeline.run`` for one stage; across ``num_processes`` GPUs through
    ``accelerate launch``, which starts one process per GPU and sets up distributed training.
    ``fence``: the owner file and the attempt the stage writes for (``pipeline.fence``)."""
    args = ["--config", str(cfg_path), "--stages", str(BY_NAME[stage].number), "--output", str(out), "--quiet"]
    if fence is not None:
        args += ["--fence", str(fence[0]), str(fence[1])]
    if num_processes <= 1:
        return [python, "-m", "pipeline.run", *args]
    return [python, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
            "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--module", "pipeline.run", *args]  # fmt: skip


class LocalExecutor:
    """Each stage in a child process on this machine (CPU or a local GPU)."""

    def __init__(self, python: str = sys.executable, poll_s: float = 0.2, num_processes: int = 1,
                 fork: bool | None = None) -> None:  # fmt: skip
        self.python = python
        self.poll_s = poll_s
        self.num_processes = num_processes
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Stages forked from a warm template (forkserver.py) skip 8-13 s of imports
        # each; started now, so it is warm by the time a job arrives.
        if fork is None:
            fork = os.environ.get("DREAMFORGE_FORK_STAGES", "1") == "1"
        self.forkserver = None
        if fork and num_processes <= 1:
            self.forkserver = ForkServer(python, self.env)

    def _start(self, cmd: list[str], err_path: Path):
        fs = self.forkserver
        if fs is not None and fs.alive() and cmd[1:3] == ["-m", "pipeline.run"]:
            try:
                return fs.spawn(cmd[3:], err_path)
            except RuntimeError as e:  # the template died: fall back to a cold start
                log.warning("stage template unavailable (%s); starting the stage cold", e)
        with err_path.open("ab") as err:
            return subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=self.env, preexec_fn=die_with_parent_group)

    def run_stage(self, job, stage, workdir, sink, check, timeout_s):
        # One subprocess's life, in order (own the folder, start, follow, stop, classify the
        # outcome); ~80 lines since each exit path needs its own outcome and message.
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        attempt = job["attempt"]
        # Before the stage starts: from here on a stale stage of an older attempt stops by itself
        # and can no longer publish into this folder, even while its own worker is paused.
        owner = workdir / OWNER_FILE
        try:
            if not take_ownership(owner, attempt):
                return StageOutcome("lost", f"a newer attempt than {attempt} owns the job's folder")
        except TimeoutError as e:
            return StageOutcome("infra_error", str(e))
        (out / PAUSE_FILE).unlink(missing_ok=True)  # an earlier pause's request is answered
        cmd = stage_command(self.python, workdir / "config.json", stage, out, num_processes=self.num_processes,
                            fence=(owner, attempt))  # fmt: skip
        tail = EventTail(out / "events.jsonl")
        # What an earlier attempt's stage logged while its worker could not store it (paused, or
        # cut off from the database) is still in the file: its points of this stage go in now
        # (the sink skips the steps already stored), so the curve has no hole where it was lost.
        for ev in EventTail(out / "events.jsonl", offset=0).read(until=tail.offset):
            if _training_point(ev, stage):
                sink.event(ev)
        err_path = workdir / "logs" / f"{stage}-attempt{attempt}.log"
        err_path.parent.mkdir(parents=True, exist_ok=True)
        err_path.write_bytes(b"")
        proc = self._start(cmd, err_path)
        echo = LogEcho(err_path, sys.stdout) if os.environ.get("DREAMFORGE_ECHO_STAGE_LOG") == "1" else None

        def pump() -> None:
            if echo is not None:
                echo.copy()
            for ev in tail.read():
                if ev.get("attempt", attempt) == attempt or _training_point(ev, stage):
                    sink.event(ev)  # a stale process's last words are not this attempt's, its steps are
            sink.flush()

        # The events go to the database from a thread of their own: a write that waits for an
        # unreachable database must not delay a cancel, a timeout or a lost lease here.
        stop_pumping, failed = threading.Event(), []
        pumping = threading.Thread(target=_pump_until, args=(pump, stop_pumping, self.poll_s, failed), daemon=True)
        pumping.start()
        started = time.monotonic()
        outcome: StageOutcome | None = None
        try:
            while proc.poll() is None:
                if not pumping.is_alive():  # it raised (a lost lease): the stage stops, the error goes up
                    break
                reason = check()
                if reason == "paused":
                    outcome = _pause(proc, out, stage)  # None: it exited by itself, its exit status says how
                    break
                if reason in ("cancelled", "lost"):
                    _stop(proc)
                    outcome = StageOutcome(reason, "cancelled by the user" if reason == "cancelled" else "lease lost")
                    break
                if time.monotonic() - started > timeout_s:
                    _stop(proc)
                    outcome = StageOutcome("timeout", f"stage {stage} ran past its {timeout_s:.0f} s limit")
                    break
                time.sleep(self.poll_s)
        finally:  # whatever went wrong, the stage stops with it
            if proc.poll() is None:
                _stop(proc)
            stop_pumping.set()
            pumping.join()
        if failed:
            raise failed[0]
        pump()
        if outcome is not None:
            return outcome
        code = proc.returncode
        if code == 0:
            return StageOutcome("done", info=stage_info(out, stage))
        if code == PAUSED_EXIT:
            return StageOutcome("paused", f"stage {stage} paused")
        if code == LOST_EXIT:
            return StageOutcome("lost", f"stage {stage}: a newer attempt owns the job")
        message = _error_line(err_path) or f"stage {stage} exited with code {code}"
        if code == USER_ERROR_EXIT:
            return StageOutcome("user_error", message)
        return StageOutcome("infra_error", message)


class LogEcho:
    """Copies what a stage writes to its log file on to ``stream`` as well, from where the last
    copy stopped. On Modal the stage's output (``accelerate launch``'s children's included) then
    reaches Modal's logs, while the file on the Volume keeps it with the job."""

    def __init__(self, path: Path, stream: Any) -> None:
        self.path, self.stream, self.offset = path, stream, 0

    def copy(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        if data:
            self.stream.write(data.decode(errors="replace"))
            self.stream.flush()


def _training_point(ev: dict[str, Any], stage: str) -> bool:
    """A metric point of ``stage``'s training (not its end-of-training summary), whichever
    attempt logged it: the step it measured happened, and the sink stores each step once."""
    return ev.get("type") == "metric" and ev.get("stage") == stage and "train_runtime" not in ev


def _pump_until(pump: Callable[[], None], stop: threading.Event, every_s: float, failed: list) -> None:
    try:
        while not stop.wait(every_s):
            pump()
    except Exception as e:  # noqa: BLE001 — handed to run_stage, which stops the stage and raises it
        failed.append(e)


def _pause(proc: subprocess.Popen, out: Path, stage: str) -> StageOutcome | None:
    """Ask the stage to checkpoint and exit (``pipeline.reporter.PauseRequest``); stop it if it
    has not within ``PAUSE_GRACE_S`` (a stage with no trainer loop, such as evaluate, then runs
    again). None when it exited: finished, paused (``PAUSED_EXIT``) or failed meanwhile."""
    (out / PAUSE_FILE).touch()
    try:
        proc.wait(PAUSE_GRACE_S)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return StageOutcome("paused", f"stage {stage} stopped without a new checkpoint")
    return None


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the stage's process group, SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def _error_line(path: Path) -> str | None:
    """The user-facing ``error: …`` line pipeline.run prints, else the last traceback line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    tail = [ln for ln in lines if ln.strip()]
    return tail[-1][:2000] if tail else None
