"""Stage processes forked from a warm template, instead of started cold.

A cold ``python -m pipeline.run`` spends 8–13 s importing torch, transformers, TRL and PEFT
before it trains (``-X importtime``: peft → bitsandbytes → torch._inductor alone is ~6 s),
which is more than a tiny job's four stages train, four times per job. The worker keeps one
template process that has imported the pipeline and nothing else (no threads, no CUDA, no
model); each stage is a fork of it: its own memory, its own process group (cancel kills the
group), its own log file, SIGKILLed when its parent dies, exactly like a cold process but
without the import bill.

Protocol (JSON lines): the worker writes ``{"argv": [...], "log": PATH}``; the template
answers ``{"pid": N}`` and later ``{"exit": N, "code": C}`` (``C`` negative for a signal, as
``subprocess`` reports it). Where the template cannot be used, the executor falls back to a
cold ``subprocess.Popen``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from pipeline.procs import die_with_parent

log = logging.getLogger("dreamforge.executors.forkserver")

# What a stage imports; importing them here, once, is the whole point.
WARM_MODULES = ("pipeline.run", "pipeline.job", "pipeline.stages.sft", "pipeline.stages.grpo", "pipeline.stages.evaluate")


class ForkedProcess:
    """The part of ``subprocess.Popen`` the executor uses, for a process forked by the template."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = threading.Event()
        self._server = server

    def poll(self) -> int | None:
        if self.returncode is None and not self._server.alive():
            self._set(-signal.SIGKILL)  # the template died and took its children with it
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"stage pid {self.pid}", timeout or 0)
            self._done.wait(0.1 if left is None else min(left, 0.1))
        assert self.returncode is not None
        return self.returncode

    def _set(self, code: int) -> None:
        self.returncode = code
        self._done.set()


class ForkServer:
    """One warm template per worker; ``spawn`` forks a stage process from it."""

    def __init__(self, python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, ForkedProcess] = {}
        self._pending: list[int] = []
        self._got_pid = threading.Condition(self._lock)
        self.proc = subprocess.Popen(
            [python, "-m", "dreamforge.executors.forkserver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, preexec_fn=_template_setup,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if "pid" in msg:
                    self._pending.append(msg["pid"])
                    self._got_pid.notify_all()
                elif "exit" in msg:
                    p = self._procs.pop(msg["exit"], None)
                    if p is not None:
                        p._set(int(msg["code"]))
        with self._lock:  # EOF: the template is gone, and its stages with it
            self._got_pid.notify_all()
            for p in self._procs.values():
                p._set(-signal.SIGKILL)
            self._procs.clear()

    def spawn(self, argv: list[str], log_path: Path, timeout: float = 120.0) -> ForkedProcess:
        """Fork ``python -m pipeline.run ARGV`` with stdout and stderr to ``log_path``. The
        first call waits while the template finishes its imports."""
        if not self.alive():
            raise RuntimeError("the stage template process is not running")
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write((json.dumps({"argv": argv, "log": str(log_path)}) + "\n").encode())
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while not self._pending:
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError("the stage template process did not fork the stage")
                self._got_pid.wait(0.5)
            pid = self._pending.pop(0)
            p = ForkedProcess(pid, self)
            self._procs[pid] = p
            return p

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)


def _template_setup() -> None:
    os.setpgrp()
    die_with_parent()


# -- the template process ----------------------------------------------------------------
def _child(argv: list[str], log_path: str) -> None:
    """In the forked stage: a process of its own, then ``pipeline.run``; never returns."""
    code = 1
    try:
        os.setpgrp()  # the executor stops a stage by signalling its group
        die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["pipeline.run", *argv]
        from pipeline.run import main

        code = int(main(argv) or 0)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 — printed to the stage's log, as a cold process would
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    out = sys.stdout.buffer
    inp = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    fd = inp.fileno()
    buf = b""
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return  # the worker went away
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(req["argv"], req["log"])
                try:  # also from this side, so the group exists before anyone can signal it
                    os.setpgid(pid, pid)
                except OSError:
                    pass  # the child got there first (or already exited)
                children.add(pid)
                out.write((json.dumps({"pid": pid}) + "\n").encode())
                out.flush()
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                out.write((json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n").encode())
                out.flush()


if __name__ == "__main__":
    serve()
