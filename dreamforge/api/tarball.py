"""A folder as an uncompressed tar, with its exact length known before the first byte and any
byte range of it readable: a resumable download (``Range``) with ``Content-Length``, and no
archive written anywhere. Headers are ``tarfile``'s own (PAX), so any tar reads it."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 512
CHUNK = 1 << 20


@dataclass(frozen=True)
class Tarball:
    parts: tuple[bytes | tuple[Path, int], ...]  # literal bytes, or (file, its length in the archive)
    size: int

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` … ``end`` (inclusive; None: to the end) of the archive."""
        end = self.size - 1 if end is None else end
        at = 0
        for part in self.parts:
            n = len(part) if isinstance(part, bytes) else part[1]
            lo, hi = max(start, at), min(end + 1, at + n)
            if lo < hi:
                yield from (_slice(part, lo - at, hi - at) if isinstance(part, bytes) else _file(part[0], lo - at, hi - at))
            at += n
            if at > end:
                return


def _slice(data: bytes, lo: int, hi: int) -> Iterator[bytes]:
    yield data[lo:hi]


def _file(path: Path, lo: int, hi: int) -> Iterator[bytes]:
    # A file that shrank since the plan is padded with zeros: the Content-Length already sent holds.
    with path.open("rb") as f:
        f.seek(lo)
        while lo < hi:
            chunk = f.read(min(CHUNK, hi - lo)) or b"\0" * min(CHUNK, hi - lo)
            lo += len(chunk)
            yield chunk


def plan(folder: Path, prefix: str) -> Tarball:
    """The tar of ``folder``'s files under ``prefix/``, in name order (the same bytes each time
    while the files do not change, so a resumed download continues the same archive)."""
    parts: list[bytes | tuple[Path, int]] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        st = f.stat()
        info = tarfile.TarInfo(f"{prefix}/{f.relative_to(folder).as_posix()}")
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        parts.append(info.tobuf(format=tarfile.PAX_FORMAT))
        parts.append((f, st.st_size))
        if st.st_size % BLOCK:
            parts.append(b"\0" * (BLOCK - st.st_size % BLOCK))
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
