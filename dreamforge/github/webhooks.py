"""GitHub in: the Action's signed POST and GitHub's own repository webhook become preview jobs.

Every push (or pull request) carrying ``dreamforge.config.json`` becomes one preview job per
(repository, branch, sha, config hash); the newest job of a branch supersedes (cancels) the
older unfinished ones. The routes (``dreamforge.api.routes.github``) only validate, record and enqueue, so they answer well within
GitHub's 10 s; the commit status goes back through the outbox of ``status``. GitHub's own
webhook names a commit, whose config is read from GitHub: the delivery is stored first, and
when GitHub does not answer it waits in the outbox of ``push_outbox`` (202) instead of being lost.

Credentials, per project (``PUT /api/github``):
- the Action: the project's API key (``Authorization: Bearer``) plus an HMAC-SHA256 of the raw
  body with the project's webhook secret in ``X-DreamForge-Signature-256`` (GitHub's
  ``X-Hub-Signature-256`` scheme); the body carries its timestamp and delivery id, so both are
  signed. Or, with no secret at all, a GitHub Actions OIDC token whose numeric repository id
  the project pinned (``oidc.py``).
- GitHub's webhook: ``X-Hub-Signature-256`` with the same secret. The secret must be usable to
  compute the HMAC, so it is stored as given (like GitHub stores it) and never returned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from dreamforge.github.contents import CONFIG_FILE
from dreamforge.github.status import dashboard_link, due
from dreamforge.jobs import queue
from dreamforge.jobs.submit import NotFound, submit
from dreamforge.schemas import JobSource, TrainRequest
from dreamforge.settings import Settings
from dreamforge.store import COMMENTS, DELIVERIES, GITHUB_PUSHES, JOBS, PREVIEWS
from pipeline.config import ConfigError

log = logging.getLogger("dreamforge.webhooks")

SIGNATURE_HEADER = "X-DreamForge-Signature-256"
WAITING = "waiting_for_github"  # a push whose config GitHub has not given us yet (push_outbox.py)
REPO_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"


def signature(secret: str, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(signature(secret, body), header)  # constant time


def fresh(signed_at: float, tolerance_s: float, now: float) -> bool:
    """Whether a request signed at ``signed_at`` is inside the replay window. Written so that
    anything non-finite fails: ``abs(now - nan) > tolerance`` would be False and pass."""
    age = now - signed_at
    return math.isfinite(age) and -tolerance_s <= age <= tolerance_s


class ActionPush(BaseModel):
    """What the Action posts (``github_action``): one push or pull request and its config."""

    model_config = ConfigDict(extra="forbid")
    repository: str = Field(..., pattern=REPO_PATTERN, description="owner/name of the repository the workflow ran in.")
    repository_id: int | None = None
    event: str = Field(..., max_length=50, description="GITHUB_EVENT_NAME.")
    ref: str = Field(..., max_length=300)
    branch: str = Field(..., min_length=1, max_length=255)
    sha: str = Field(..., pattern=r"^[0-9a-f]{40}$")
    pr: int | None = Field(None, ge=1)
    head_repository: str | None = Field(None, description="owner/name the pull request's head comes from (a fork when different).")
    run_id: str | None = Field(None, max_length=50)
    run_attempt: int | None = None
    delivery: str = Field(..., min_length=8, max_length=100, description="Unique per Action run; kept across its retries.")
    # strict and finite: NaN compares False with everything, so it would slip through any window.
    timestamp: float = Field(..., strict=True, allow_inf_nan=False,
                             description="Unix time the Action signed the request (replay window).")
    config: dict[str, Any]
    config_path: str = Field(CONFIG_FILE, max_length=300)
    default_branch: str | None = Field(None, max_length=255, description="The repository's default branch (the gate's base).")


class RepoLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=REPO_PATTERN, description="owner/name")
    id: int | None = Field(None, ge=1, description="GitHub's numeric repository id; needed for OIDC tokens.")


class GithubLinkIn(BaseModel):
    """``PUT /api/github``: the repositories this project owns and its webhook secret."""

    model_config = ConfigDict(extra="forbid")
    repos: list[RepoLink] = Field(default_factory=list, max_length=100)
    webhook_secret: str | None = Field(None, min_length=16, max_length=200,
                                       description="Shared with the Action / GitHub webhook; stored, never returned.")  # fmt: skip


class GithubLinkView(BaseModel):
    repos: list[RepoLink]
    webhook_secret_set: bool


class Preview(BaseModel):
    repo: str
    branch: str
    jobId: str | None = Field(None, description="None while a push waits for GitHub (waiting_for_github) or failed before its job.")
    status: str
    detail: str | None = Field(None, description="Why a push has no job yet (GitHub unreachable, a bad config).")
    sha: str | None = None
    pr: int | None = None
    stage: str | None = None
    progress: float = 0.0
    metric: dict[str, Any] | None = None
    dashboard_url: str | None = None
    updated_at: Any = None


def waiting_response(p: dict[str, Any], *, duplicate: bool = False) -> JSONResponse:
    return JSONResponse({"jobId": None, "status": WAITING, "created": False, "duplicate": duplicate,
                         "detail": p.get("error") or "reading the config from GitHub", "superseded": []},
                        status_code=202)  # fmt: skip


def _422(e: ConfigError, path: str) -> HTTPException:
    return HTTPException(422, [{"loc": [path, *(x["loc"].split(".") if x["loc"] else [])], "msg": x["msg"]} for x in e.errors])


def push_target(kind: str | None, event: dict[str, Any]) -> tuple[str, str, int | None, bool] | str:
    """``(branch, sha, pr, from_fork)`` of a push or pull_request event, or why it is skipped."""
    if kind == "push":
        ref = event.get("ref") or ""
        if not ref.startswith("refs/heads/"):
            return f"{ref} is not a branch"
        if event.get("deleted"):
            return "branch deleted"
        return ref.removeprefix("refs/heads/"), event["after"], None, False
    if kind == "pull_request":
        if event.get("action") not in ("opened", "synchronize", "reopened"):
            return f"pull_request {event.get('action')}"
        pr = event["pull_request"]
        head_repo = (pr["head"].get("repo") or {}).get("full_name")  # None when the fork was deleted
        fork = head_repo != pr["base"]["repo"]["full_name"]
        return fork_branch(pr["head"]["ref"], head_repo, fork), pr["head"]["sha"], int(pr["number"]), fork
    return f"event {kind} is not used; subscribe to push and pull_request"


def fork_branch(branch: str, head_repo: str | None, fork: bool) -> str:
    """A fork's branch as ``owner:branch`` (GitHub's head label), so a fork's ``main`` never
    supersedes the repository's own ``main`` preview."""
    if not fork or ":" in branch:
        return branch
    return f"{(head_repo or 'deleted-fork').split('/')[0]}:{branch}"


async def replayed(db, settings: Settings, pid: str, delivery: str) -> JSONResponse:
    rec = await db[DELIVERIES].find_one({"_id": queue.scoped(pid, delivery)}) or {}
    job = await db[JOBS].find_one({"_id": rec.get("job_id")}, {"status": 1}) if rec.get("job_id") else None
    if job is None and rec.get("skipped"):
        return JSONResponse({"skipped": rec["skipped"]}, status_code=202)
    pending = await db[GITHUB_PUSHES].find_one({"_id": queue.scoped(pid, delivery)}) if job is None else None
    if pending is not None:
        return waiting_response(pending, duplicate=True)
    if job is None:
        raise HTTPException(409, f"delivery {delivery} is being processed or failed; send a new delivery")
    return JSONResponse({"jobId": job["_id"], "status": job["status"], "created": False, "duplicate": True,
                         "dashboard_url": dashboard_link(settings, job["_id"]), "superseded": []})  # fmt: skip


async def create_preview(db, settings: Settings, pid: str, *, config: dict[str, Any], config_path: str, delivery: str,
                         source: JobSource, fork: bool) -> JSONResponse:  # fmt: skip
    """Record the delivery, create (or find) the job, supersede the branch's older jobs."""
    try:
        await db[DELIVERIES].insert_one({"_id": queue.scoped(pid, delivery), "created_at": queue.now()})
    except DuplicateKeyError:
        rec = await db[DELIVERIES].find_one({"_id": queue.scoped(pid, delivery)}) or {}
        if rec.get("job_id") or rec.get("skipped"):
            return await replayed(db, settings, pid, delivery)
        # Recorded, but no job: the first try died between the two (or runs now). The body is
        # the same signed one, and submit dedupes on the job's key, so finishing it here is safe.
    return await create_job(db, settings, pid, config=config, config_path=config_path, delivery=delivery, source=source,
                            fork=fork)  # fmt: skip


async def create_job(db, settings: Settings, pid: str, *, config: dict[str, Any], config_path: str, delivery: str,
                     source: JobSource, fork: bool, received_at: Any = None) -> JSONResponse:  # fmt: skip
    """Create (or find) the job of a recorded delivery and supersede the branch's older jobs;
    ``received_at``: when the delivery arrived (later than now for one read from the outbox)."""
    try:
        # The commit's config file as written: submit validates it, once; the push and the pull
        # request event of one commit carry the same file, so they dedupe to one job.
        chash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        key = f"github|{source.repo}|{source.branch}|{source.sha}|{chash}"
        doc, created = await submit(db, pid, TrainRequest(config=config, source=source), dedupe_key=key,
                                    status="awaiting_approval" if fork else "queued")  # fmt: skip
    except ConfigError as e:
        await db[DELIVERIES].delete_one({"_id": queue.scoped(pid, delivery)})
        raise _422(e, config_path) from None
    except NotFound as e:
        await db[DELIVERIES].delete_one({"_id": queue.scoped(pid, delivery)})
        raise HTTPException(404, f"{config_path}: {e}") from None
    await db[DELIVERIES].update_one({"_id": queue.scoped(pid, delivery)}, {"$set": {"job_id": doc["_id"]}})
    superseded: list[str] = []
    if not created and source.pr and not (doc.get("source") or {}).get("pr"):
        # The push event made the job; the pull request's event for the same commit names the
        # PR: attach it so the PR gets its comment (the outbox looks at the job again).
        await db[JOBS].update_one({"_id": doc["_id"]}, {"$set": {"source.pr": source.pr, "github_outbox": due(queue.now())}})
        await db[COMMENTS].update_one({"_id": f"{pid}|{source.repo}#{source.pr}"}, {"$set": {"job_id": doc["_id"]}}, upsert=True)
    if created:
        await db[JOBS].update_one({"_id": doc["_id"]}, {"$set": {"github_outbox": due(queue.now())}})
        if source.pr:
            await db[COMMENTS].update_one({"_id": f"{pid}|{source.repo}#{source.pr}"}, {"$set": {"job_id": doc["_id"]}}, upsert=True)
        superseded = await supersede(db, pid, source, doc["_id"], received_at)
    return JSONResponse({"jobId": doc["_id"], "status": doc["status"], "created": created, "duplicate": False,
                         "dashboard_url": dashboard_link(settings, doc["_id"]), "superseded": superseded},
                        status_code=201 if created else 200)  # fmt: skip


async def supersede(db, pid: str, source: JobSource, job_id: str, received_at: Any = None) -> list[str]:
    """Make ``job_id`` the branch's preview and cancel the job it replaces if unfinished. The
    swap is one atomic update of the branch's preview document, so of racing pushes each
    cancels exactly the job it displaced."""
    t = queue.now()
    prev = await db[PREVIEWS].find_one_and_update(
        {"_id": f"{pid}|{source.repo}|{source.branch}"},
        {"$set": {"job_id": job_id, "repo": source.repo, "branch": source.branch, "updated_at": t,
                  "received_at": received_at or t}},
        upsert=True, return_document=ReturnDocument.BEFORE,
    )  # fmt: skip
    old = (prev or {}).get("job_id")
    if not old or old == job_id:
        return []
    cancelled = await queue.cancel(db, {"_id": old}, f"superseded by {source.sha[:12]}", superseded=True)
    return [old] if cancelled else []

