"""A job's artifacts as the API reads them: from the artifacts folder on its own disk (``dreamforge
up``, where API and worker share it), or through the store a deployment installs as
``app.state.artifact_store`` where they share no disk (Modal's ``web``, which reads the artifacts
Volume through Modal's API: ``modal_app``).

A store answers three questions about a path relative to the artifacts root: the whole file
(``read``, None when there is none), the files under it with their sizes (``files``: one entry
``("", size, mtime)`` for a file itself, None when there is nothing), and a byte range of one of
them (``stream``). The samples route reads, the downloads route lists and streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from fastapi import Request

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str  # relative to the listed path, "/"-separated; "" when the path is the file itself
    size: int
    mtime: int


class Store(Protocol):
    async def read(self, rel: str) -> bytes | None: ...

    async def files(self, rel: str) -> list[Entry] | None: ...

    def stream(self, rel: str, lo: int, hi: int) -> AsyncIterator[bytes]: ...


class DiskStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def read(self, rel: str) -> bytes | None:
        path = self.root / rel
        return await asyncio.to_thread(path.read_bytes) if path.is_file() else None

    async def files(self, rel: str) -> list[Entry] | None:
        return await asyncio.to_thread(self._files, self.root / rel)

    @staticmethod
    def _files(path: Path) -> list[Entry] | None:
        if path.is_file():
            st = path.stat()
            return [Entry("", st.st_size, int(st.st_mtime))]
        if not path.is_dir():
            return None
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return [Entry(p.relative_to(path).as_posix(), (st := p.stat()).st_size, int(st.st_mtime)) for p in found]

    async def stream(self, rel: str, lo: int, hi: int) -> AsyncIterator[bytes]:
        """Bytes ``lo`` … ``hi - 1``; a file that shrank since it was listed is padded with zeros,
        so the Content-Length already sent holds."""
        with (self.root / rel).open("rb") as f:
            await asyncio.to_thread(f.seek, lo)
            while lo < hi:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, hi - lo)) or b"\0" * min(CHUNK, hi - lo)
                lo += len(chunk)
                yield chunk


class VolumeStore:
    """Over ``Volume.read_file.aio`` and ``Volume.listdir.aio`` (Modal 1.6.4, modal/volume.py): the
    Volume's committed state, read in blocks (``FileNotFoundError`` for a missing path) and listed
    as ``FileEntry(path, type, mtime, size)`` with paths from the Volume's root. No mount and no
    reload, so what a stage committed is visible at once, whatever files other requests hold. The
    API has no ranged read: a resumed download skips the blocks before its range."""

    def __init__(self, read_file: Callable[[str], AsyncIterator[bytes]],
                 listdir: Callable[..., Awaitable[list[Any]]]) -> None:  # fmt: skip
        self.read_file, self.listdir = read_file, listdir

    async def read(self, rel: str) -> bytes | None:
        try:
            return b"".join([chunk async for chunk in self.read_file(rel)])
        except FileNotFoundError:
            return None

    async def files(self, rel: str) -> list[Entry] | None:
        try:
            listed = await self.listdir(rel, recursive=True)
        except Exception as e:
            if isinstance(e, FileNotFoundError) or type(e).__name__ == "NotFoundError":  # modal.exception's
                return None
            raise
        files = [e for e in listed if _is_file(e)]
        if len(files) == 1 and PurePosixPath(files[0].path) == PurePosixPath(rel):  # the path is a file
            return [Entry("", files[0].size, files[0].mtime)]
        base = PurePosixPath(rel)
        entries = [Entry(PurePosixPath(e.path).relative_to(base).as_posix(), e.size, e.mtime) for e in files]
        return sorted(entries, key=lambda e: e.name) or None

    async def stream(self, rel: str, lo: int, hi: int) -> AsyncIterator[bytes]:
        at = 0
        async for block in self.read_file(rel):
            part = block[max(lo - at, 0) : max(hi - at, 0)]
            at += len(block)
            if part:
                yield part
            if at >= hi:
                return
        if at < hi:  # shorter than listed: pad, as the disk store does
            yield b"\0" * (hi - max(at, lo))


def _is_file(entry: Any) -> bool:
    kind = getattr(entry.type, "name", str(entry.type))
    return kind.upper().endswith("FILE")


def relative(path: str | Path, root: Path) -> str | None:
    """``path`` (as a job document stores it) relative to the artifacts root, or None if it lies
    outside: paths read from the database are checked, not trusted."""
    resolved, base = Path(path).resolve(), root.resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else None


def store_of(request: Request, root: Path) -> Store:
    return getattr(request.app.state, "artifact_store", None) or DiskStore(root)


async def read_artifact(request: Request, root: Path, path: str | Path) -> bytes | None:
    rel = relative(path, root)
    if rel is None:
        return None
    return await store_of(request, root).read(rel)
