"""Commit statuses for pushes that got no job: the config at that sha cannot be read (a
directory, a symlink, a submodule, a GitHub refusal), so the commit says why, as the preview
does. Stored in ``GITHUB_NOTES`` by the API (``push_outbox``) and posted by the same sweep as
the jobs' statuses (``status.sync_once``), under the same rate limits and refusals (``limits``).
A repository GitHub will not show us gets no note: a status could not reach it either.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dreamforge.github import client, limits
from dreamforge.jobs import queue
from dreamforge.settings import Settings
from dreamforge.store import GITHUB_NOTES

CONTEXT = "dreamforge/train"
CLAIM_S = 60.0
MAX_FAILURES = 8


async def add(db, pid: str, repo: str, sha: str, description: str) -> None:
    """Due now: the commit's status ``error`` with ``description`` (cut to GitHub's 140 characters)."""
    text = description if len(description) <= 140 else description[:139] + "…"
    await db[GITHUB_NOTES].update_one({"_id": f"{pid}|{repo}|{sha}"},
                                      {"$set": {"repo": repo, "sha": sha, "description": text, "failures": 0,
                                                "due": queue.stamp(queue.now())}}, upsert=True)  # fmt: skip


def sync_due(db, settings: Settings, t: datetime, paused: dict[str, datetime | None]) -> int:
    """Post the due notes; returns how many were looked at."""
    cands = list(db[GITHUB_NOTES].find({"due": {"$lte": queue.stamp(t)}}).sort("due", 1).limit(20))
    for n in cands:
        claimed = db[GITHUB_NOTES].update_one({"_id": n["_id"], "due": n["due"]},
                                              {"$set": {"due": queue.stamp(t + timedelta(seconds=CLAIM_S))}})  # fmt: skip
        if claimed.modified_count:
            _sync(db, settings, n, t, paused)
    return len(cands)


def _sync(db, settings: Settings, n: dict[str, Any], t: datetime, paused: dict[str, datetime | None]) -> None:
    def write(cred: str) -> bool:
        limits.take_write(db, cred, settings.github_writes_per_min, t)
        repo = client.client(settings, n["repo"]).get_repo(n["repo"])
        repo.get_commit(n["sha"]).create_status("error", description=n["description"], context=CONTEXT)
        return True

    outcome, detail = limits.attempt(db, settings, n["repo"], t, paused, write)
    failures = int(n.get("failures", 0)) + 1
    if outcome == "later":
        db[GITHUB_NOTES].update_one({"_id": n["_id"]}, {"$set": {"due": queue.stamp(detail)}})
    elif outcome == "retry" and failures < MAX_FAILURES:
        db[GITHUB_NOTES].update_one({"_id": n["_id"]}, {"$set": {"failures": failures,
                                    "due": queue.stamp(t + timedelta(seconds=2.0 * 2**failures))}})  # fmt: skip
    else:  # posted, refused, or GitHub away for too long: the preview keeps saying why
        db[GITHUB_NOTES].delete_one({"_id": n["_id"]})
