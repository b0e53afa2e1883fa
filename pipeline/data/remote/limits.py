"""The limits of a remote download and the settings read from the environment. Module
constants (not arguments), so a deployment tunes them in one place; ``MAX_REMOTE_BYTES`` and
``MAX_REMOTE_OBJECTS`` are read (and patched by tests) as ``pipeline.data.remote.…``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse

from pipeline.data.sources import REMOTE_SCHEMES

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
