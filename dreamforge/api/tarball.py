"""A folder as an uncompressed tar, with its exact length known before the first byte and any
byte range of it readable: a resumable download (``Range``) with ``Content-Length``, and no
archive written anywhere. Headers are ``tarfile``'s own (PAX), so any tar reads it."""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dreamforge.api.artifacts import Entry, Store

BLOCK = 512


@dataclass(frozen=True)
class Tarball:
    parts: tuple[bytes | tuple[str, int], ...]  # literal bytes, or (a file's path in the store, its length)
    size: int

    async def read(self, store: Store, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` … ``end`` (inclusive; None: to the end) of the archive."""
        end = self.size - 1 if end is None else end
        at = 0
        for part in self.parts:
            n = len(part) if isinstance(part, bytes) else part[1]
            lo, hi = max(start, at), min(end + 1, at + n)
            if lo < hi:
                if isinstance(part, bytes):
                    yield part[lo - at : hi - at]
                else:
                    async for chunk in store.stream(part[0], lo - at, hi - at):
                        yield chunk
            at += n
            if at > end:
                return


def plan(folder: str, entries: list[Entry], prefix: str) -> Tarball:
    """The tar of ``entries`` (the files under ``folder`` in the store) under ``prefix/``, in name
    order (the same bytes each time while the files do not change, so a resumed download
    continues the same archive)."""
    parts: list[bytes | tuple[str, int]] = []
    for e in sorted(entries, key=lambda e: e.name):
        info = tarfile.TarInfo(f"{prefix}/{e.name}")
        info.size, info.mtime, info.mode = e.size, e.mtime, 0o644
        parts.append(info.tobuf(format=tarfile.PAX_FORMAT))
        parts.append((f"{folder}/{e.name}", e.size))
        if e.size % BLOCK:
            parts.append(b"\0" * (BLOCK - e.size % BLOCK))
    parts.append(b"\0" * (2 * BLOCK))  # the end-of-archive marker
    return Tarball(tuple(parts), sum(len(p) if isinstance(p, bytes) else p[1] for p in parts))


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` of a single ``bytes=`` range, None for the whole (no header, several
    ranges, or one this does not parse: RFC 9110 lets a server ignore those); ValueError when it
    starts past the end (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes="):].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError(f"bytes {header[6:]} of {size}")
    return start, end
