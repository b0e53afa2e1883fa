"""Turn a train request into a validated config and one queued job (shared by every entry point:
the API, the GitHub webhooks and the dashboard all submit through here)."""

from __future__ import annotations

import os
from typing import Any

from pymongo.errors import DuplicateKeyError

from dreamforge import queue
from dreamforge.schemas import TrainRequest
from dreamforge.store import DATASETS, JOBS, REWARDS
from pipeline.config import ConfigError, build_config, config_hash, deep_merge

# gridfs:// is not among them: a raw GridFS id would bypass the project check that ds_ ids get.
REMOTE_SCHEMES = ("s3://", "gs://", "https://", "synthetic://")


class NotFound(Exception):
    """A dataset or reward the request names does not exist for this project."""


def allow_local_paths() -> bool:
    """Server paths as datasets: on for the embedded default (your own machine), off in production."""
    return os.environ.get("DREAMFORGE_ALLOW_LOCAL_PATHS", "0") == "1"


async def resolve_dataset(db, project_id: str, dataset: str) -> str:
    """The URI a worker reads ``dataset`` from: a stored id (``ds_…``) of this project becomes
    ``gridfs://…``; raw gridfs:// and (in production) server paths are refused."""
    if dataset.startswith("ds_"):
        doc = await db[DATASETS].find_one({"_id": dataset, "project_id": project_id}, {"gridfs_id": 1})
        if not doc:
            raise NotFound(f"dataset {dataset} not found")
        return f"gridfs://{doc['gridfs_id']}"
    if dataset.startswith("gridfs://"):
        raise ConfigError("data.dataset: refer to uploaded datasets by their id (ds_…)",
                          [{"loc": "data.dataset", "msg": "use the dataset id (ds_…) that POST /api/datasets returned"}])  # fmt: skip
    if not dataset.startswith(REMOTE_SCHEMES) and not allow_local_paths():
        raise ConfigError(
            f"data.dataset: {dataset!r} is a server path; use s3://, gs://, https://, a stored dataset id (ds_…) or upload one",
            [{"loc": "data.dataset", "msg": "server paths are not allowed here; use s3://, gs://, https:// or a dataset id"}],
        )
    return dataset


async def store_reward(db, project_id: str, name: str, source: str) -> str:
    """Check JavaScript (compiles, defines reward, returns a finite number on a sample) and
    store it for this project; returns its id. Raises ``RewardError`` naming the line."""
    import secrets

    from dreamforge.lanes import lane
    from pipeline.rewards.js import check_js_reward

    await lane("checks").run(project_id, check_js_reward, source, name)
    doc = {"_id": "rw_" + secrets.token_hex(8), "project_id": project_id, "name": name, "source": source,
           "created_at": queue.now()}  # fmt: skip
    await db[REWARDS].insert_one(doc)
    return doc["_id"]


async def build_job_config(db, project_id: str, req: TrainRequest) -> tuple[dict[str, Any], str | None]:
    """Returns ``(config as a JSON dict, stored reward id or None)``; raises ConfigError / NotFound."""
    raw = deep_merge(req.config or {}, req.overrides)
    reward_ref = None
    if req.dataset:
        raw = deep_merge(raw, {"data": {"dataset": req.dataset}})
    if req.epochs:
        for key, n in zip(("warm_start", "domain", "rl"), req.epochs, strict=False):
            raw = deep_merge(raw, {key: {"epochs": n}})
    reward = req.reward
    if req.reward_js is not None:
        from pipeline.rewards.base import RewardError

        if reward:
            raise ConfigError("reward_js: pass either reward or reward_js, not both",
                              [{"loc": "reward_js", "msg": "pass either reward or reward_js, not both"}])  # fmt: skip
        try:
            reward = await store_reward(db, project_id, "inline.js", req.reward_js)
        except RewardError as e:
            raise ConfigError(f"reward_js: {e}", [{"loc": "reward_js", "msg": str(e)}]) from None
    if reward and reward.startswith("rw_"):
        if not await db[REWARDS].find_one({"_id": reward, "project_id": project_id}, {"_id": 1}):
            raise NotFound(f"reward {reward} not found")
        reward_ref = reward
        raw["reward"] = "stored.js"
    elif reward:
        raw["reward"] = reward
    cfg = build_config(raw, preset=req.preset, source="request")
    dataset = await resolve_dataset(db, project_id, cfg.data.dataset)
    if dataset != cfg.data.dataset:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dataset": dataset})})
    if reward_ref is None and cfg.reward.endswith(".js"):
        raise ConfigError("reward: upload JavaScript rewards with POST /api/rewards and pass the returned id",
                          [{"loc": "reward", "msg": "a .js path is not readable by the service; pass a stored reward id"}])  # fmt: skip
    if reward_ref is None and cfg.reward.startswith("example:"):
        from pipeline.rewards.js import EXAMPLES

        if not (EXAMPLES / (cfg.reward.removeprefix("example:") + ".js")).exists():
            known = ", ".join(sorted("example:" + p.stem for p in EXAMPLES.glob("*.js")))
            raise ConfigError(f"reward: no such example; the examples are {known}", [{"loc": "reward", "msg": f"use one of {known}"}])
    elif reward_ref is None and cfg.reward != "default":
        # light import: the API process never loads torch
        from pipeline.rewards.builtin import get_reward

        try:
            get_reward(cfg.reward)  # an unknown built-in name fails here, before anything is queued
        except (KeyError, ValueError) as e:
            raise ConfigError(f"reward: {e}", [{"loc": "reward", "msg": str(e).strip("'")}]) from None
    return cfg.model_dump(mode="json", by_alias=True, exclude_none=True), reward_ref


async def submit(db, project_id: str, req: TrainRequest, *, idempotency_key: str | None = None,
                 dedupe_key: str | None = None, status: str = "queued") -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Validate and enqueue; returns ``(job document, created)``. The same idempotency or
    dedupe key returns the existing job instead of a second one."""
    key = None
    if idempotency_key or dedupe_key:
        key = ({"idempotency_key": queue.scoped(project_id, idempotency_key)} if idempotency_key
               else {"dedupe_key": queue.scoped(project_id, dedupe_key)})  # fmt: skip
        existing = await db[JOBS].find_one(key)
        if existing:
            return existing, False
    config, reward_ref = await build_job_config(db, project_id, req)
    from pipeline.config import CurriculumConfig

    chash = config_hash(CurriculumConfig.model_validate(config))
    doc = queue.new_job(project_id, config, chash, source=req.source.model_dump(exclude_none=True),
                        idempotency_key=idempotency_key, dedupe_key=dedupe_key, reward_ref=reward_ref,
                        status=status)  # fmt: skip
    try:
        await db[JOBS].insert_one(doc)
    except DuplicateKeyError:  # a concurrent twin won the race
        return await db[JOBS].find_one(key), False
    return doc, True
