"""A real SecantusDB (MongoDB-wire) server for tests: ``with running_secantus(tmp_path) as uri: ...``.

The same starter the local stack uses (``dreamforge.embedded_db``), so tests run the server
exactly as ``dreamforge up`` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dreamforge.local.embedded_db import free_port, start

__all__ = ["free_port", "running_secantus"]


@contextlib.contextmanager
def running_secantus(directory: str | os.PathLike[str], *, port: int | None = None) -> Iterator[str]:
    """Run SecantusDB with its data under ``directory/db``; yield its ``mongodb://`` URI.
    Pass the same ``directory`` again to restart over the same data."""
    directory = Path(directory)
    db = start(directory / "db", port, log=directory / "secantus.log")
    try:
        yield db.uri
    finally:
        db.stop()
