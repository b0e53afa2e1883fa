"""GitHub in: the Action's signed POST, GitHub's own repository webhook, approvals and previews.

Every push (or pull request) carrying ``dreamforge.config.json`` becomes one preview job per
(repository, branch, sha, config hash); the newest job of a branch supersedes (cancels) the
older unfinished ones. The routes only validate, record and enqueue, so they answer well within
GitHub's 10 s; the commit status goes back through the outbox of ``github_status``. GitHub's own
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

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from dreamforge import oidc, push_outbox, queue
from dreamforge.github_status import dashboard_link, due, key_metric
from dreamforge.schemas import JobSource, TrainRequest
from dreamforge.settings import Settings
from dreamforge.store import COMMENTS, DELIVERIES, GITHUB_PUSHES, JOBS, PREVIEWS, PROJECTS
from dreamforge.submit import NotFound, submit
from pipeline.config import ConfigError, build_config, config_hash

log = logging.getLogger("dreamforge.webhooks")

SIGNATURE_HEADER = "X-DreamForge-Signature-256"
REPO_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
CONFIG_FILE = "dreamforge.config.json"


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


def _422(e: ConfigError, path: str) -> HTTPException:
    return HTTPException(422, [{"loc": [path, *(x["loc"].split(".") if x["loc"] else [])], "msg": x["msg"]} for x in e.errors])


async def _project(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    from dreamforge.api import current_project  # api.py includes this router: import at call time

    return await current_project(request, authorization)


Project = Annotated[str, Depends(_project)]


def github_router(settings: Settings) -> APIRouter:
    from dreamforge.api import JOB_FIELDS, job_view

    router = APIRouter(tags=["github"])

    def db(request: Request):
        return request.app.state.db

    # -- the project's repositories --------------------------------------------------------
    @router.put("/api/github", response_model=GithubLinkView)
    async def link(request: Request, body: GithubLinkIn, pid: Project):
        """Claim repositories for this project (a repository belongs to one project) and set the secret."""
        names = [r.name for r in body.repos]
        ids = [r.id for r in body.repos if r.id]
        taken = await db(request)[PROJECTS].find_one({"_id": {"$ne": pid}, "$or": [{"github_repos": {"$in": names}},
                                                     {"github_repo_ids": {"$in": ids}}]}, {"_id": 1})  # fmt: skip
        if taken:
            raise HTTPException(409, "one of these repositories is linked to another project; unlink it there first")
        sets: dict[str, Any] = {"github_repos": names, "github_repo_ids": ids, "github_links": [r.model_dump() for r in body.repos]}
        if body.webhook_secret:
            sets["github_webhook_secret"] = body.webhook_secret
        doc = await db(request)[PROJECTS].find_one_and_update({"_id": pid}, {"$set": sets}, return_document=ReturnDocument.AFTER)
        return GithubLinkView(repos=doc["github_links"], webhook_secret_set=bool(doc.get("github_webhook_secret")))

    @router.get("/api/github", response_model=GithubLinkView)
    async def get_link(request: Request, pid: Project):
        doc = await db(request)[PROJECTS].find_one({"_id": pid}) or {}
        links = doc.get("github_links") or [{"name": n} for n in doc.get("github_repos") or []]
        return GithubLinkView(repos=links, webhook_secret_set=bool(doc.get("github_webhook_secret")))

    # -- the Action --------------------------------------------------------------------------
    @router.post("/api/webhooks/github-action", status_code=201)
    async def from_action(request: Request, authorization: Annotated[str | None, Header()] = None,
                          x_dreamforge_signature_256: Annotated[str | None, Header()] = None):  # fmt: skip
        """A push or pull request from the DreamForge Action: signed with the project's secret
        (plus its API key), or carrying a GitHub OIDC token. Answers the job id."""
        raw = await request.body()
        token = (authorization or "").removeprefix("Bearer ").strip()
        claims = None
        if oidc.looks_like_jwt(token):
            try:
                claims = await asyncio.to_thread(oidc.verify, token, issuer=settings.oidc_issuer, audience=settings.oidc_audience)
            except oidc.OidcError as e:
                raise HTTPException(401, str(e)) from None
            project = await db(request)[PROJECTS].find_one({"github_repo_ids": int(claims["repository_id"])})
            if project is None:
                raise HTTPException(403, f"repository {claims['repository']} (id {claims['repository_id']}) is not linked to "
                                         "a project: add it with its id via PUT /api/github")  # fmt: skip
        else:
            pid = await _project(request, authorization)
            project = await db(request)[PROJECTS].find_one({"_id": pid}) or {}
            secret = project.get("github_webhook_secret")
            if not secret:
                raise HTTPException(401, "this project has no webhook secret: set one with PUT /api/github, or use OIDC")
            if not x_dreamforge_signature_256:
                raise HTTPException(401, f"missing {SIGNATURE_HEADER}: sign the body with the project's webhook secret")
            if not signature_ok(secret, raw, x_dreamforge_signature_256):
                raise HTTPException(401, f"{SIGNATURE_HEADER} does not match the body: wrong secret or a modified body")
        try:
            push = ActionPush.model_validate_json(raw)
        except ValidationError as e:
            raise HTTPException(422, [{"loc": list(x["loc"]), "msg": x["msg"]} for x in e.errors()]) from None
        if not fresh(push.timestamp, settings.webhook_tolerance_s, time.time()):
            raise HTTPException(401, f"stale request: signed {time.time() - push.timestamp:.0f} s ago (limit "
                                     f"{settings.webhook_tolerance_s:.0f} s); check the runner's clock")  # fmt: skip
        if claims is not None:
            if claims["repository"] != push.repository or claims.get("event_name", push.event) != push.event:
                raise HTTPException(403, f"the OIDC token is for {claims['repository']} ({claims.get('event_name')}), "
                                         f"the body for {push.repository} ({push.event})")  # fmt: skip
            try:
                await oidc.spend_jti(db(request), claims)
            except oidc.OidcError as e:
                raise HTTPException(401, str(e)) from None
        elif push.repository not in (project.get("github_repos") or []):
            raise HTTPException(403, f"repository {push.repository} is not linked to this project: add it with PUT /api/github")
        fork = bool(push.pr) and push.head_repository != push.repository
        return await create_preview(
            db(request), settings, project["_id"], config=push.config, config_path=push.config_path, delivery=push.delivery,
            source=JobSource(kind="github", repo=push.repository, branch=fork_branch(push.branch, push.head_repository, fork),
                             sha=push.sha, pr=push.pr, run_id=push.run_id),
            fork=fork,
        )  # fmt: skip

    # -- GitHub's own webhook ---------------------------------------------------------------
    @router.post("/api/webhooks/github")
    async def from_github(request: Request, x_github_event: Annotated[str | None, Header()] = None,
                          x_github_delivery: Annotated[str | None, Header()] = None,
                          x_hub_signature_256: Annotated[str | None, Header()] = None):  # fmt: skip
        """GitHub's repository webhook (content type application/json; events push and pull_request)."""
        raw = await request.body()
        try:
            event = json.loads(raw)
            repo = event["repository"]["full_name"]
        except (ValueError, KeyError, TypeError, RecursionError):  # unauthenticated yet: any bytes may arrive
            raise HTTPException(400, "not a GitHub webhook payload: set the content type to application/json") from None
        project = await db(request)[PROJECTS].find_one({"github_repos": repo})
        secret = (project or {}).get("github_webhook_secret")
        # One answer for "unknown repository" and "bad signature": nothing to probe.
        if not secret or not signature_ok(secret, raw, x_hub_signature_256):
            raise HTTPException(401, "X-Hub-Signature-256 does not verify: the webhook's secret must be the project's")
        if x_github_event == "ping":
            return {"ok": True}
        target = push_target(x_github_event, event)
        if isinstance(target, str):
            return JSONResponse({"skipped": target}, status_code=202)
        if not x_github_delivery:
            raise HTTPException(400, "missing X-GitHub-Delivery")
        # Stored before GitHub is asked for the config: GitHub never redelivers on its own, so
        # a delivery it cannot be asked about now is read later from the outbox (push_outbox.py).
        p = push_outbox.pending_doc(project["_id"], x_github_delivery, repo, target)
        try:
            await db(request)[DELIVERIES].insert_one({"_id": p["_id"], "created_at": queue.now()})
        except DuplicateKeyError:
            return await _replayed(db(request), settings, project["_id"], x_github_delivery)
        await db(request)[GITHUB_PUSHES].insert_one(p)
        return await push_outbox.resolve(db(request), settings, p, inline=True)

    # -- approvals and previews ------------------------------------------------------------
    @router.post("/api/jobs/{job_id}/approve", tags=["jobs"])
    async def approve(request: Request, job_id: str, pid: Project):
        """Let a fork's pull request train: the held job joins the queue."""
        approved = await queue.approve(db(request), job_id, pid)
        doc = await db(request)[JOBS].find_one({"_id": job_id, "project_id": pid}, JOB_FIELDS)
        if doc is None:
            raise HTTPException(404, f"job {job_id} not found")
        if not approved:
            raise HTTPException(409, f"job {job_id} is {doc['status']}; only jobs awaiting approval can be approved")
        return job_view(doc)

    @router.get("/api/previews", response_model=list[Preview])
    async def previews(request: Request, pid: Project, repo: str | None = None):
        """The latest job of each (repository, branch), newest first, with its status and key metric."""
        lo = f"{pid}|{repo}|" if repo else f"{pid}|"
        heads = await db(request)[PREVIEWS].find({"_id": {"$gt": lo, "$lt": lo + "~"}}).to_list(1000)
        jobs = {d["_id"]: d for d in await db(request)[JOBS].find(
            {"_id": {"$in": [h["job_id"] for h in heads if h.get("job_id")]}}, JOB_FIELDS).to_list(1000)}  # fmt: skip
        out = []
        for h in heads:
            pending = h.get("pending")
            if pending and (not h.get("job_id") or pending["since"] >= (h.get("received_at") or h["updated_at"])):
                out.append(Preview(repo=h["repo"], branch=h["branch"], status=pending["status"], sha=pending["sha"],
                                   pr=pending.get("pr"), detail=pending.get("detail"), updated_at=pending["since"]))  # fmt: skip
                continue
            job = jobs.get(h.get("job_id"))
            if job is None:
                continue
            src, metric = job.get("source") or {}, key_metric(job)
            out.append(Preview(repo=h["repo"], branch=h["branch"], jobId=job["_id"], status=job["status"], sha=src.get("sha"),
                               pr=src.get("pr"), stage=job.get("stage"), progress=job.get("progress", 0.0),
                               metric={"name": metric[0], "value": metric[1]} if metric else None,
                               dashboard_url=dashboard_link(settings, job["_id"]), updated_at=job["updated_at"]))  # fmt: skip
        out.sort(key=lambda p: p.updated_at, reverse=True)
        return out

    return router


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


def fetch_config(settings: Settings, repo: str, sha: str) -> str | None:
    """``dreamforge.config.json`` at ``sha`` through GitHub's contents API; None when absent."""
    from github import UnknownObjectException

    from dreamforge.github_status import github_client

    try:
        # 5 s: the whole delivery must be answered within GitHub's 10 s.
        return github_client(settings, timeout=5).get_repo(repo).get_contents(CONFIG_FILE, ref=sha).decoded_content.decode()
    except UnknownObjectException:
        return None


async def _replayed(db, settings: Settings, pid: str, delivery: str) -> JSONResponse:
    rec = await db[DELIVERIES].find_one({"_id": queue.scoped(pid, delivery)}) or {}
    job = await db[JOBS].find_one({"_id": rec.get("job_id")}, {"status": 1}) if rec.get("job_id") else None
    if job is None and rec.get("skipped"):
        return JSONResponse({"skipped": rec["skipped"]}, status_code=202)
    pending = await db[GITHUB_PUSHES].find_one({"_id": queue.scoped(pid, delivery)}) if job is None else None
    if pending is not None:
        return push_outbox.waiting_response(pending, duplicate=True)
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
        return await _replayed(db, settings, pid, delivery)
    return await create_job(db, settings, pid, config=config, config_path=config_path, delivery=delivery, source=source,
                            fork=fork)  # fmt: skip


async def create_job(db, settings: Settings, pid: str, *, config: dict[str, Any], config_path: str, delivery: str,
                     source: JobSource, fork: bool, received_at: Any = None) -> JSONResponse:  # fmt: skip
    """Create (or find) the job of a recorded delivery and supersede the branch's older jobs;
    ``received_at``: when the delivery arrived (later than now for one read from the outbox)."""
    try:
        chash = config_hash(build_config(config, source=config_path))
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

