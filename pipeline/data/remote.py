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
import functools
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from yarl import URL

from pipeline.data.errors import DataError
from pipeline.data.sources import REMOTE_SCHEMES, Source, cache_dir, extract_zip, mark_used

# Limits. Module constants (not arguments) so a deployment tunes them in one place and tests
# shrink them with monkeypatch.
MAX_REMOTE_BYTES = 2 * 1000**3  # total bytes downloaded for one dataset
MAX_REMOTE_OBJECTS = 100_000  # objects under one folder prefix (same as MAX_ZIP_MEMBERS)
CONNECT_TIMEOUT_S = 10.0  # per connection
READ_TIMEOUT_S = 60.0  # per read: a stalled server fails within this
DOWNLOAD_TIMEOUT_S = 30 * 60.0  # the whole download
MAX_REDIRECTS = 5

SCHEMES = REMOTE_SCHEMES  # http only with allow_private
GRIDFS_BUCKET = "datasets"
ALLOW_PRIVATE_ENV = "DREAMFORGE_ALLOW_PRIVATE_URLS"

_CHUNK = 1 << 20
_COMPLETE = ".dreamforge-complete"
# Metadata services that are not link-local (AWS over IPv6, Alibaba): refused even when private
# addresses are allowed.
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_GRIDFS_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def allow_private_from_env() -> bool:
    """True when ``DREAMFORGE_ALLOW_PRIVATE_URLS`` is ``1``/``true``/``yes`` (local stack, tests)."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


def redact(uri: str) -> str:
    """``uri`` without its query string (presigned URLs carry credentials there)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))


def _human(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError  # unreachable


# ------------------------------------------------------------------------------ SSRF guard


class UnsafeAddressError(DataError):
    """A connection was refused by the SSRF guard (raised inside the HTTP client too)."""

    def __init__(self, host: str, address: str, problem: str):
        self.host, self.address, self.problem = host, address, problem
        where = host if host == address else f"{host} ({address})"
        super().__init__(f"refused to connect to {where}: {problem}")


def address_problem(address: str, *, allow_private: bool = False) -> str | None:
    """Why connecting to IP ``address`` is refused, or None when it is allowed.

    >>> address_problem("169.254.169.254", allow_private=True)
    'it is a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services live)'
    >>> address_problem("10.0.0.1") is not None, address_problem("10.0.0.1", allow_private=True)
    (True, None)
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address hiding inside an IPv6 one, judged first
        candidates[:0] = [a for a in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]) if a]
    for ip in candidates:
        if ip.is_link_local:
            return "it is a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services live)"
        if ip in _METADATA:
            return "it is a cloud metadata service address"
        if ip.is_multicast:
            return "it is a multicast address"
        if ip.is_unspecified:
            return "it is the unspecified address"
        if allow_private:
            continue
        if ip.is_loopback:
            return f"it is a loopback address (set {ALLOW_PRIVATE_ENV}=1 only for a local stack or tests)"
        if ip.is_private:
            return f"it is a private address (set {ALLOW_PRIVATE_ENV}=1 only for a local stack or tests)"
        if not ip.is_global:
            return "it is a reserved, non-public address"
    return None


def check_host(host: str, port: int | None, *, allow_private: bool = False) -> list[str]:
    """Resolve ``host`` and return its addresses; :class:`UnsafeAddressError` if any is refused.

    All or nothing: a name with one public and one private address is refused.
    """
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DataError(f"cannot resolve host {host!r} ({exc})") from exc
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise UnsafeAddressError(host, address, problem)
    return addresses


def check_url(url: str, *, allow_private: bool = False, what: str = "URL") -> urllib.parse.SplitResult:
    """Check an http(s) URL's scheme, user info and host (resolved); return it split."""
    parts = urllib.parse.urlsplit(url)
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        hint = "" if allow_private else f" (http:// only with {ALLOW_PRIVATE_ENV}=1)"
        raise DataError(f"{what} must use {' or '.join(s + '://' for s in allowed)}{hint}")
    if parts.username or parts.password:
        raise DataError(f"{what} must not carry credentials (user:password@); they come from the environment")
    if not parts.hostname:
        raise DataError(f"{what} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise DataError(f"{what} has a bad port ({exc})") from exc
    check_host(parts.hostname, port, allow_private=allow_private)
    return parts


class _GuardedConnector(aiohttp.TCPConnector):
    """A connector that checks each address it is about to connect to.

    ``_resolve_host`` is where aiohttp turns the host of every connection (first request,
    every redirect, IP literals and names alike) into the addresses it then connects to;
    checking its result closes the DNS-rebinding window between check and connect.
    """

    def __init__(self, *, allow_private: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self._allow_private = allow_private

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[Any]:
        results = await super()._resolve_host(host, port, traces=traces)
        for result in results:
            problem = address_problem(result["host"], allow_private=self._allow_private)
            if problem:
                raise UnsafeAddressError(host, result["host"], problem)
        return results


# aiohttp's hook is private API: fail loudly (and the tests fail) if a release renames it.
if not callable(getattr(aiohttp.TCPConnector, "_resolve_host", None)):  # pragma: no cover
    raise ImportError("aiohttp.TCPConnector._resolve_host is gone: the SSRF guard in pipeline.data.remote needs updating")


async def _guarded_client(*, allow_private: bool, redirects: list[str], **_: Any) -> aiohttp.ClientSession:
    async def on_redirect(session: Any, ctx: Any, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location", "")
        target = params.url.join(URL(location))
        redirects.append(str(target))
        allowed = ("https", "http") if allow_private else ("https",)
        if target.scheme not in allowed:
            raise DataError(f"redirected to {redact(str(target))}: only {' and '.join(allowed)} are followed")

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(on_redirect)
    return aiohttp.ClientSession(
        connector=_GuardedConnector(allow_private=allow_private),
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S),
        trust_env=False,  # no proxies from the environment: the guard must see the real target
    )


# ----------------------------------------------------------------------------- filesystems


def _endpoint(names: tuple[str, ...], *, allow_private: bool) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            if "://" not in value:  # STORAGE_EMULATOR_HOST is often host:port
                value = "http://" + value
            check_url(value, allow_private=allow_private, what=f"{name}={value}")
            return value
    return None


S3_ENDPOINT_ENV = ("DREAMFORGE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
GCS_ENDPOINT_ENV = ("DREAMFORGE_GCS_ENDPOINT", "STORAGE_EMULATOR_HOST")


def _filesystem(scheme: str, *, allow_private: bool, redirects: list[str]) -> Any:
    """An fsspec filesystem built only from our settings and the environment."""
    if scheme == "s3":
        import s3fs

        # The endpoint is an operator setting, checked once here; aiobotocore's own HTTP
        # client is not guarded per connection (operators control its DNS, users do not).
        endpoint = _endpoint(S3_ENDPOINT_ENV, allow_private=allow_private)
        return s3fs.S3FileSystem(
            endpoint_url=endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
            config_kwargs={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "read_timeout": READ_TIMEOUT_S,
                "retries": {"max_attempts": 3},
            },
        )
    if scheme == "gs":
        # The core JSON-API client: gcsfs's default "extended" class also probes the bucket
        # type over gRPC (60 s against an emulator), which plain dataset buckets do not need.
        from gcsfs.core import GCSFileSystem

        endpoint = _endpoint(GCS_ENDPOINT_ENV, allow_private=allow_private)
        return GCSFileSystem(
            endpoint_url=endpoint,
            token="anon" if endpoint else None,  # emulators take no credentials
            skip_instance_cache=True,
            use_listings_cache=False,
            timeout=READ_TIMEOUT_S,
        )
    from fsspec.implementations.http import HTTPFileSystem

    return HTTPFileSystem(
        get_client=functools.partial(_guarded_client, allow_private=allow_private, redirects=redirects),
        skip_instance_cache=True,
        max_redirects=MAX_REDIRECTS,
    )


def _safe_parts(relative: str) -> tuple[str, ...] | None:
    """The path segments of an object key, or None when it could escape its folder."""
    if "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = tuple(relative.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def parse_remote_uri(uri: str, *, allow_private: bool = False) -> tuple[str, str]:
    """Check ``uri`` and return ``(scheme, path)`` where ``path`` is what fsspec is given.

    Raises :class:`DataError` for an unsupported scheme, user info, ports or queries on
    bucket URIs, malformed bucket names and ``.``/``..`` path segments.
    """
    label = redact(uri)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    allowed = ("s3", "gs", "https", "http", "gridfs") if allow_private else ("s3", "gs", "https", "gridfs")
    if scheme not in allowed:
        hint = f" (http:// only with {ALLOW_PRIVATE_ENV}=1, for a local stack)" if scheme == "http" else ""
        raise DataError(
            f"{label}: unsupported scheme {scheme or 'none'!r}{hint}; remote datasets come from "
            "s3://BUCKET/KEY, gs://BUCKET/KEY, https://HOST/PATH.zip or gridfs://ID"
        )
    parts = urllib.parse.urlsplit(uri)
    if scheme in ("https", "http"):
        try:
            check_url(uri, allow_private=allow_private, what=label)
        except UnsafeAddressError as exc:
            raise DataError(f"{label}: {exc}") from None
        return scheme, urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    if scheme == "gridfs":
        if parts.path.strip("/") or parts.query or parts.fragment or not _GRIDFS_ID.match(parts.netloc):
            raise DataError(f"{label}: expected gridfs://ID with the id of an uploaded dataset")
        return scheme, parts.netloc
    bucket_re = _S3_BUCKET if scheme == "s3" else _GCS_BUCKET
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise DataError(f"{label}: {scheme}:// URIs take only a bucket and a key (no user, port, query or fragment)")
    if not bucket_re.match(parts.netloc):
        raise DataError(f"{label}: {parts.netloc!r} is not a valid bucket name")
    key = parts.path[1:]  # one leading slash separates bucket and key; more would be empty segments
    if key and _safe_parts(key.rstrip("/")) is None:
        raise DataError(f"{label}: the key has empty, '.' or '..' segments; give the plain object key")
    return scheme, f"{parts.netloc}/{key}".rstrip("/")


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
