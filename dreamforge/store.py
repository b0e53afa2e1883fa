"""MongoDB collections and their indexes.

SecantusDB fetches every document matching a filter and sorts in Python before the limit
(``shared/FACTS.md``), so each hot query is shaped to match few documents or to filter and sort
on the same single indexed field:

- claim: ``queue_key`` exists only while a job is queued and sorts by ready time, so the claim
  filters and sorts on that one field;
- reaper: ``lease_expires`` exists only while a job runs;
- log/metric tails: ``(job_id, seq)`` unique, read as ``seq > n`` with a limit;
- job lists: ``(project_id, created)`` plus narrow filters.
"""

from __future__ import annotations

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel

JOBS, LOGS, METRICS, PROJECTS, KEYS, DATASETS, REWARDS = (
    "jobs", "logs", "metrics", "projects", "api_keys", "datasets", "rewards",
)  # fmt: skip
GRIDFS_BUCKET = "datasets"

INDEXES: dict[str, list[IndexModel]] = {
    JOBS: [
        IndexModel([("queue_key", ASCENDING)], name="claim", partialFilterExpression={"queue_key": {"$exists": True}}),
        IndexModel([("lease_expires", ASCENDING)], name="reap", partialFilterExpression={"lease_expires": {"$exists": True}}),
        IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="list"),
        IndexModel([("project_id", ASCENDING), ("source.repo", ASCENDING), ("source.branch", ASCENDING)], name="branch"),
        IndexModel(
            [("project_id", ASCENDING), ("idempotency_key", ASCENDING)], name="idempotency", unique=True,
            partialFilterExpression={"idempotency_key": {"$type": "string"}},
        ),
        IndexModel(
            [("project_id", ASCENDING), ("dedupe_key", ASCENDING)], name="dedupe", unique=True,
            partialFilterExpression={"dedupe_key": {"$type": "string"}},
        ),
    ],
    LOGS: [IndexModel([("job_id", ASCENDING), ("seq", ASCENDING)], name="tail", unique=True)],
    METRICS: [IndexModel([("job_id", ASCENDING), ("seq", ASCENDING)], name="tail", unique=True)],
    KEYS: [IndexModel([("project_id", ASCENDING)], name="project")],
    DATASETS: [IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="list")],
    REWARDS: [IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="list")],
}  # fmt: skip


def ensure_indexes(db: pymongo.database.Database) -> None:
    """Create every index; idempotent, run at each start-up of the API and the worker."""
    for name, models in INDEXES.items():
        db[name].create_indexes(models)


async def ensure_indexes_async(db) -> None:
    for name, models in INDEXES.items():
        await db[name].create_indexes(models)


def client(uri: str, **kw) -> pymongo.MongoClient:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=kw.pop("timeout_ms", 5000), tz_aware=True, **kw)


def async_client(uri: str, **kw) -> pymongo.AsyncMongoClient:
    return pymongo.AsyncMongoClient(uri, serverSelectionTimeoutMS=kw.pop("timeout_ms", 3000), tz_aware=True, **kw)
