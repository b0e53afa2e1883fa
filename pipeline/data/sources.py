"""Where a dataset comes from: a folder, a ``.zip``, a ``.json`` file, ``file://``, ``synthetic://`` or remote.

``resolve_source`` turns what the user typed into a local folder to read (extracting ZIPs
safely into a cache) or into the parameters of a synthetic dataset. ZIPs are treated as
hostile: users upload them through the service, so a crafted archive must not write outside
its folder (zip-slip), plant symlinks, or fill the disk (zip bomb). Remote URIs (``s3://``,
``gs://``, ``https://``, ``gridfs://``) are downloaded by :mod:`pipeline.data.remote` first.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.errors import DataError, os_reason

# Limits for uploaded archives. Module constants so a deployment can tune them in one place
# and tests can shrink them with monkeypatch; the service passes a smaller byte cap sized to
# its upload limit (``extract_zip(max_bytes=...)``).
MAX_ZIP_MEMBERS = 100_000
MAX_ZIP_BYTES = 4 * 1024**3  # total uncompressed bytes; the small-image datasets we train on are far below
# Images barely compress and COCO JSON about 5-20x; a zip bomb is ~1000x. Below the floor the
# ratio is not checked (a small, repetitive annotation file may compress very well).
MAX_ZIP_RATIO = 100
ZIP_RATIO_FLOOR = 64 << 20
_CHUNK = 1 << 20

SYNTHETIC_SCHEME = "synthetic"
# Handled by pipeline.data.remote (downloaded into the cache, then read like a local copy).
# http:// is listed so that remote can explain when it is allowed (local stack and tests only).
REMOTE_SCHEMES = ("s3", "gs", "https", "http", "gridfs")


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


# Query parameters a synthetic:// URI may carry, with the parser of each.
SYNTHETIC_PARAMS: dict[str, Any] = {
    "n": int,
    "seed": int,
    "size": int,
    "min_objects": int,
    "max_objects": int,
    "points": int,  # the last `points` images carry only clicks
    "counts": int,  # the `counts` images before them only counts
    "task": str,
    "shift": _flag,  # the shifted held-out look (pipeline.data.synthetic.generate)
}
_COMPLETE_MARKER = ".dreamforge-complete"


@dataclass
class Source:
    """A resolved dataset source."""

    label: str  # how error messages name the source: what the user passed
    name: str  # default ``Dataset.name``
    root: Path | None = None  # the folder to read (an extracted ZIP lives in the cache)
    annotation_file: Path | None = None  # set when the user pointed at one .json file
    synthetic: dict[str, Any] | None = None  # parameters of a synthetic:// URI
    is_zip: bool = False
    extracted_to: Path | None = None  # the folder this call extracted the ZIP to (None: reused from the cache)


def cache_dir() -> Path:
    """Where extracted ZIPs are kept: ``$DREAMFORGE_CACHE``, else ``$XDG_CACHE_HOME/dreamforge``."""
    env = os.environ.get("DREAMFORGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dreamforge"


def mark_used(entry: Path) -> None:
    """Record that a cached dataset was read now: the retention sweep deletes entries not read
    for longer than its retention (``dreamforge.worker.cleanup_dataset_cache``)."""
    try:
        os.utime(entry)
    except OSError:  # a read-only cache still serves; it is just not swept
        pass


def resolve_source(source: str | os.PathLike[str]) -> Source:
    """Turn a path or URI into a :class:`Source`; ZIPs are extracted (safely) on the way."""
    text = os.fspath(source)
    if text.startswith(f"{SYNTHETIC_SCHEME}://"):
        params = parse_synthetic_uri(text)
        return Source(label=text, name=params["kind"], synthetic=params)
    if text.startswith("file://"):
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise DataError(
                f"{text}: file:// URIs must point at this machine (got host {parts.netloc!r}); "
                "copy the data here or use a local path"
            )
        path = Path(urllib.request.url2pathname(parts.path))
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        scheme = text.split("://", 1)[0].lower()
        if scheme in REMOTE_SCHEMES:
            from pipeline.data.remote import resolve_remote  # local: imports aiohttp, and this module

            return resolve_remote(text)
        raise DataError(
            f"{text}: unsupported scheme {scheme!r}; use a local folder, a .zip, a file:// URI, "
            "synthetic://KIND?n=N&seed=S, or a remote s3://, gs://, https:// or gridfs:// URI"
        )
    else:
        path = Path(text)

    if path.is_dir():
        return Source(label=text, name=path.resolve().name or text, root=path)
    if not path.exists():
        raise DataError(f"{text}: no such file or folder; check the path")
    if path.suffix.lower() == ".json":
        return Source(
            label=text,
            name=path.resolve().parent.name or path.stem,
            root=path.parent,
            annotation_file=path,
        )
    if zipfile.is_zipfile(path):
        root, fresh = _extract_zip(path, label=text)
        return Source(label=text, name=path.stem, root=root, is_zip=True, extracted_to=root if fresh else None)
    raise DataError(
        f"{text}: not a folder, a .zip archive or a COCO .json file; "
        "pass the dataset folder, a zip of it, or its annotation file"
    )


def parse_synthetic_uri(uri: str) -> dict[str, Any]:
    """Parse ``synthetic://KIND?n=N&seed=S[&size=..&min_objects=..&max_objects=..&points=..&counts=..&task=..]``.

    >>> parse_synthetic_uri("synthetic://retail-shelf?n=64&seed=0")
    {'kind': 'retail-shelf', 'n': 64, 'seed': 0}
    """
    from pipeline.data.synthetic import KINDS, check_uri_bounds  # local: synthetic imports this module (circular)

    parts = urllib.parse.urlsplit(uri)
    kind = parts.netloc or parts.path.strip("/")
    if kind not in KINDS:
        raise DataError(f"{uri}: unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    params: dict[str, Any] = {"kind": kind}
    for key, values in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items():
        if key not in SYNTHETIC_PARAMS:
            raise DataError(f"{uri}: unknown parameter {key!r}; allowed: {', '.join(SYNTHETIC_PARAMS)}")
        if len(values) != 1:
            raise DataError(f"{uri}: parameter {key!r} is given {len(values)} times; give it once")
        kind_of = SYNTHETIC_PARAMS[key]
        try:
            params[key] = kind_of(values[0])
        except ValueError:
            if kind_of is _flag:
                raise DataError(f"{uri}: parameter {key}={values[0]!r} must be 0 or 1; e.g. {key}=1") from None
            raise DataError(
                f"{uri}: parameter {key}={values[0]!r} is not an integer; e.g. {key}=64"
            ) from None
    params.setdefault("n", 64)
    if params["n"] < 1:
        raise DataError(f"{uri}: n={params['n']} must be at least 1")
    try:
        check_uri_bounds(params)
    except ValueError as e:
        raise DataError(f"{uri}: {e}") from None
    return params


def synthetic_uri(kind: str, n: int, seed: int, task: str | None = None) -> str:
    """The URI ``load_dataset`` accepts for a synthetic dataset.

    >>> synthetic_uri("retail-shelf", 64, 0)
    'synthetic://retail-shelf?n=64&seed=0'
    """
    query = {"n": int(n), "seed": int(seed)}
    if task is not None:
        query["task"] = task  # type: ignore[assignment]
    return f"{SYNTHETIC_SCHEME}://{kind}?{urllib.parse.urlencode(query)}"


# ---------------------------------------------------------------------------- ZIP archives


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be extracted, or None when it is safe."""
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "has an absolute path"
    if ".." in norm.split("/"):
        return "has '..' in its path and would be written outside the archive folder (zip-slip)"
    mode = info.external_attr >> 16  # Unix mode bits; 0 for archives made on Windows
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: type bits unset (Python's writestr)
        return "is not a regular file or folder (device, FIFO or socket)"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def _declared_size(infos: list[zipfile.ZipInfo]) -> int:
    """Total uncompressed size the archive's directory claims (which a crafted archive can fake)."""
    return sum(info.file_size for info in infos)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_zip(
    zip_path: Path, *, label: str | None = None, dest_root: Path | None = None, max_bytes: int | None = None
) -> Path:
    """Safely extract ``zip_path`` into the cache and return the folder.

    The folder is keyed by the archive's SHA-256, so loading the same ZIP twice reuses it and
    ``Sample.path`` stays valid after loading. Raises :class:`DataError` naming the archive
    and the member for zip-slip paths, symlinks, too many members, too many bytes
    (``max_bytes``, default ``MAX_ZIP_BYTES``) or a compression ratio over ``MAX_ZIP_RATIO``.
    """
    return _extract_zip(zip_path, label=label, dest_root=dest_root, max_bytes=max_bytes)[0]


def _extract_zip(
    zip_path: Path, *, label: str | None = None, dest_root: Path | None = None, max_bytes: int | None = None
) -> tuple[Path, bool]:
    """``extract_zip``, and whether this call extracted it (False: reused from the cache)."""
    label = label or str(zip_path)
    try:
        digest = _sha256(zip_path)
    except OSError as exc:
        raise DataError(f"{label}: cannot read the archive ({os_reason(exc)}); check the file") from exc
    parent = dest_root or cache_dir() / "zips"
    dest = parent / f"{zip_path.stem}-{digest[:16]}"
    if (dest / _COMPLETE_MARKER).exists():
        mark_used(dest)
        return dest, False
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{label}: cannot create the extraction folder {parent} ({os_reason(exc)}); "
            "set DREAMFORGE_CACHE to a writable folder"
        ) from exc

    # Extract into a private temporary folder and rename it into place only when complete,
    # so a crash or a rejected archive never leaves a half-extracted dataset in the cache.
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=parent))
    try:
        _extract_into(zip_path, tmp, label, MAX_ZIP_BYTES if max_bytes is None else max_bytes)
        (tmp / _COMPLETE_MARKER).write_text(digest)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process finished the same archive first; theirs is as good as ours.
            if not (dest / _COMPLETE_MARKER).exists():
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, True


def remove_extracted(source: Source) -> None:
    """Delete the folder a failed load extracted, so a rejected archive leaves no files in
    the cache (one upload left 99k). A folder reused from the cache is left alone: another
    load may be reading it."""
    if source.extracted_to is not None:
        shutil.rmtree(source.extracted_to, ignore_errors=True)


def _bomb(label: str, what: str) -> DataError:
    return DataError(f"{label}: {what}; this looks like a zip bomb — upload a smaller dataset")


def _extract_into(zip_path: Path, dest: Path, label: str, max_bytes: int) -> None:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{label}: not a readable ZIP archive ({exc}); re-create the archive") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DataError(
                f"{label}: the archive has {len(infos)} members, more than the {MAX_ZIP_MEMBERS} "
                "allowed; split the dataset or remove unneeded files"
            )
        # Check every name before writing anything.
        for info in infos:
            problem = _member_problem(info)
            if problem:
                raise DataError(
                    f"{label}: member {info.filename!r} {problem}; rebuild the archive with "
                    "plain relative paths (e.g. `cd dataset && zip -r ../dataset.zip .`)"
                )
        # The archive's directory is checked before anything is written ...
        declared = _declared_size(infos)
        # (compressed sizes can lie too, but not past the archive's own size)
        packed = max(min(sum(info.compress_size for info in infos), zip_path.stat().st_size), 1)
        if declared > max_bytes:
            biggest = max(infos, key=lambda i: i.file_size)
            raise _bomb(label, f"the archive would expand to {declared} bytes, more than the {max_bytes} "
                               f"allowed (largest member {biggest.filename!r}: {biggest.file_size} bytes)")  # fmt: skip
        if declared > ZIP_RATIO_FLOOR and declared > MAX_ZIP_RATIO * packed:
            worst = max(infos, key=lambda i: i.file_size / max(i.compress_size, 1))
            raise _bomb(label, f"the archive would expand {declared // packed}-fold ({packed} bytes to {declared}), "
                               f"more than the {MAX_ZIP_RATIO}-fold allowed (member {worst.filename!r}: "
                               f"{worst.compress_size} bytes to {worst.file_size})")  # fmt: skip
        # ... and, since declared sizes can lie, the bytes actually written as well.
        written = 0
        base = dest.resolve()
        for info in infos:
            target = (dest / info.filename.replace("\\", "/")).resolve()
            if target != base and base not in target.parents:  # defence in depth after the name check
                raise DataError(f"{label}: member {info.filename!r} resolves outside the archive folder")
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise _bomb(label, f"member {info.filename!r} expands past the {max_bytes}-byte "
                                               "limit for the whole archive")  # fmt: skip
                        if written > ZIP_RATIO_FLOOR and written > MAX_ZIP_RATIO * packed:
                            raise _bomb(label, f"member {info.filename!r} expands past {MAX_ZIP_RATIO} times "
                                               f"the archive's {packed} compressed bytes")  # fmt: skip
                        out.write(chunk)
            except DataError:
                raise
            except OSError as exc:  # its message would name the server's extraction path
                raise DataError(
                    f"{label}: member {info.filename!r} cannot be extracted ({os_reason(exc)}); re-create the archive"
                ) from exc
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise DataError(
                    f"{label}: member {info.filename!r} cannot be extracted ({exc}); re-create the archive"
                ) from exc
