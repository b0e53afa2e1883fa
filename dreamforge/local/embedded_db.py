"""The embedded default database: SecantusDB (a MongoDB-wire server) as a child process.

Production points ``MONGODB_URI`` at Atlas; with nothing set, ``dreamforge up`` and the test
fixtures start SecantusDB on a free loopback port with its data under the project data
directory. ``--sync-on-commit`` because without it a write acknowledged just before a crash is
lost, and ``retryWrites=false`` because the server rescans its retry records on every write
otherwise (``shared/FACTS.md``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo

from pipeline.procs import die_with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uri_for(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?retryWrites=false"


@dataclass
class EmbeddedDB:
    proc: subprocess.Popen
    port: int
    storage: Path

    @property
    def uri(self) -> str:
        return uri_for(self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL: SIGTERM once hung for over 10 s (FACTS.md)."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def _own_session() -> None:
    """In the database's process: a session of its own, and SIGTERM (a clean stop) if the
    process that started it dies without stopping it."""
    os.setsid()
    die_with_parent(signal.SIGTERM)


def start(storage: Path, port: int | None = None, *, log: Path | None = None, timeout: float = 30.0) -> EmbeddedDB:
    """Start SecantusDB on ``port`` (a free one by default) and wait until it answers ``ping``."""
    import importlib.util

    if importlib.util.find_spec("secantus") is None:  # an extra: Atlas users never need it
        raise RuntimeError("the embedded database needs SecantusDB: pip install 'dreamforge[local]', "
                           "or set MONGODB_URI to your MongoDB (e.g. Atlas)")  # fmt: skip
    storage.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 — owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", str(storage), "--sync-on-commit", "--log-level", "WARNING"],
        stdout=out, stderr=subprocess.STDOUT, cwd=storage,  # cwd: never pick up a stray ./secantusd.toml
        preexec_fn=_own_session,  # Ctrl-C in a terminal reaches us; we stop the DB last, cleanly
    )  # fmt: skip
    db = EmbeddedDB(proc, port, storage)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded database exited at start (code {proc.returncode}); see {log or 'its log'}")
        try:
            with pymongo.MongoClient(db.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as c:
                c.admin.command("ping")
            return db
        except pymongo.errors.PyMongoError:
            if time.monotonic() > deadline:
                db.kill()
                raise RuntimeError(f"the embedded database did not answer on port {port} within {timeout:.0f} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running(storage: Path, port: int | None = None) -> Iterator[EmbeddedDB]:
    db = start(storage, port)
    try:
        yield db
    finally:
        db.stop()


def data_home() -> Path:
    """The project data directory: ``$DREAMFORGE_HOME``, else ``./.dreamforge``."""
    return Path(os.environ.get("DREAMFORGE_HOME", ".dreamforge")).resolve()
