"""Projects and their API keys.

A key is ``dfk_`` + 32 random bytes; only its SHA-256 is stored (as the key document's
``_id``, so a lookup is one index hit). A fast hash is right here: the keys are random and
long, so there is nothing to brute-force, unlike passwords.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from pymongo.database import Database

from dreamforge.store import KEYS, PROJECTS


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_project(db: Database, name: str, *, project_id: str | None = None, key: str | None = None,
                   github_repos: list[str] | None = None) -> tuple[str, str]:  # fmt: skip
    """Create (or reuse) a project and give it a new API key; returns ``(project_id, key)``."""
    project_id = project_id or "prj_" + secrets.token_hex(6)
    now = datetime.now(UTC)
    db[PROJECTS].update_one(
        {"_id": project_id},
        {"$setOnInsert": {"name": name, "created_at": now, "github_repos": github_repos or []}},
        upsert=True,
    )
    key = key or "dfk_" + secrets.token_urlsafe(32)
    db[KEYS].update_one({"_id": hash_key(key)}, {"$set": {"project_id": project_id, "created_at": now}}, upsert=True)
    return project_id, key


async def project_for_key(db, key: str) -> str | None:
    doc = await db[KEYS].find_one({"_id": hash_key(key)}, {"project_id": 1})
    return doc["project_id"] if doc else None


def revoke_key(db: Database, key: str) -> bool:
    """Delete an API key; the next request with it is a 401 (the API looks keys up on every
    request). Returns whether the key existed."""
    return db[KEYS].delete_one({"_id": hash_key(key)}).deleted_count == 1
