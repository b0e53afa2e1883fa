"""The fsspec filesystems of ``s3://``, ``gs://`` and ``https://``, configured only from the
environment, and the parsing of a remote URI.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from typing import Any

from pipeline.data.errors import DataError
from pipeline.data.remote.guard import UnsafeAddressError, _guarded_client, check_url
from pipeline.data.remote.limits import (
    _GCS_BUCKET,
    _GRIDFS_ID,
    _S3_BUCKET,
    ALLOW_PRIVATE_ENV,
    CONNECT_TIMEOUT_S,
    MAX_REDIRECTS,
    READ_TIMEOUT_S,
    redact,
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
