"""GitHub's own push webhook while GitHub's API is away: keep the delivery, read its config later.

A push or pull_request delivery names a commit, not its ``dreamforge.config.json``: the API reads
the file at that sha from GitHub. GitHub never redelivers on its own, so a delivery must not be
lost because that read failed. A verified delivery is stored first (``PUSHES``), then read at
once; if GitHub does not answer, the request gets 202 (within GitHub's 10 s) and the stored
delivery is retried from this outbox with a backoff, the way ``status`` retries commit
statuses. Meanwhile the branch's preview shows "waiting_for_github" and why. Once GitHub answers,
the job is submitted through the same path and dedupe as an immediate one (``webhooks``).

Each stored delivery carries ``due``, the time (a sortable string) it is next tried; an API
process takes due deliveries by moving ``due`` forward with a conditional update, so two API
processes never read the same delivery at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from dreamforge.github import client, contents, limits, notes, webhooks
from dreamforge.github.contents import CONFIG_FILE
from dreamforge.github.webhooks import WAITING, waiting_response
from dreamforge.jobs import queue
from dreamforge.schemas import JobSource
from dreamforge.settings import Settings
from dreamforge.store import DELIVERIES, PREVIEWS
from dreamforge.store import GITHUB_PUSHES as PUSHES

log = logging.getLogger("dreamforge.github")

CLAIM_S = 60.0  # a read that dies mid-way (the process stopped) is tried again after this
FIRST_RETRY_S = 1.0  # then doubling to RETRY_CAP_S: a push is what someone waits for
RETRY_CAP_S = 1800.0
MAX_FAILURES = 20  # ~5 h of outage; then the preview shows the failure: push again to retry
EVERY_S = 1.0  # how often each API process looks for due deliveries


def pending_doc(pid: str, delivery: str, repo: str, target: tuple[str, str, int | None, bool],
                default_branch: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``default_branch``: the repository's, from the event (the preview gate's base)."""
    branch, sha, pr, fork = target
    t = queue.now()
    # Due only after CLAIM_S: the request that stores it reads GitHub first.
    return {"_id": queue.scoped(pid, delivery), "project_id": pid, "delivery": delivery, "repo": repo, "branch": branch,
            "sha": sha, "pr": pr, "fork": fork, "default_branch": default_branch, "received_at": t, "failures": 0,
            "due": queue.stamp(t + timedelta(seconds=CLAIM_S))}  # fmt: skip


async def resolve(db, settings: Settings, p: dict[str, Any], *, inline: bool) -> JSONResponse:
    """Read the config at the delivery's sha and submit its job; or schedule another try.

    ``inline`` (the webhook request itself): a bad config answers 422 as it always did. From the
    outbox there is nobody to answer, so the preview shows the error instead."""
    text = await _read(db, settings, p, inline=inline)
    if isinstance(text, JSONResponse):
        return text
    source = JobSource(kind="github", repo=p["repo"], branch=p["branch"], sha=p["sha"], pr=p["pr"],
                       default_branch=p.get("default_branch"))  # fmt: skip
    if text is None:
        await _done(db, p, skipped=f"no {webhooks.CONFIG_FILE} at {p['sha'][:12]}")
        return JSONResponse({"skipped": f"no {webhooks.CONFIG_FILE} at {p['sha'][:12]}"}, status_code=202)
    try:
        try:
            config = json.loads(text)
        except ValueError as e:
            raise HTTPException(422, f"{webhooks.CONFIG_FILE} at {p['sha'][:12]} is not valid JSON: {e}") from None
        if await _newer_push(db, p):
            await _done(db, p, skipped=f"a newer push of {p['branch']} arrived while GitHub was away")
            return JSONResponse({"skipped": "superseded by a newer push"}, status_code=202)
        resp = await webhooks.create_job(db, settings, p["project_id"], config=config, config_path=webhooks.CONFIG_FILE,
                                         delivery=p["delivery"], source=source, fork=p["fork"],
                                         received_at=p["received_at"])  # fmt: skip
    except HTTPException as e:
        if inline:  # as before the outbox: the answer says why, and a redelivery starts over
            await _forget(db, p)
            raise
        await _failed(db, p, _detail_text(e.detail))
        return JSONResponse({"detail": e.detail}, status_code=e.status_code)
    await _done(db, p)
    return resp


async def _read(db, settings: Settings, p: dict[str, Any], *, inline: bool) -> str | None | JSONResponse:
    """The config's text (None: no such file), or the answer when it cannot be read now. Reads
    wait out the credential's rate-limit pause, which every process shares (``limits``)."""
    from github import GithubException

    cred = None
    try:
        cred = await asyncio.to_thread(client.credential, settings, p["repo"])
        if until := await limits.paused_until_async(db, cred, queue.now()):
            raise limits.Paused(until)
        return await asyncio.to_thread(contents.fetch_config, settings, p["repo"], p["sha"])
    except client.NotInstalled as e:
        return await _unreadable(db, settings, p, str(e), inline=inline, visible=False)
    except contents.Unreadable as e:
        return await _unreadable(db, settings, p, str(e), inline=inline, visible=e.visible)
    except limits.Paused as e:
        return await _retry_later(db, p, e, pause=(e.until - queue.now()).total_seconds())
    except GithubException as e:
        if limits.rate_limited(e.status, e.headers, limits.describe(e)):
            seconds = limits.pause_s(e.headers, int(p.get("failures", 0)) + 1)
            if cred:
                await limits.pause_async(db, cred, seconds, queue.now())
            return await _retry_later(db, p, e, pause=seconds)
        if limits.permanent(e.status):  # GitHub's answer: a retry would get the same
            why = f"reading {CONFIG_FILE} of {p['repo']}: {limits.describe(e)}"
            return await _unreadable(db, settings, p, why, inline=inline, visible=e.status != 404)
        return await _retry_later(db, p, e)
    except Exception as e:  # noqa: BLE001 — requests raises many kinds; all mean "try later"
        return await _retry_later(db, p, e)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):  # validation errors: "where: what" per error
        return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in detail)[:500]
    return str(detail)[:500]


async def _newer_push(db, p: dict[str, Any]) -> bool:
    """Whether the branch's preview already comes from a delivery received after this one."""
    head = await db[PREVIEWS].find_one({"_id": f"{p['project_id']}|{p['repo']}|{p['branch']}"}, {"received_at": 1, "job_id": 1})
    return bool(head and head.get("job_id") and head.get("received_at") and head["received_at"] > p["received_at"])


async def _marker(db, p: dict[str, Any], status: str, detail: str) -> None:
    """What the branch's preview shows until the job exists."""
    await db[PREVIEWS].update_one(
        {"_id": f"{p['project_id']}|{p['repo']}|{p['branch']}"},
        {"$set": {"repo": p["repo"], "branch": p["branch"],
                  "pending": {"delivery": p["delivery"], "sha": p["sha"], "pr": p["pr"], "since": p["received_at"],
                              "status": status, "detail": detail}}},
        upsert=True,
    )  # fmt: skip


async def _done(db, p: dict[str, Any], skipped: str | None = None) -> None:
    if skipped:
        await db[DELIVERIES].update_one({"_id": p["_id"]}, {"$set": {"skipped": skipped}})
    await db[PREVIEWS].update_one({"_id": f"{p['project_id']}|{p['repo']}|{p['branch']}", "pending.delivery": p["delivery"]},
                                  {"$unset": {"pending": ""}})  # fmt: skip
    await db[PUSHES].delete_one({"_id": p["_id"]})


async def _forget(db, p: dict[str, Any]) -> None:
    """Drop the delivery entirely, so that GitHub's manual redelivery of it starts over."""
    await db[DELIVERIES].delete_one({"_id": p["_id"]})
    await db[PUSHES].delete_one({"_id": p["_id"]})


async def _failed(db, p: dict[str, Any], detail: str) -> None:
    await _marker(db, p, "failed", detail)  # the preview keeps saying why
    await _forget(db, p)


async def _unreadable(db, settings: Settings, p: dict[str, Any], why: str, *, inline: bool, visible: bool) -> JSONResponse:
    """GitHub answered and the config cannot be read: the preview and the commit's status say
    which case (private, directory, symlink, submodule); GitHub's manual redelivery tries again
    once it is fixed."""
    await _failed(db, p, why)
    if visible and settings.github_enabled:
        await notes.add(db, p["project_id"], p["repo"], p["sha"], why)
    return JSONResponse({"detail": why}, status_code=422 if inline else 200)


async def _retry_later(db, p: dict[str, Any], e: Exception, *, pause: float = 0.0) -> JSONResponse:
    """Try again later: doubling from FIRST_RETRY_S, or after GitHub's rate-limit pause."""
    failures = int(p.get("failures", 0)) + 1
    what = f"GitHub did not answer reading {CONFIG_FILE} of {p['repo']}@{p['sha'][:12]} ({limits.describe(e)})"[:400]
    log.warning("delivery %s: %s, attempt %d", p["delivery"], what, failures)
    if failures >= MAX_FAILURES:
        p = {**p, "failures": failures}
        await _failed(db, p, f"{what}; gave up after {failures} tries: push again")
        return waiting_response({**p, "error": what})
    delay = max(pause, min(RETRY_CAP_S, FIRST_RETRY_S * 2 ** (failures - 1)))
    error = f"{what}; trying again in {delay:.0f} s"
    await db[PUSHES].update_one({"_id": p["_id"]}, {"$set": {"failures": failures, "error": error,
                                "due": queue.stamp(queue.now() + timedelta(seconds=delay))}})  # fmt: skip
    await _marker(db, p, WAITING, error)
    return waiting_response({**p, "error": error})


async def resolve_due(db, settings: Settings, *, now: datetime | None = None) -> int:
    """Try every stored delivery that is due; returns how many were taken."""
    t = now or queue.now()
    due = await db[PUSHES].find({"due": {"$lte": queue.stamp(t)}}).sort("due", 1).to_list(20)
    taken = 0
    for p in due:
        claimed = await db[PUSHES].update_one({"_id": p["_id"], "due": p["due"]},
                                              {"$set": {"due": queue.stamp(t + timedelta(seconds=CLAIM_S))}})  # fmt: skip
        if claimed.modified_count:
            taken += 1
            await resolve(db, settings, p, inline=False)
    return taken


def start(db, settings: Settings) -> asyncio.Task:
    """The API process's outbox loop (cancel the task to stop it)."""

    async def loop() -> None:
        while True:
            try:
                await resolve_due(db, settings)
            except PyMongoError as e:
                log.warning("GitHub push outbox: database unavailable (%s)", type(e).__name__)
            except Exception:  # a bug must not end the loop for every later delivery
                log.exception("GitHub push outbox")
            await asyncio.sleep(EVERY_S)

    return asyncio.get_running_loop().create_task(loop(), name="github-push-outbox")


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def drain(settings: Settings) -> int:
    """Resolve the due deliveries once, outside an API process: on Modal the API may be scaled to
    zero for hours, so the scheduled sweep drains this outbox too (``modal_app``)."""
    from dreamforge.store import async_client

    async def run() -> int:
        c = async_client(settings.require_uri())
        try:
            return await resolve_due(c[settings.db_name], settings)
        finally:
            await c.close()

    return asyncio.run(run())
