"""GitHub's rate limits, kept by every worker and API process together.

docs.github.com "Rate limits for the REST API" and "Best practices for using the REST API":
- a rate-limited request answers 403 or 429; wait ``retry-after`` seconds if the header is
  there, else until ``x-ratelimit-reset`` (epoch seconds) when ``x-ratelimit-remaining`` is 0,
  else at least one minute, backing off exponentially while it goes on;
- at most 80 content-creating requests a minute (secondary limit);
- "continuing to make requests while you are rate limited may result in the banning of your
  integration".
So a pause is one time per credential (a token, or an App installation: ``client.credential``),
stored in ``GITHUB_LIMITS`` where every process reads it before it writes; and each content
write takes one slot of that credential's current minute there first.

Any other 4xx is an answer, not an outage (422: an unknown sha, or 1000 statuses on one sha and
context; 403: no permission; 404: no access): retrying it changes nothing, so it is given up at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from dreamforge.github import client
from dreamforge.jobs import queue
from dreamforge.settings import Settings
from dreamforge.store import GITHUB_LIMITS

log = logging.getLogger("dreamforge.github")

MIN_PAUSE_S = 60.0
MAX_PAUSE_S = 3600.0


class Paused(Exception):
    """This credential may not write until ``until``."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"paused until {until.isoformat(timespec='seconds')}")
        self.until = until


def _header(headers: dict[str, Any] | None, name: str) -> str | None:
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return str(v)
    return None


def rate_limited(status: int | None, headers: dict[str, Any] | None, message: str = "") -> bool:
    if status == 429:
        return True
    return status == 403 and (_header(headers, "retry-after") is not None or _header(headers, "x-ratelimit-remaining") == "0"
                              or "rate limit" in message.lower())  # fmt: skip


def pause_s(headers: dict[str, Any] | None, strikes: int, now: float | None = None) -> float:
    """How long to wait after the ``strikes``-th rate-limited answer in a row."""
    retry_after = _header(headers, "retry-after")
    if retry_after and retry_after.strip().isdigit():
        return min(MAX_PAUSE_S, max(1.0, float(retry_after)))
    reset = _header(headers, "x-ratelimit-reset")
    if _header(headers, "x-ratelimit-remaining") == "0" and reset and reset.strip().isdigit():
        return min(MAX_PAUSE_S, max(1.0, int(reset) - (now or time.time()) + 1))
    return min(MAX_PAUSE_S, MIN_PAUSE_S * 2 ** max(0, strikes - 1))


def permanent(status: int | None) -> bool:
    """A 4xx that is not a rate limit (callers check ``rate_limited`` first)."""
    return status is not None and 400 <= status < 500


def describe(e: Exception) -> str:
    status = getattr(e, "status", None)
    data = getattr(e, "data", None)
    msg = data.get("message") if isinstance(data, dict) else None
    return (f"GitHub answered {status}: {msg or e}" if status else f"{type(e).__name__}: {e}")[:500]


def paused_until(db, cred: str, t: datetime) -> datetime | None:
    return _until(db[GITHUB_LIMITS].find_one({"_id": cred}, {"until": 1}), t)


async def paused_until_async(db, cred: str, t: datetime) -> datetime | None:
    return _until(await db[GITHUB_LIMITS].find_one({"_id": cred}, {"until": 1}), t)


def _until(doc: dict[str, Any] | None, t: datetime) -> datetime | None:
    if doc and doc.get("until") and doc["until"] > queue.stamp(t):
        return _at(doc["until"])
    return None


def strikes(db, cred: str) -> int:
    return int((db[GITHUB_LIMITS].find_one({"_id": cred}, {"strikes": 1}) or {}).get("strikes", 0))


def pause(db, cred: str, seconds: float, t: datetime, *, strike: bool = True) -> datetime:
    """Pause ``cred`` for ``seconds`` from ``t`` (never shortening a longer pause already stored)."""
    doc = db[GITHUB_LIMITS].find_one_and_update({"_id": cred}, _pause_update(seconds, t, strike), upsert=True,
                                                return_document=ReturnDocument.AFTER)  # fmt: skip
    return _at(doc["until"])


async def pause_async(db, cred: str, seconds: float, t: datetime) -> datetime:
    doc = await db[GITHUB_LIMITS].find_one_and_update({"_id": cred}, _pause_update(seconds, t, True), upsert=True,
                                                      return_document=ReturnDocument.AFTER)  # fmt: skip
    return _at(doc["until"])


def _pause_update(seconds: float, t: datetime, strike: bool) -> dict[str, Any]:
    until = queue.stamp(t + timedelta(seconds=seconds))
    update: dict[str, Any] = {"$max": {"until": until}, "$set": {"expires_at": t + timedelta(seconds=seconds + MAX_PAUSE_S)}}
    if strike:
        update["$inc"] = {"strikes": 1}
    return update


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


def clear_strikes(db, cred: str) -> None:
    db[GITHUB_LIMITS].update_one({"_id": cred, "strikes": {"$gt": 0}}, {"$set": {"strikes": 0}})


def take_write(db, cred: str, per_min: int, t: datetime) -> None:
    """Count one content write of ``cred`` in the current minute; over ``per_min``: pause to the
    next minute and raise :class:`Paused`."""
    minute = t.astimezone(UTC).replace(second=0, microsecond=0)
    doc = db[GITHUB_LIMITS].find_one_and_update(
        {"_id": f"{cred}|{minute.isoformat()}"}, {"$inc": {"n": 1}, "$setOnInsert": {"expires_at": minute + timedelta(minutes=2)}},
        upsert=True, return_document=ReturnDocument.AFTER,
    )  # fmt: skip
    if doc["n"] > per_min:
        raise Paused(pause(db, cred, (minute + timedelta(minutes=1) - t).total_seconds(), t, strike=False))


def attempt(db, settings: Settings, repo: str, t: datetime, paused: dict[str, datetime | None],
            write: Callable[[str], bool]) -> tuple[str, Any]:  # fmt: skip
    """Run ``write(credential)`` (True if it wrote) for ``repo`` under these rules. Returns ``("ok", None)``,
    ``("later", until)`` (rate limited: not a failure), ``("give_up", why)`` (GitHub's refusal)
    or ``("retry", why)`` (an outage: back off). ``paused``: what this sweep already knows."""
    from github import GithubException

    cred = None
    try:
        cred = client.credential(settings, repo)
        if cred not in paused:
            paused[cred] = paused_until(db, cred, t)
        if paused[cred]:
            raise Paused(paused[cred])
        wrote = write(cred)
    except Paused as p:
        paused[cred or ""] = p.until
        return "later", p.until
    except client.NotInstalled as e:
        return "give_up", str(e)
    except GithubException as e:
        why = describe(e)
        log.warning("%s: writing to GitHub failed (%s)", repo, why)
        if rate_limited(e.status, e.headers, why):
            if not cred:
                return "later", t + timedelta(seconds=MIN_PAUSE_S)
            paused[cred] = pause(db, cred, pause_s(e.headers, strikes(db, cred) + 1), t)
            return "later", paused[cred]
        return ("give_up", why) if permanent(e.status) else ("retry", why)
    except (OSError, KeyError) as e:
        log.warning("%s: writing to GitHub failed (%s: %s)", repo, type(e).__name__, e)
        return "retry", f"{type(e).__name__}: {e}"[:500]
    if wrote:  # GitHub took a write: the next rate limit starts the backoff over
        clear_strikes(db, cred)
    return "ok", None
