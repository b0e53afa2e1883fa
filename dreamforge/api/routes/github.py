"""GitHub routes: link repositories, the Action's push, GitHub's webhook, and the previews.

The delivery logic (signatures, supersede, the outbox) is in ``dreamforge.github``; these
routes authenticate, parse and hand over.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from dreamforge.api import errors
from dreamforge.api.deps import AppSettings, Db, Project, current_project
from dreamforge.api.views import JOB_FIELDS
from dreamforge.github import client, oidc, ownership, push_outbox
from dreamforge.github.status import dashboard_link
from dreamforge.github.webhooks import (
    SIGNATURE_HEADER,
    ActionPush,
    GithubLinkIn,
    GithubLinkView,
    Preview,
    create_preview,
    fork_branch,
    fresh,
    push_target,
    replayed,
    signature_ok,
)
from dreamforge.jobs import queue
from dreamforge.schemas import JobSource
from dreamforge.store import DELIVERIES, GITHUB_PUSHES, JOBS, PREVIEWS, PROJECTS
from pipeline.stage_table import key_metric

# The statuses the GitHub routes answer between them.
router = APIRouter(tags=["github"], responses={**errors.responses(403, 404, 409, 502),
                   200: {"description": "Done, or a replayed delivery's job."}, 202: {"description": "Skipped: why."}})  # fmt: skip


# -- the project's repositories --------------------------------------------------------
@router.put("/api/github", response_model=GithubLinkView)
async def link(db: Db, settings: AppSettings, body: GithubLinkIn, pid: Project):
    """Claim repositories for this project (a repository belongs to one project) and set the secret.
    With the GitHub App, each must have the App installed and name this project in its
    ``.github/dreamforge-project`` (``github.ownership``); GitHub's id and name are stored."""
    repos = body.repos
    if client.app_mode(settings):
        repos = [await asyncio.to_thread(ownership.verify, settings, pid, r) for r in repos]
    names = [r.name for r in repos]
    ids = [r.id for r in repos if r.id]
    taken = await db[PROJECTS].find_one({"_id": {"$ne": pid}, "$or": [{"github_repos": {"$in": names}},
                                        {"github_repo_ids": {"$in": ids}}]}, {"_id": 1})  # fmt: skip
    if taken:
        raise HTTPException(409, "one of these repositories is linked to another project; unlink it there first")
    sets: dict[str, Any] = {"github_repos": names, "github_repo_ids": ids, "github_links": [r.model_dump() for r in repos]}
    if body.webhook_secret:
        sets["github_webhook_secret"] = body.webhook_secret
    doc = await db[PROJECTS].find_one_and_update({"_id": pid}, {"$set": sets}, return_document=ReturnDocument.AFTER)
    return GithubLinkView(repos=doc["github_links"], webhook_secret_set=bool(doc.get("github_webhook_secret")))


@router.get("/api/github", response_model=GithubLinkView)
async def get_link(db: Db, pid: Project):
    doc = await db[PROJECTS].find_one({"_id": pid}) or {}
    links = doc.get("github_links") or [{"name": n} for n in doc.get("github_repos") or []]
    return GithubLinkView(repos=links, webhook_secret_set=bool(doc.get("github_webhook_secret")))


# -- the Action --------------------------------------------------------------------------
@router.post("/api/webhooks/github-action", status_code=201)
async def from_action(request: Request, db: Db, settings: AppSettings, authorization: Annotated[str | None, Header()] = None,
                      x_dreamforge_signature_256: Annotated[str | None, Header()] = None):  # fmt: skip
    """A push or pull request from the DreamForge Action: signed with the project's secret
    (plus its API key), or carrying a GitHub OIDC token. Answers the job id."""
    raw = await request.body()
    token = (authorization or "").removeprefix("Bearer ").strip()
    claims = None
    if oidc.looks_like_jwt(token):
        try:
            claims = await asyncio.to_thread(oidc.verify, token, issuer=settings.oidc_issuer, audience=settings.oidc_audience)
        except oidc.KeysUnavailable as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "10"}) from None
        except oidc.OidcError as e:
            raise HTTPException(401, str(e)) from None
        project = await db[PROJECTS].find_one({"github_repo_ids": int(claims["repository_id"])})
        if project is None:
            raise HTTPException(403, f"repository {claims['repository']} (id {claims['repository_id']}) is not linked to "
                                     "a project: add it with its id via PUT /api/github")  # fmt: skip
    else:
        pid = await current_project(request, authorization)
        project = await db[PROJECTS].find_one({"_id": pid}) or {}
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
        if why := oidc.check_body(claims, ref=push.ref, sha=push.sha, event=push.event, workflows=settings.oidc_workflows):
            raise HTTPException(403, why)
        try:
            await oidc.spend_jti(db, claims, push.delivery)
        except oidc.OidcError as e:
            raise HTTPException(401, str(e)) from None
    elif push.repository not in (project.get("github_repos") or []) and (
            push.repository_id is None or push.repository_id not in (project.get("github_repo_ids") or [])):
        raise HTTPException(403, f"repository {push.repository} is not linked to this project: add it with PUT /api/github")
    fork = bool(push.pr) and push.head_repository != push.repository
    return await create_preview(
        db, settings, project["_id"], config=push.config, config_path=push.config_path, delivery=push.delivery,
        source=JobSource(kind="github", repo=push.repository, branch=fork_branch(push.branch, push.head_repository, fork),
                         sha=push.sha, pr=push.pr, run_id=push.run_id, default_branch=push.default_branch),
        fork=fork,
    )  # fmt: skip


# -- GitHub's own webhook ---------------------------------------------------------------
@router.post("/api/webhooks/github")
async def from_github(request: Request, db: Db, settings: AppSettings, x_github_event: Annotated[str | None, Header()] = None,
                      x_github_delivery: Annotated[str | None, Header()] = None,
                      x_hub_signature_256: Annotated[str | None, Header()] = None):  # fmt: skip
    """GitHub's repository webhook (content type application/json; events push and pull_request)."""
    raw = await request.body()
    try:
        event = json.loads(raw)
        if not isinstance(event.get("repository"), dict) and settings.github_app_webhook_secret and \
                signature_ok(settings.github_app_webhook_secret, raw, x_hub_signature_256):
            # The App's webhook also carries installation events, which name no repository.
            return JSONResponse({"skipped": f"event {x_github_event} names no repository"}, status_code=202)
        repo, repo_id = event["repository"]["full_name"], event["repository"].get("id")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # unauthenticated yet: any bytes may arrive
        raise HTTPException(400, "not a GitHub webhook payload: set the content type to application/json") from None
    # By the numeric id first: a renamed repository keeps it (and its old name is free to re-use).
    project = await db[PROJECTS].find_one({"github_repo_ids": repo_id}) if type(repo_id) is int else None
    project = project or await db[PROJECTS].find_one({"github_repos": repo})
    # The project's own webhook, or the GitHub App's (one secret for every installation).
    secrets = [(project or {}).get("github_webhook_secret"), settings.github_app_webhook_secret]
    # One answer for "unknown repository" and "bad signature": nothing to probe.
    if project is None or not any(s and signature_ok(s, raw, x_hub_signature_256) for s in secrets):
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
    default_branch = (event.get("repository") or {}).get("default_branch")  # in every push and pull_request payload
    p = push_outbox.pending_doc(project["_id"], x_github_delivery, repo, target,
                                default_branch if isinstance(default_branch, str) and default_branch else None)  # fmt: skip
    try:
        await db[DELIVERIES].insert_one({"_id": p["_id"], "created_at": queue.now()})
    except DuplicateKeyError:
        return await replayed(db, settings, project["_id"], x_github_delivery)
    await db[GITHUB_PUSHES].insert_one(p)
    return await push_outbox.resolve(db, settings, p, inline=True)


# -- previews ----------------------------------------------------------------------------
@router.get("/api/previews", response_model=list[Preview])
async def previews(db: Db, settings: AppSettings, pid: Project, repo: str | None = None):
    """The latest job of each (repository, branch), newest first, with its status and key metric."""
    lo = f"{pid}|{repo}|" if repo else f"{pid}|"
    heads = await db[PREVIEWS].find({"_id": {"$gt": lo, "$lt": lo + "~"}}).to_list(1000)
    jobs = {d["_id"]: d for d in await db[JOBS].find(
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
