"""Which attempt of a job may publish a stage's outputs, decided by the stage process itself.

The service runs each stage in a process of its own. When a worker loses its job (paused past
its lease, cut off from the database), another worker takes the job over and starts the same
stage in the same folder. The stale process runs on until its own worker stops it, and a paused
worker stops nothing. So the stage does not wait to be told: the job folder holds an owner file
with the newest attempt that took the job; a new owner raises it before it starts its stage, and
a stage stops training as soon as the file names another attempt, and writes its model or
``DONE.json`` only while it still names its own.

Publishing and raising the owner both hold one lock file, so a stale stage can never check
the owner, be paused, then write over the new owner's output: the new owner waits for a
publish in progress to finish (the lock is released when its holder dies), and every later
publish sees the new attempt. The owner file is replaced by a rename, so a reader never sees it
half written. Standalone runs have no fence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.reporter import BaseReporter

OWNER_FILE = ".owner"
# ``python -m pipeline.run``'s exit code when it stopped because a newer attempt owns the job.
LOST_EXIT = 3


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class FenceLost(RuntimeError):
    """A newer attempt of the job owns this stage's folder: this process must not write to it."""


def read_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:  # type: ignore[operator]
                    raise TimeoutError(f"{path.name}: another process held the stage lock for {timeout_s:.0f} s") from None
                time.sleep(0.05)
            except OSError as e:
                if e.errno not in _NO_LOCKS:
                    raise
                break  # a filesystem without locks (some network mounts): the owner check still holds
        yield
    finally:
        os.close(fd)  # closing drops the lock


def take_ownership(path: Path, token: int, timeout_s: float = 60.0) -> bool:
    """Make ``token`` (the job's attempt) the owner of the folder; False when a newer attempt
    already owns it (a paused worker woke up after its successor started). Waits up to
    ``timeout_s`` for a stale stage's publish in progress (``TimeoutError`` after that)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, timeout_s):
        current = read_owner(path)
        if current is not None and current > token:
            return False
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{token}\n")
        tmp.replace(path)
        return True


class Fence(BaseReporter):
    """The stage's side: ``held()`` while the owner file names ``token``. As a reporter it asks
    the trainer to stop once it does not (checked at most every ``every_s`` seconds)."""

    def __init__(self, path: Path, token: int, every_s: float = 0.2) -> None:
        self.path, self.token, self.every_s = Path(path), int(token), every_s
        self._checked = (-1e9, True)

    def held(self) -> bool:
        return read_owner(self.path) == self.token

    def should_stop(self) -> bool:
        t, held = self._checked
        if time.monotonic() - t >= self.every_s:
            held = self.held()
            self._checked = (time.monotonic(), held)
        return not held

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Hold the folder while writing a model or ``DONE.json``; raises ``FenceLost`` when a
        newer attempt owns it."""
        with _locked(self.path):
            owner = read_owner(self.path)
            if owner != self.token:
                raise FenceLost(f"attempt {owner} of this job now owns {self.path.parent}; attempt {self.token} stops")
            yield
