"""A real SecantusDB (MongoDB-wire) server for tests: ``with running_secantus(tmp_path) as uri: ...``.

Started as a subprocess on a free loopback port with ``--sync-on-commit`` (acknowledged writes
survive a crash) and ``retryWrites=false`` in the URI (see ../shared/FACTS.md). It answers
``ping`` about 1–2 s after start; SIGTERM has been seen to hang, so stopping is terminate,
wait, then kill.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before we bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_ping(uri: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import pymongo

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"secantus exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
        try:
            client.admin.command("ping")
            return
        except pymongo.errors.PyMongoError as exc:
            last = exc
            time.sleep(0.1)
        finally:
            client.close()
    raise RuntimeError(f"secantus did not answer ping within {timeout:.0f} s ({last}):\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate ``process``; kill it if it has not exited after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextlib.contextmanager
def running_secantus(
    directory: str | os.PathLike[str], *, port: int | None = None, start_timeout: float = START_TIMEOUT_S
) -> Iterator[str]:
    """Run SecantusDB with its data under ``directory``; yield its ``mongodb://`` URI.

    The data lives in ``directory/db`` and the server log in ``directory/secantus.log``. The
    server runs with ``directory`` as its working folder, so no stray ``secantusd.toml`` is read.
    Pass the same ``directory`` again to restart over the same data.
    """
    directory = Path(directory)
    (directory / "db").mkdir(parents=True, exist_ok=True)
    log = directory / "secantus.log"
    for attempt in range(3):  # the free port can be taken between free_port() and the bind
        chosen = port or free_port()
        uri = f"mongodb://127.0.0.1:{chosen}/?retryWrites=false"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(chosen),
                 "--storage-path", str(directory / "db"), "--sync-on-commit"],
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            _wait_for_ping(uri, process, log, start_timeout)
            break
        except RuntimeError:
            stop(process)
            if port is not None or attempt == 2:
                raise
    try:
        yield uri
    finally:
        stop(process)
