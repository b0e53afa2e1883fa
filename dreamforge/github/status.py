"""Job state back to GitHub: the commit status ``dreamforge/train`` and one comment per pull request.

An outbox, so that GitHub being slow or down never blocks or fails training: a job from GitHub
carries ``github_outbox``, the time (a sortable string) its state is next due to be compared
with what was last posted. :func:`sync_once` takes the due jobs (one range on one sparse
index, like the queue's claim), claims each by moving that time forward with a conditional
update (so two workers never post the same job twice), posts what changed, and either schedules
the next look, backs off after a failure, or removes the field once the final state and the
pull request comment are on GitHub. The worker runs it in a daemon thread
(:func:`start_sync_thread`; on Modal the orchestrator through :func:`syncing`, and the scheduled
sweep once a minute); without a GitHub App or ``GITHUB_TOKEN`` it does nothing. Rate limits
and GitHub's refusals are handled as ``limits`` says.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import PyMongoError

from dreamforge.github import client, limits, notes
from dreamforge.github.gates import gate_rows, gate_state, gate_text
from dreamforge.jobs import queue
from dreamforge.schemas import FINAL_STATUSES
from dreamforge.settings import Settings, dashboard_page
from dreamforge.store import COMMENTS, JOBS
from pipeline.stage_table import BY_NAME, REWARD_SCORE, STAGES, key_metric, metric_title, models_newest_first

log = logging.getLogger("dreamforge.github")

CONTEXT = "dreamforge/train"
COMMENT_MARK = "<!-- dreamforge:preview -->"
LOOK_EVERY_S = 2.0  # how often an unfinished job's state is compared with what GitHub shows
CLAIM_S = 60.0  # a sync that dies mid-post is retried after this
MAX_FAILURES = 16  # 2 s doubling to a 30 min cap: 1 h for the first 11 tries, then 4 more: ~3 h of outage


def stage_text(stage: str | None) -> str:
    """``2/4 domain SFT``: where a running job is, as a commit status says it."""
    s = BY_NAME.get(stage or "")
    return f"{s.number}/{len(STAGES)} {s.title}" if s else stage or "starting"


def due(t: datetime) -> str:
    return queue.stamp(t)


def dashboard_link(settings: Settings, job_id: str) -> str | None:
    return dashboard_page(settings.dashboard_url, "job", job_id) if settings.dashboard_url else None


def reward_metric(job: dict[str, Any]) -> tuple[str, float] | None:
    """The released model's held-out score under the job's own reward, titled with its name."""
    result = job.get("result") or {}
    models = result.get("models") or {}
    for name in models_newest_first((result.get("release") or {}).get("stage")):
        if isinstance((models.get(name) or {}).get(REWARD_SCORE), int | float):
            return metric_title(REWARD_SCORE, result.get("reward")), float(models[name][REWARD_SCORE])
    return None


def desired_status(job: dict[str, Any]) -> tuple[str, str]:
    """(GitHub state, description ≤ 140 chars) for the job as it stands."""
    status, stage = job["status"], job.get("stage")
    m = ", ".join(f"{k} {v:.3f}" for k, v in filter(None, (key_metric(job), reward_metric(job))))
    err = (job.get("error") or {}).get("message") or ""
    if status == "awaiting_approval":
        state, text = "pending", "awaiting approval: a fork's pull request trains once a project member approves it"
    elif status == "queued":
        state, text = "pending", "queued"
    elif status == "running":
        state, text = "pending", f"training: stage {stage_text(stage)}"
    elif status == "paused":  # at a spending cap (jobs/budgets.py): waits for a person to raise it
        why = job.get("paused") or {}
        state, text = "pending", f"paused at stage {stage_text(why.get('stage'))}: {why.get('reason') or 'a spending cap'}"
    elif status == "succeeded" and ((job.get("result") or {}).get("verdict") or {}).get("verdict") == "did_not_learn":
        # A model no better than its base must not show a green check (pipeline/verdict.py).
        m = gate_text(job) or m
        state, text = "failure", "did not learn" + (f": {m}" if m else "") + ", see the dashboard for likely causes"
    elif status == "succeeded" and gate_state(job):
        # A branch's preview against the default branch's release (github/gates.py): a required check.
        fmt = ((job.get("result") or {}).get("release") or {}).get("release_format")
        state, text = gate_state(job), gate_text(job) + (f", {fmt} release" if fmt else "")
    elif status == "succeeded":
        fmt = ((job.get("result") or {}).get("release") or {}).get("release_format")
        state, text = "success", "trained" + (f": {m}" if m else "") + (f", {fmt} release" if fmt else "")
    elif status == "failed":
        state, text = "failure", f"failed in {stage or 'setup'}: {err}"
    elif status == "cancelled":
        state, text = "error", job.get("superseded_by") or err or "cancelled"
    else:  # dead
        state, text = "error", f"infrastructure failure in {stage}: {err}"
    return state, text if len(text) <= 140 else text[:139] + "…"


def comment_body(job: dict[str, Any], settings: Settings) -> str:
    """The pull request comment: outcome, link and the held-out metrics of each model."""
    state, text = desired_status(job)
    src = job.get("source") or {}
    link = dashboard_link(settings, job["_id"])
    icon = {"success": "✅", "failure": "❌", "error": "⚠️"}.get(state, "⏳")
    lines = [COMMENT_MARK, f"### {icon} DreamForge preview: `{job['_id']}`", "",
             f"Commit `{(src.get('sha') or '')[:12]}` on `{src.get('branch')}`: {text}."]  # fmt: skip
    reason = ((job.get("result") or {}).get("release") or {}).get("reason")
    if reason:
        lines += ["", f"Released: {reason}."]
    if link:
        lines += ["", f"[Open the preview in the dashboard]({link})"]
    models = (job.get("result") or {}).get("models") or {}
    if models:
        primary = (job.get("result") or {}).get("primary_metric")
        keys = sorted({k for m in models.values() for k, v in m.items() if isinstance(v, int | float) and not k.endswith("_seconds")},
                      key=lambda k: (k != primary, k))  # the primary metric first; timings are not metrics
        reward = (job.get("result") or {}).get("reward")
        lines += ["", "| model | " + " | ".join(metric_title(k, reward) for k in keys) + " |", "|---|" + "---|" * len(keys)]
        for name, vals in models.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(vals.get(k)) for k in keys) + " |")
        lines += gate_rows(job, keys)
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else ""


def sync_once(db, settings: Settings, *, now: datetime | None = None) -> int:
    """Post every due change; returns how many jobs were looked at. Never raises for GitHub."""
    if not settings.github_enabled:
        return 0
    t = now or datetime.now(UTC)
    cands = list(db[JOBS].find({"github_outbox": {"$lte": due(t)}}).sort("github_outbox", 1).limit(50))
    paused: dict[str, datetime | None] = {}  # per credential, this sweep: one rate limit stops all its jobs
    for job in cands:
        claimed = db[JOBS].update_one({"_id": job["_id"], "github_outbox": job["github_outbox"]},
                                      {"$set": {"github_outbox": due(t + timedelta(seconds=CLAIM_S))}})  # fmt: skip
        if not claimed.modified_count:
            continue  # another worker has it
        _sync_job(db, settings, job, t, paused)
    return len(cands) + notes.sync_due(db, settings, t, paused)


def _sync_job(db, settings: Settings, job: dict[str, Any], t: datetime, paused: dict[str, datetime | None]) -> None:
    sets: dict[str, Any] = {}  # what reached GitHub, kept whatever happens next
    outcome, detail = limits.attempt(db, settings, job.get("source", {}).get("repo", ""), t, paused,
                                     lambda cred: _post(db, settings, job, t, cred, sets))  # fmt: skip
    if outcome == "later":
        return _later(db, job, sets, detail)
    if outcome == "give_up":
        return _give_up(db, job, sets, detail)
    if outcome == "retry":
        return _backoff(db, job, sets, t, detail)
    sets["github_failures"] = 0
    if job["status"] in FINAL_STATUSES:
        db[JOBS].update_one({"_id": job["_id"]}, {"$set": sets, "$unset": {"github_outbox": ""}})
    else:
        db[JOBS].update_one({"_id": job["_id"]}, {"$set": {**sets, "github_outbox": due(t + timedelta(seconds=LOOK_EVERY_S))}})


def _post(db, settings: Settings, job: dict[str, Any], t: datetime, cred: str, sets: dict[str, Any]) -> bool:
    """Post the status if it changed, and the final PR comment; ``sets`` records what reached
    GitHub. True if anything was written."""
    src = job["source"]
    state, text = desired_status(job)
    repo = client.client(settings, src["repo"]).get_repo(src["repo"])
    if job.get("github_posted") != f"{state}|{text}":
        limits.take_write(db, cred, settings.github_writes_per_min, t)
        repo.get_commit(src["sha"]).create_status(state, target_url=dashboard_link(settings, job["_id"]) or _unset(),
                                                  description=text, context=CONTEXT)  # fmt: skip
        sets["github_posted"] = f"{state}|{text}"
    # Cancelled (superseded) jobs leave the PR's comment to the newer job.
    if job["status"] not in FINAL_STATUSES or job["status"] == "cancelled" or job.get("github_commented"):
        return bool(sets)
    pr = src.get("pr") or _pull_of(repo, src["sha"])
    if pr:
        sets["source.pr"] = pr
        _comment(db, settings, repo, {**job, "source": {**src, "pr": pr}}, cred, t)
    sets["github_commented"] = True
    return True


def _pull_of(repo, sha: str) -> int | None:
    """The open pull request whose head is ``sha``, for a job made by a push alone
    (``GET /repos/{owner}/{repo}/commits/{sha}/pulls``)."""
    for pull in repo.get_commit(sha).get_pulls():
        if pull.state == "open" and pull.head.sha == sha:
            return int(pull.number)
    return None


def _later(db, job: dict[str, Any], sets: dict[str, Any], until: datetime) -> None:
    """Rate limited: look again once the credential's pause is over (not a failure of the job)."""
    db[JOBS].update_one({"_id": job["_id"]}, {"$set": {**sets, "github_outbox": due(until)}})


def _give_up(db, job: dict[str, Any], sets: dict[str, Any], why: str) -> None:
    """A 4xx other than a rate limit: GitHub's answer, which a retry would not change."""
    log.warning("job %s: GitHub refused (%s); not retried", job["_id"], why)
    db[JOBS].update_one({"_id": job["_id"]}, {"$set": {**sets, "github_error": why}, "$unset": {"github_outbox": ""}})


def _backoff(db, job: dict[str, Any], sets: dict[str, Any], t: datetime, why: str) -> None:
    failures = int(job.get("github_failures", 0)) + 1
    if failures >= MAX_FAILURES:
        return _give_up(db, job, {**sets, "github_failures": failures}, f"{why}; gave up after {failures} tries")
    delay = min(1800.0, LOOK_EVERY_S * 2 ** (failures - 1))
    db[JOBS].update_one({"_id": job["_id"]}, {"$set": {**sets, "github_failures": failures,
                        "github_outbox": due(t + timedelta(seconds=delay))}})  # fmt: skip


def _unset():
    from github.GithubObject import NotSet

    return NotSet


def _comment(db, settings: Settings, repo, job: dict[str, Any], cred: str, t: datetime) -> None:
    """Create the PR's comment once, then edit it in place; only the PR's latest job writes it.
    Before creating one, look for ours by its marker: a crash between creating the comment and
    saving its id must not post a second one."""
    src = job["source"]
    cid = f"{job['project_id']}|{src['repo']}#{src['pr']}"
    doc = db[COMMENTS].find_one({"_id": cid}) or {}
    if doc.get("job_id") not in (None, job["_id"]):
        return  # a newer push of this PR owns the comment
    from github import GithubException

    body = comment_body(job, settings)
    issue = repo.get_issue(int(src["pr"]))
    old = None
    if doc.get("comment_id"):
        old = issue.get_comment(int(doc["comment_id"]))
    else:
        old = next((c for c in issue.get_comments() if COMMENT_MARK in (c.body or "")), None)
    if old is not None:
        limits.take_write(db, cred, settings.github_writes_per_min, t)
        try:
            old.edit(body)
            db[COMMENTS].update_one({"_id": cid}, {"$set": {"comment_id": old.id}}, upsert=True)
            return
        except GithubException as e:
            if e.status not in (403, 404):  # deleted, or someone else's: write a new one
                raise
    limits.take_write(db, cred, settings.github_writes_per_min, t)
    c = issue.create_comment(body)
    db[COMMENTS].update_one({"_id": cid}, {"$set": {"comment_id": c.id}}, upsert=True)


def start_sync_thread(db, settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """A daemon thread that syncs every second while the worker runs (a job can run for hours;
    the worker's own loop only turns between jobs)."""
    if not settings.github_enabled:
        return None

    def loop() -> None:
        while not stop.wait(1.0):
            try:
                sync_once(db, settings)
            except PyMongoError as e:
                log.warning("GitHub status sync: database unavailable (%s)", type(e).__name__)
            except Exception:  # a bug must not end the thread: later jobs' statuses still go out
                log.exception("GitHub status sync")

    th = threading.Thread(target=loop, name="github-status", daemon=True)
    th.start()
    return th


@contextlib.contextmanager
def syncing(db, settings: Settings) -> Iterator[None]:
    """Sync in the background while the body runs, then once more for what it changed last: a
    process that exits when its jobs end (Modal's orchestrator) must not take the final status
    with it. The final look runs one look-interval early, since the finished job's next look is
    scheduled at most that far ahead."""
    stop = threading.Event()
    thread = start_sync_thread(db, settings, stop)
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
            try:
                sync_once(db, settings, now=datetime.now(UTC) + timedelta(seconds=LOOK_EVERY_S))
            except PyMongoError as e:  # the sweep posts it within a minute
                log.warning("GitHub status sync: database unavailable (%s)", type(e).__name__)
