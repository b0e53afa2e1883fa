"""Datasets from remote storage: ``s3://``, ``gs://``, ``https://`` and ``gridfs://``.

A remote dataset is a ``.zip`` object or a "folder" prefix holding the COCO json and images.
It is downloaded into the cache (``$DREAMFORGE_CACHE/remote``) and then read by the same
code as a local folder or ZIP, so the ZIP checks (zip-slip, symlinks, bombs) apply unchanged.

Remote URIs come from users and are treated as hostile:

* Only ``s3://``, ``gs://`` and ``https://`` (plus ``gridfs://`` for datasets uploaded to the
  service). ``http://`` only when private addresses are explicitly allowed (below).
* No storage options from the URI or the config. Credentials and endpoints come from the
  environment only: the standard AWS chain (``AWS_ACCESS_KEY_ID`` … or a profile or role) and
  ``DREAMFORGE_S3_ENDPOINT`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for S3; Google
  default credentials and ``DREAMFORGE_GCS_ENDPOINT`` / ``STORAGE_EMULATOR_HOST`` for GCS;
  ``MONGODB_URI`` and ``DREAMFORGE_DB`` for GridFS. User info (``user:pass@``) in a URI is refused.
* SSRF guard: an ``https://`` host is resolved and refused when any address is loopback,
  private, link-local (169.254.0.0/16 and fe80::/10: cloud metadata), unspecified, multicast
  or otherwise not global. The same check runs inside the HTTP client's connector, on the very
  addresses it then connects to, for every connection it opens — so every redirect hop is
  checked, and a DNS answer cannot change between the check and the connect (no rebinding).
  Redirects to any scheme but https are refused. ``DREAMFORGE_ALLOW_PRIVATE_URLS=1`` (or
  ``allow_private=True``) admits loopback and private addresses and plain http, for the
  embedded local stack and tests; link-local, metadata, multicast and unspecified addresses
  stay refused even then. Custom S3/GCS endpoints (operator settings) get the same check
  once, before use.
* Limits: :data:`MAX_REMOTE_BYTES` in total, :data:`MAX_REMOTE_OBJECTS` objects in a folder,
  connect/read timeouts per request and :data:`DOWNLOAD_TIMEOUT_S` for the whole download.
  Sizes are checked from the listing first and counted again while streaming (sizes can lie).

Downloads are cached by URI plus the object's version (ETag / generation / size; for a folder,
of every object in it), so a second load costs one metadata request and no download.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.data.errors import DataError
from pipeline.data.remote.filesystems import _filesystem, _safe_parts, parse_remote_uri
from pipeline.data.remote.guard import UnsafeAddressError, address_problem, check_host, check_url
from pipeline.data.remote.limits import (
    _CHUNK,
    _COMPLETE,
    ALLOW_PRIVATE_ENV,
    CONNECT_TIMEOUT_S,
    DOWNLOAD_TIMEOUT_S,
    GRIDFS_BUCKET,
    MAX_REDIRECTS,
    MAX_REMOTE_BYTES,
    MAX_REMOTE_OBJECTS,
    READ_TIMEOUT_S,
    SCHEMES,
    _human,
    allow_private_from_env,
    redact,
)
from pipeline.data.sources import Source, cache_dir, extract_zip, mark_used

__all__ = ["ALLOW_PRIVATE_ENV", "CONNECT_TIMEOUT_S", "DOWNLOAD_TIMEOUT_S", "GRIDFS_BUCKET", "MAX_REDIRECTS",
           "MAX_REMOTE_BYTES", "MAX_REMOTE_OBJECTS", "READ_TIMEOUT_S", "SCHEMES", "UnsafeAddressError",
           "address_problem", "allow_private_from_env", "check_host", "check_url", "fetch_gridfs", "fetch_remote",
           "parse_remote_uri", "redact", "resolve_remote", "upload_name"]  # fmt: skip
# _filesystem and _chain too, for the tests that exercise them.
# ------------------------------------------------------------------------------ downloads


class _Budget:
    """Bytes and time left for one download; raises DataError naming the URI when exceeded."""

    def __init__(self, label: str):
        self.label, self.bytes, self.deadline = label, 0, time.monotonic() + DOWNLOAD_TIMEOUT_S

    def check_size(self, size: int, what: str) -> None:
        if size > MAX_REMOTE_BYTES:
            raise DataError(
                f"{self.label}: {what} is {_human(size)}, over the {_human(MAX_REMOTE_BYTES)} limit; "
                "use a smaller dataset or raise pipeline.data.remote.MAX_REMOTE_BYTES"
            )

    def add(self, count: int) -> None:
        self.bytes += count
        if self.bytes > MAX_REMOTE_BYTES:
            raise DataError(
                f"{self.label}: the download passed the {_human(MAX_REMOTE_BYTES)} limit "
                "(more bytes than the server announced); use a smaller dataset"
            )
        if time.monotonic() > self.deadline:
            raise DataError(f"{self.label}: the download took longer than {DOWNLOAD_TIMEOUT_S:.0f} s; try again later")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def _errors(label: str, redirects: list[str]) -> Iterator[None]:
    """Turn what fsspec, aiohttp, botocore and pymongo raise into DataErrors naming ``label``."""
    try:
        yield
    except DataError as exc:
        if str(exc).startswith(label):
            raise
        via = f" (after a redirect to {redact(redirects[-1])})" if redirects else ""
        raise DataError(f"{label}: {exc}{via}") from None
    except Exception as exc:  # noqa: BLE001 - every library raises its own types; we name them
        causes = list(_chain(exc))
        for cause in causes:
            if isinstance(cause, DataError):
                via = f" (after a redirect to {redact(redirects[-1])})" if redirects else ""
                raise DataError(f"{label}: {cause}{via}") from None
        for cause in causes:
            status = getattr(cause, "status", None)
            if isinstance(cause, PermissionError) or status in (401, 403) or "AccessDenied" in repr(cause):
                raise DataError(
                    f"{label}: access denied ({cause}); check the credentials in the environment "
                    "(AWS_ACCESS_KEY_ID / AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS)"
                ) from exc
        for cause in causes:
            if isinstance(cause, FileNotFoundError):
                raise DataError(f"{label}: no such object or folder; check the bucket and key") from exc
        for cause in causes:
            if isinstance(cause, (TimeoutError, asyncio.TimeoutError)) or "timeout" in type(cause).__name__.lower():
                raise DataError(
                    f"{label}: timed out (connect {CONNECT_TIMEOUT_S:.0f} s, read {READ_TIMEOUT_S:.0f} s); try again later"
                ) from exc
        raise DataError(f"{label}: cannot download ({type(exc).__name__}: {exc})") from exc


def _version_key(info: dict[str, Any]) -> str | None:
    """What identifies one version of an object: ETag / generation / checksum / date, plus size."""
    fields = [f"{k}={info[k]}" for k in ("ETag", "etag", "generation", "md5Hash", "Last-Modified") if info.get(k)]
    if info.get("size") is not None:
        fields.append(f"size={info['size']}")
    return "|".join(fields) if fields else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _uri_dir(dest_dir: Path, uri: str) -> Path:
    return dest_dir / _digest(redact(uri) if uri.startswith("http") else uri)


def _publish(tmp: Path, final: Path) -> None:
    """Move a completed download into place and drop older versions of the same URI."""
    (tmp / _COMPLETE).write_text("ok")
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / _COMPLETE).exists():  # a stale half-written folder; ours is complete
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
    for sibling in final.parent.iterdir():
        if sibling != final and not sibling.name.startswith(".tmp-"):
            shutil.rmtree(sibling, ignore_errors=True)


def _copy(read: Callable[[int], bytes], target: Path, budget: _Budget) -> None:
    with open(target, "wb") as out:
        while chunk := read(_CHUNK):
            budget.add(len(chunk))
            out.write(chunk)


def fetch_remote(uri: str, dest_dir: Path | None = None, *, allow_private: bool | None = None) -> Path:
    """Download ``s3://``, ``gs://`` or ``https://`` ``uri`` into the cache; return the local path.

    The result is a ``.zip`` file (for a ZIP object or URL) or a folder (for a prefix holding
    the COCO json and images). A second call for an unchanged object only asks for its
    metadata. ``allow_private`` defaults to ``$DREAMFORGE_ALLOW_PRIVATE_URLS``.
    """
    if allow_private is None:
        allow_private = allow_private_from_env()
    scheme, path = parse_remote_uri(uri, allow_private=allow_private)
    if scheme == "gridfs":
        return fetch_gridfs(uri, dest_dir)
    label = redact(uri)
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "remote"
    redirects: list[str] = []
    budget = _Budget(label)
    with _errors(label, redirects):
        fs = _filesystem(scheme, allow_private=allow_private, redirects=redirects)
        info = {"type": "directory"} if uri.endswith("/") and scheme != "https" else fs.info(path)
        if info.get("type") == "directory":
            return _fetch_folder(fs, path, _uri_dir(dest_dir, uri), label, budget)
        if info.get("size") is not None:
            budget.check_size(int(info["size"]), "the object")
        version = _version_key(info)
        name = PurePosixPath(urllib.parse.urlsplit(uri).path).name or "dataset"
        final = _uri_dir(dest_dir, uri) / _digest(version or f"unversioned-{time.time_ns()}")
        target = final / (name if name.lower().endswith(".zip") else name + ".zip")
        if version and (final / _COMPLETE).exists():
            mark_used(final)
            return target
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            # block_size=0: one streamed GET over http(s) instead of ranged reads
            open_kwargs = {"block_size": 0} if scheme in ("http", "https") else {}
            with fs.open(path, "rb", **open_kwargs) as src:
                _copy(src.read, tmp / target.name, budget)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _fetch_folder(fs: Any, path: str, uri_dir: Path, label: str, budget: _Budget) -> Path:
    listing = fs.find(path, detail=True)
    prefix = path.rstrip("/") + "/"
    objects: dict[tuple[str, ...], dict[str, Any]] = {}
    for full, info in listing.items():
        if info.get("type") == "directory" or full.endswith("/"):
            continue  # "folder" marker objects
        relative = full[len(prefix) :] if full.startswith(prefix) else None
        parts = _safe_parts(relative) if relative else None
        if parts is None:
            raise DataError(
                f"{label}: object {full!r} has a key that would be written outside the dataset folder "
                "(empty, '.' or '..' segments, backslashes or NUL); rename it"
            )
        objects[parts] = info
        if len(objects) > MAX_REMOTE_OBJECTS:
            raise DataError(
                f"{label}: the folder has more than {MAX_REMOTE_OBJECTS} objects; zip the dataset or "
                "split it (pipeline.data.remote.MAX_REMOTE_OBJECTS)"
            )
    if not objects:
        raise DataError(f"{label}: the folder is empty; upload the COCO json and images under it")
    budget.check_size(sum(int(info.get("size") or 0) for info in objects.values()), "the folder")
    version = "\n".join(f"{'/'.join(parts)} {_version_key(info)}" for parts, info in sorted(objects.items()))
    final = uri_dir / _digest(version)
    if (final / _COMPLETE).exists():
        mark_used(final)
        return final / "data"
    uri_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=uri_dir))
    try:
        for parts, info in sorted(objects.items()):
            target = tmp.joinpath("data", *parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open(info.get("name", prefix + "/".join(parts)), "rb") as src:
                _copy(src.read, target, budget)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "data"


# -------------------------------------------------------------------------------- GridFS


def upload_name(metadata: dict[str, Any] | None, filename: str | None) -> str:
    """The name a GridFS dataset was uploaded under (``metadata.name``, else its file name
    without ``.zip``), as a plain file name; empty when it has none."""
    raw = (metadata or {}).get("name") or PurePosixPath(filename or "").name
    raw = str(raw).removesuffix(".zip")
    return re.sub(r"[^\w.-]+", "_", raw).strip("._")[:100]


def fetch_gridfs(
    uri: str, dest_dir: Path | None = None, mongo_uri: str | None = None, *, db_name: str | None = None
) -> Path:
    """Download the ZIP stored as ``gridfs://ID`` (bucket ``datasets``) into the cache; return its path.

    ``mongo_uri`` defaults to ``$MONGODB_URI``, ``db_name`` to ``$DREAMFORGE_DB`` or
    ``"dreamforge"``. The id is an ObjectId (24 hex digits) or the string the file was stored
    under. GridFS files never change, so the cache is keyed by id, length and upload date.
    """
    import gridfs
    import pymongo
    from bson import ObjectId
    from pymongo.errors import PyMongoError

    _, raw_id = parse_remote_uri(uri)
    label = uri
    mongo_uri = mongo_uri or os.environ.get("MONGODB_URI")
    if not mongo_uri:
        raise DataError(f"{label}: set MONGODB_URI to the database that holds uploaded datasets")
    db_name = db_name or os.environ.get("DREAMFORGE_DB") or "dreamforge"
    file_id: Any = ObjectId(raw_id) if ObjectId.is_valid(raw_id) else raw_id
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "remote"
    budget = _Budget(label)
    timeout_ms = int(CONNECT_TIMEOUT_S * 1000)
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        mongo_uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=int(READ_TIMEOUT_S * 1000),
    )
    try:
        bucket = gridfs.GridFSBucket(client[db_name], bucket_name=GRIDFS_BUCKET)
        try:
            stream = bucket.open_download_stream(file_id)
        except gridfs.errors.NoFile:
            raise DataError(
                f"{label}: no dataset with id {raw_id!r} in GridFS bucket {GRIDFS_BUCKET!r} of database "
                f"{db_name!r}; upload it first (POST /api/datasets) or check the id"
            ) from None
        with stream:
            budget.check_size(stream.length, "the stored dataset")
            # The copy carries the name the user uploaded it under, so logs and the dataset's
            # name say "coins", not the id (the id stays in the URI for machines).
            name = upload_name(stream.metadata, stream.filename) or raw_id
            final = _uri_dir(dest_dir, f"gridfs://{raw_id}") / _digest(f"{stream.length}|{stream.upload_date}|{name}")
            target = final / f"{name}.zip"
            if (final / _COMPLETE).exists():
                mark_used(final)
                return target
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            try:
                _copy(stream.read, tmp / target.name, budget)
                _publish(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return target
    except PyMongoError as exc:
        raise DataError(
            f"{label}: cannot read from MongoDB (MONGODB_URI, database {db_name!r}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        client.close()


# ------------------------------------------------------------------------------- Source


def resolve_remote(uri: str, *, allow_private: bool | None = None) -> Source:
    """Download ``uri`` (any of :data:`SCHEMES`) and return a :class:`Source` for the local copy."""
    label = redact(uri)
    local = fetch_remote(uri, allow_private=allow_private)
    name = PurePosixPath(urllib.parse.urlsplit(uri).path.rstrip("/")).name or urllib.parse.urlsplit(uri).netloc
    name = name[:-4] if name.lower().endswith(".zip") else name
    if uri.lower().startswith("gridfs://"):
        name = local.stem  # the uploaded name (fetch_gridfs), not the id
    if local.is_dir():
        return Source(label=label, name=name, root=local)
    import zipfile

    if not zipfile.is_zipfile(local):
        raise DataError(
            f"{label}: not a ZIP archive; point at a .zip object, or at the folder (prefix) that "
            "holds the COCO json and the images"
        )
    return Source(label=label, name=name, root=extract_zip(local, label=label), is_zip=True)
