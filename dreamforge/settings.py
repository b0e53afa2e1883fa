"""Service settings, from the environment (one place, so a deployment tunes them without code)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _f(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = field(default_factory=lambda: os.environ.get("MONGODB_URI"))
    db_name: str = field(default_factory=lambda: os.environ.get("DREAMFORGE_DB", "dreamforge"))
    home: Path = field(default_factory=lambda: Path(os.environ.get("DREAMFORGE_HOME", ".dreamforge")).resolve())
    # A lease a worker must renew; a worker that dies is noticed within one lease.
    lease_s: float = field(default_factory=lambda: _f("DREAMFORGE_LEASE_S", 30))
    # Infrastructure failures (lost worker, crash) per stage before the job is dead-lettered.
    infra_retries: int = field(default_factory=lambda: int(_f("DREAMFORGE_INFRA_RETRIES", 3)))
    backoff_s: float = field(default_factory=lambda: _f("DREAMFORGE_BACKOFF_S", 2))
    stage_timeout_s: float = field(default_factory=lambda: _f("DREAMFORGE_STAGE_TIMEOUT_S", 6 * 3600))
    job_timeout_s: float = field(default_factory=lambda: _f("DREAMFORGE_JOB_TIMEOUT_S", 24 * 3600))
    max_body_bytes: int = field(default_factory=lambda: int(_f("DREAMFORGE_MAX_BODY", 1 << 20)))
    max_upload_bytes: int = field(default_factory=lambda: int(_f("DREAMFORGE_MAX_UPLOAD", 512 << 20)))
    # Intermediate checkpoints and unpacked datasets of finished jobs older than this are deleted.
    temp_retention_s: float = field(default_factory=lambda: _f("DREAMFORGE_TEMP_RETENTION_S", 7 * 86400))
    poll_s: float = field(default_factory=lambda: _f("DREAMFORGE_POLL_S", 0.2))
    # CPU-heavy API work runs in bounded lanes (jobs/lanes.py): threads each, plus requests allowed to
    # wait for one; beyond that the API answers 503 with Retry-After instead of stalling.
    check_workers: int = field(default_factory=lambda: int(_f("DREAMFORGE_CHECK_WORKERS", 2)))
    check_waiting: int = field(default_factory=lambda: int(_f("DREAMFORGE_CHECK_WAITING", 8)))
    probe_workers: int = field(default_factory=lambda: int(_f("DREAMFORGE_PROBE_WORKERS", 2)))
    probe_waiting: int = field(default_factory=lambda: int(_f("DREAMFORGE_PROBE_WAITING", 2)))
    # Where stages run: "local" (child processes here) or "modal" (the deployed app's GPU functions).
    executor: str = field(default_factory=lambda: os.environ.get("DREAMFORGE_EXECUTOR", "local"))
    modal_app: str = field(default_factory=lambda: os.environ.get("DREAMFORGE_MODAL_APP", "dreamforge"))
    # GitHub integration (dreamforge/github/)
    github_api_url: str = field(default_factory=lambda: os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    github_token: str | None = field(default_factory=lambda: os.environ.get("GITHUB_TOKEN"))
    dashboard_url: str | None = field(default_factory=lambda: os.environ.get("DREAMFORGE_DASHBOARD_URL"))
    oidc_issuer: str = field(default_factory=lambda: os.environ.get("DREAMFORGE_OIDC_ISSUER",
                                                                    "https://token.actions.githubusercontent.com"))
    oidc_audience: str = field(default_factory=lambda: os.environ.get("DREAMFORGE_OIDC_AUDIENCE", "dreamforge"))
    # GitHub asks integrations to space writes (secondary rate limits); tests set 0.
    github_write_interval_s: float = field(default_factory=lambda: _f("DREAMFORGE_GITHUB_WRITE_INTERVAL_S", 1.0))
    # Signed Action requests older (or newer) than this are refused as replays.
    webhook_tolerance_s: float = field(default_factory=lambda: _f("DREAMFORGE_WEBHOOK_TOLERANCE_S", 300))

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    def require_uri(self) -> str:
        if not self.mongodb_uri:
            raise RuntimeError("MONGODB_URI is not set; start the local stack with `dreamforge up` or set MONGODB_URI")
        return self.mongodb_uri
