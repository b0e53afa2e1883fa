"""Service settings, from the environment (one place, so a deployment tunes them without code).

Read and checked by pydantic-settings: a bad value stops the process with a message naming the
variable (``DREAMFORGE_LEASE_S='soon': Input should be a valid number``), never a default used
in its place. Tests and the local stack pass fields by name (``Settings(home=...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """The environment holds a value the service cannot use; the message names each variable."""


# The dashboard's named pages (dashboard/streamlit_app.py's url_path of each): every link we print
# (README, API answers, CLI, commit status, PR comment, the Action) opens one of them by name.
DASHBOARD_PAGES = ("train", "jobs", "job", "previews")


def dashboard_page(base: str, page: str, job_id: str | None = None) -> str:
    """``https://dash/job?job=ID``: the URL of one dashboard page."""
    assert page in DASHBOARD_PAGES, page
    return f"{base.rstrip('/')}/{page}" + (f"?job={job_id}" if job_id else "")


def env(name: str, default: Any, **checks: Any) -> Any:
    return Field(default, validation_alias=name, **checks)


class Settings(BaseSettings):
    # Each field reads the variable its ``env`` names; the prefix keeps pydantic-settings from also
    # reading a field's bare name (``home`` would otherwise take $HOME).
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, env_prefix="DREAMFORGE_FIELD_", extra="ignore",
                                      validate_default=True)  # fmt: skip

    mongodb_uri: str | None = env("MONGODB_URI", None)
    db_name: str = env("DREAMFORGE_DB", "dreamforge", min_length=1)
    home: Path = env("DREAMFORGE_HOME", Path(".dreamforge"))
    # A lease a worker must renew; a worker that dies is noticed within one lease.
    lease_s: float = env("DREAMFORGE_LEASE_S", 30.0, gt=0)
    # Infrastructure failures (lost worker, crash) per stage before the job is dead-lettered.
    infra_retries: int = env("DREAMFORGE_INFRA_RETRIES", 3, ge=0)
    backoff_s: float = env("DREAMFORGE_BACKOFF_S", 2.0, ge=0)
    # A stage's limit with the local executor; on Modal each stage has its own (executors/modal_limits.py).
    stage_timeout_s: float = env("DREAMFORGE_STAGE_TIMEOUT_S", 6 * 3600.0, gt=0)
    job_timeout_s: float = env("DREAMFORGE_JOB_TIMEOUT_S", 24 * 3600.0, gt=0)
    max_body_bytes: int = env("DREAMFORGE_MAX_BODY", 1 << 20, gt=0)
    max_upload_bytes: int = env("DREAMFORGE_MAX_UPLOAD", 512 << 20, gt=0)
    # "Try it" (POST /api/jobs/{id}/try/…) carries a whole image; its model server (serve/pool.py)
    # stops after this long without a request.
    max_try_bytes: int = env("DREAMFORGE_MAX_TRY_BODY", 20 << 20, gt=0)
    try_idle_s: float = env("DREAMFORGE_TRY_IDLE_S", 600.0, gt=0)
    # Where jobs' models are served (Modal's `serve` endpoint, dreamforge/serve/jobs.py); unset: the
    # API starts `dreamforge serve` itself (serve/pool.py), which needs the artifacts on its disk.
    serve_url: str | None = env("DREAMFORGE_SERVE_URL", None)
    # Intermediate checkpoints and unpacked datasets of finished jobs older than this are deleted.
    temp_retention_s: float = env("DREAMFORGE_TEMP_RETENTION_S", 7 * 86400.0, ge=0)
    poll_s: float = env("DREAMFORGE_POLL_S", 0.2, gt=0)
    # CPU-heavy API work runs in bounded lanes (jobs/lanes.py): threads each, plus requests allowed
    # to wait for one; beyond that the API answers 503 with Retry-After instead of stalling.
    check_workers: int = env("DREAMFORGE_CHECK_WORKERS", 2, ge=1)
    check_waiting: int = env("DREAMFORGE_CHECK_WAITING", 8, ge=0)
    probe_workers: int = env("DREAMFORGE_PROBE_WORKERS", 2, ge=1)
    probe_waiting: int = env("DREAMFORGE_PROBE_WAITING", 2, ge=0)
    # Where stages run: "local" (child processes here) or "modal" (the deployed app's GPU functions).
    executor: Literal["local", "modal"] = env("DREAMFORGE_EXECUTOR", "local")
    modal_app: str = env("DREAMFORGE_MODAL_APP", "dreamforge")
    # GitHub integration (dreamforge/github/)
    github_api_url: str = env("GITHUB_API_URL", "https://api.github.com")
    # A GitHub App (multi-tenant): its id and private key (PEM text). Tokens are minted per
    # installation, and a repository links only where the App is installed (github/app.py).
    github_app_id: int | None = env("GITHUB_APP_ID", None, ge=1)
    github_app_private_key: str | None = env("GITHUB_APP_PRIVATE_KEY", None)
    # The App's webhook secret: GitHub signs every installation's deliveries with it.
    github_app_webhook_secret: str | None = env("GITHUB_APP_WEBHOOK_SECRET", None)
    # A personal access token instead of the App: a single-tenant fallback, one user for every project.
    github_token: str | None = env("GITHUB_TOKEN", None)
    dashboard_url: str | None = env("DREAMFORGE_DASHBOARD_URL", None)
    oidc_issuer: str = env("DREAMFORGE_OIDC_ISSUER", "https://token.actions.githubusercontent.com")
    oidc_audience: str = env("DREAMFORGE_OIDC_AUDIENCE", "dreamforge")
    # GitHub asks integrations to space writes (secondary rate limits); tests set 0.
    github_write_interval_s: float = env("DREAMFORGE_GITHUB_WRITE_INTERVAL_S", 1.0, ge=0)
    # GitHub allows 80 content-creating requests a minute per token or installation.
    github_writes_per_min: int = env("DREAMFORGE_GITHUB_WRITES_PER_MIN", 80, ge=1)
    # GitHub's webhooks carry up to 25 MB; only that route accepts bodies this large.
    github_webhook_max_body: int = env("DREAMFORGE_GITHUB_WEBHOOK_MAX_BODY", 25 << 20, gt=0)
    # Optional: only OIDC tokens whose job_workflow_ref starts with one of these (comma-separated)
    # may submit, e.g. "acme/shelves/.github/workflows/dreamforge.yml@".
    oidc_workflows: str = env("DREAMFORGE_OIDC_WORKFLOWS", "")
    # Signed Action requests older (or newer) than this are refused as replays.
    webhook_tolerance_s: float = env("DREAMFORGE_WEBHOOK_TOLERANCE_S", 300.0, gt=0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise SettingsError("bad settings: " + "; ".join(_problem(x) for x in e.errors())) from None

    @field_validator("github_app_private_key")
    @classmethod
    def _pem(cls, key: str | None, info: ValidationInfo) -> str | None:
        """A PEM private key; a platform that cannot hold newlines may pass them as ``\\n``."""
        if bool(info.data.get("github_app_id")) != bool(key):
            raise ValueError("GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY go together: set both for the GitHub App, or neither")
        if not key:
            return None
        if "\n" not in key and "\\n" in key:
            key = key.replace("\\n", "\n")
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            load_pem_private_key(key.encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("not a PEM private key: paste the whole .pem file GitHub gave for the App") from None
        return key

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:  # children run elsewhere (cwd of a stage): one meaning
        return home.resolve()

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def github_enabled(self) -> bool:
        """Whether anything may be written to GitHub (an App, or the PAT fallback)."""
        return bool(self.github_app_id and self.github_app_private_key) or bool(self.github_token)

    def require_uri(self) -> str:
        if not self.mongodb_uri:
            raise RuntimeError("MONGODB_URI is not set; start the local stack with `dreamforge up` or set MONGODB_URI")
        return self.mongodb_uri


def _problem(error: dict[str, Any]) -> str:
    """``NAME='value': why``; ``loc`` is the variable's name for a value read from the environment."""
    name = ".".join(str(x) for x in error["loc"])
    if any(w in name.upper() for w in ("KEY", "TOKEN", "SECRET", "URI")):  # never echo a credential
        return f"{name}: {error['msg']}"
    return f"{name}={error.get('input')!r}: {error['msg']}"
