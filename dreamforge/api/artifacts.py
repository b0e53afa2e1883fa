"""A job's artifacts as the API reads them: from the artifacts folder on its own disk (``dreamforge
up``, where API and worker share it), or through the reader a deployment installs as
``app.state.read_artifact`` where they share no disk (Modal's ``web``, which reads the artifacts
Volume through Modal's API: ``modal_app``).

A reader takes a path relative to the artifacts root and returns the file's bytes, or None when
there is no such file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import Request

Reader = Callable[[str], Awaitable[bytes | None]]


def disk_reader(root: Path) -> Reader:
    async def read(rel: str) -> bytes | None:
        path = root / rel
        return await asyncio.to_thread(path.read_bytes) if path.is_file() else None

    return read


def volume_reader(read_file: Callable[[str], AsyncIterator[bytes]]) -> Reader:
    """Over ``Volume.read_file.aio`` (Modal 1.6.4, modal/volume.py): the Volume's committed state,
    streamed in blocks, ``FileNotFoundError`` for a missing path. No mount and no reload, so what
    a stage committed is visible at once, whatever files other requests hold."""

    async def read(rel: str) -> bytes | None:
        try:
            return b"".join([chunk async for chunk in read_file(rel)])
        except FileNotFoundError:
            return None

    return read


def relative(path: str | Path, root: Path) -> str | None:
    """``path`` (as a job document stores it) relative to the artifacts root, or None if it lies
    outside: paths read from the database are checked, not trusted."""
    resolved, base = Path(path).resolve(), root.resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else None


async def read_artifact(request: Request, root: Path, path: str | Path) -> bytes | None:
    rel = relative(path, root)
    if rel is None:
        return None
    reader: Reader = getattr(request.app.state, "read_artifact", None) or disk_reader(root)
    return await reader(rel)
