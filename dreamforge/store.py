"""MongoDB collections and their indexes.

SecantusDB fetches every document matching a filter and sorts in Python before the limit
(``shared/FACTS.md``), so each hot query is shaped to match few documents or to filter and sort
on the same single indexed field:

- claim: ``queue_key`` exists only while a job is queued and sorts by ready time, so the claim
  filters and sorts on that one field, in short windows starting at the queue's head
  (``QUEUE_HEAD``): a range over the whole backlog would fetch all of it;
- reaper: ``lease_expires`` exists only while a job runs;
- log/metric tails: ``(job_id, seq)`` unique, read as ``seq > n`` with a limit;
- job lists: ``list_key`` = project id, creation time and job id in one sortable string, so a
  page is one range on one field; other filters are applied to bounded pages of it.
"""

from __future__ import annotations

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel

JOBS, LOGS, METRICS, PROJECTS, KEYS, DATASETS, REWARDS = (
    "jobs", "logs", "metrics", "projects", "api_keys", "datasets", "rewards",
)  # fmt: skip
GRIDFS_BUCKET = "datasets"
QUEUE_HEAD = "queue_head"  # one document: a key at or below every queued key (jobs/queue.py's claim)
GITHUB_PUSHES = "github_pushes"  # GitHub deliveries whose config is still to be read (github/push_outbox.py)
DELIVERIES = "github_deliveries"  # _id "project|delivery id" -> job id; TTL-expired after a day
PREVIEWS = "github_previews"  # _id "project|owner/name|branch" -> the branch's latest job
COMMENTS = "github_comments"  # _id "project|owner/name#pr" -> the PR's comment id and latest job
JTIS = "github_oidc_jti"  # one document per GitHub OIDC token seen; a TTL index drops it once the token expired
GITHUB_NOTES = "github_notes"  # commit statuses of pushes that got no job (github/notes.py)
GITHUB_LIMITS = "github_limits"  # per GitHub credential: its rate-limit pause, and its content writes per minute (github/limits.py)

INDEXES: dict[str, list[IndexModel]] = {
    JOBS: [
        # Sparse single-field indexes: SecantusDB's planner uses them for range + sort + limit on
        # the same field, and it ignores partial indexes (a claim took 0.5 s at 5k jobs).
        IndexModel([("queue_key", ASCENDING)], name="claim", sparse=True),
        IndexModel([("lease_expires", ASCENDING)], name="reap", sparse=True),
        IndexModel([("list_key", ASCENDING)], name="list", sparse=True),
        # Keys are stored prefixed with the project id, so one field serves the lookup and uniqueness.
        IndexModel([("idempotency_key", ASCENDING)], name="idempotency", unique=True, sparse=True),
        IndexModel([("dedupe_key", ASCENDING)], name="dedupe", unique=True, sparse=True),
        # GitHub status outbox (github/status.py): present only while a change may be unposted.
        IndexModel([("github_outbox", ASCENDING)], name="github_outbox", sparse=True),
    ],
    # GitHub (github/webhooks.py, github/oidc.py): repository -> project lookups; replay records expire.
    PROJECTS: [IndexModel([("github_repos", ASCENDING)], name="github_repos", sparse=True),
               IndexModel([("github_repo_ids", ASCENDING)], name="github_repo_ids", sparse=True)],
    DELIVERIES: [IndexModel([("created_at", ASCENDING)], name="ttl", expireAfterSeconds=86400)],
    GITHUB_PUSHES: [IndexModel([("due", ASCENDING)], name="due", sparse=True),
                    IndexModel([("received_at", ASCENDING)], name="ttl", expireAfterSeconds=7 * 86400)],
    JTIS: [IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0)],
    GITHUB_LIMITS: [IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0)],
    GITHUB_NOTES: [IndexModel([("due", ASCENDING)], name="due", sparse=True)],
    LOGS: [IndexModel([("job_id", ASCENDING), ("seq", ASCENDING)], name="tail", unique=True)],
    METRICS: [IndexModel([("job_id", ASCENDING), ("seq", ASCENDING)], name="tail", unique=True)],
    KEYS: [IndexModel([("project_id", ASCENDING)], name="project")],
    DATASETS: [IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="list")],
    REWARDS: [IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="list")],
}  # fmt: skip


def ensure_indexes(db: pymongo.database.Database) -> None:
    """Create every index; idempotent, run at each start-up of the API and the worker. An index
    whose definition changed between versions is dropped and built again."""
    for name, models in INDEXES.items():
        try:
            db[name].create_indexes(models)
        except pymongo.errors.OperationFailure:
            for m in models:
                try:
                    db[name].create_indexes([m])
                except pymongo.errors.OperationFailure:
                    db[name].drop_index(m.document["name"])
                    db[name].create_indexes([m])


async def ensure_indexes_async(db) -> None:
    for name, models in INDEXES.items():
        await db[name].create_indexes(models)


def client(uri: str, **kw) -> pymongo.MongoClient:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=kw.pop("timeout_ms", 5000), tz_aware=True, **kw)


def async_client(uri: str, **kw) -> pymongo.AsyncMongoClient:
    return pymongo.AsyncMongoClient(uri, serverSelectionTimeoutMS=kw.pop("timeout_ms", 3000), tz_aware=True, **kw)
