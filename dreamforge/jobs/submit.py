"""Turn a train request into a validated config and one queued job (shared by every entry point:
the API, the GitHub webhooks and the dashboard all submit through here)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
from typing import Any

from pymongo.errors import DuplicateKeyError

from dreamforge.jobs import queue
from dreamforge.jobs.lanes import lane
from dreamforge.schemas import TrainRequest
from dreamforge.store import DATASETS, JOBS, REWARDS
from pipeline.config import ConfigError, CurriculumConfig, build_config, config_hash, deep_merge
from pipeline.deprecations import upgrade_config
from pipeline.sealed import STORED, reward_ref, seal
from pipeline.stage_table import TRAINED_SECTIONS

# The config fields that name data; each goes through resolve_dataset.
DATA_FIELDS = ("dataset", "warm_start_dataset")


class NotFound(Exception):
    """A dataset or reward the request names does not exist for this project."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key already used for a request with a different body."""


def allow_local_paths() -> bool:
    """Server paths as datasets or models: on for the embedded default (your own machine), off in production."""
    return os.environ.get("DREAMFORGE_ALLOW_LOCAL_PATHS", "0") == "1"


def _refuse(loc: str, msg: str) -> ConfigError:
    return ConfigError(f"{loc}: {msg}", [{"loc": loc, "msg": msg}])


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# owner/name as the Hugging Face hub spells it: no leading dot, no '..', no third segment
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


async def resolve_dataset(db, project_id: str, dataset: str, *, loc: str = "data.dataset") -> str:
    """The URI a worker reads ``dataset`` from, checked against this project and the server's
    policy: a stored id (``ds_…``) of this project becomes ``gridfs://…``; raw gridfs://,
    unsafe remote URLs (the SSRF guard, run here at submit and again at fetch) and, in
    production, server paths are refused with a ConfigError naming ``loc``."""
    from pipeline.data.errors import DataError
    from pipeline.data.remote import allow_private_from_env, parse_remote_uri
    from pipeline.data.sources import REMOTE_SCHEMES, parse_synthetic_uri

    if dataset.startswith("ds_"):
        doc = await db[DATASETS].find_one({"_id": dataset, "project_id": project_id}, {"gridfs_id": 1})
        if not doc:
            raise NotFound(f"dataset {dataset} not found")
        return f"gridfs://{doc['gridfs_id']}"
    m = _SCHEME.match(dataset)
    scheme = m.group(1).lower() if m else ""  # the loaders lower-case it too: GRIDFS:// is gridfs://
    try:
        if scheme == "gridfs":
            raise _refuse(loc, "refer to uploaded datasets by their id (ds_…) that POST /api/datasets returned")
        if scheme == "synthetic":
            parse_synthetic_uri(dataset)
            return dataset
        if scheme in REMOTE_SCHEMES:
            # resolves the host name: keep the event loop free
            await asyncio.to_thread(parse_remote_uri, dataset, allow_private=allow_private_from_env())
            return dataset
    except DataError as e:
        raise _refuse(loc, str(e)) from None
    if scheme in ("", "file"):
        if allow_local_paths():
            return dataset
        raise _refuse(loc, f"{dataset!r} is a server path; use s3://, gs://, https://, synthetic://, "
                           "a stored dataset id (ds_…) or upload one")  # fmt: skip
    raise _refuse(loc, f"unsupported scheme {scheme!r}; use s3://, gs://, https://, synthetic:// or a dataset id (ds_…)")


def check_model(model: str, *, loc: str = "model") -> None:
    """``model`` is the built-in tiny model, a hub id (owner/name), or, only where server paths
    are allowed, a local folder."""
    if model == CurriculumConfig.model_fields["model"].default or allow_local_paths():
        return
    if _HUB_ID.match(model) and ".." not in model:
        return
    raise _refuse(loc, f"{model!r} is not a Hugging Face model id; use owner/name (e.g. "
                       "'HuggingFaceTB/SmolVLM-256M-Instruct') or 'dreamforge-tiny'")  # fmt: skip


async def check_reward(db, project_id: str, reward: str) -> tuple[str, str] | None:
    """A stored reward id (``rw_…``, this project's), an example or a built-in name. For a stored
    one, returns ``(reference, source)``: the config names it ``stored:<sha256>/<file name>`` and
    its source travels in the sealed config (``pipeline.sealed``), the one form it keeps from
    here to the stage, whatever later happens to the ``rw_…`` document."""
    if reward.startswith("rw_"):
        doc = await db[REWARDS].find_one({"_id": reward, "project_id": project_id}, {"name": 1, "source": 1})
        if not doc:
            raise NotFound(f"reward {reward} not found")
        # Under the name the user gave it: the pipeline reports a JavaScript reward by its file
        # name (metrics.json's "reward", the held-out tables' "reward: NAME" column).
        return reward_ref(stored_reward_file(doc["name"]), doc["source"]), doc["source"]
    if reward.endswith(".js") or reward.startswith(STORED):
        raise _refuse("reward", "a .js path is not readable by the service; upload it with POST /api/rewards "
                                "and pass the returned id (rw_…)")  # fmt: skip
    if reward.startswith("example:"):
        from pipeline.config import EXAMPLE_REWARDS

        if reward.removeprefix("example:") not in EXAMPLE_REWARDS:  # by name from the fixed list, never a path
            raise _refuse("reward", f"no such example; use one of {', '.join('example:' + n for n in EXAMPLE_REWARDS)}")
        return None
    if reward == "default":
        return None
    # light import: the API process never loads torch
    from pipeline.rewards.builtin import get_reward

    try:
        get_reward(reward)  # an unknown built-in name fails here, before anything is queued
    except (KeyError, ValueError) as e:
        raise _refuse("reward", str(e).strip("'")) from None
    return None


def stored_reward_file(name: str) -> str:
    """``retail_facings.js`` for a stored reward named retail_facings (or retail_facings.js): a
    plain file name, whatever the user typed."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.removesuffix(".js")).strip("._")[:64]
    return f"{stem or 'reward'}.js"


async def store_reward(db, project_id: str, name: str, source: str) -> str:
    """Check JavaScript (compiles, defines reward, returns a finite number on a sample) and
    store it for this project; returns its id. Raises ``RewardError`` naming the line."""
    from pipeline.rewards.js import check_js_reward  # V8 loads on the first reward, not at API start-up

    await lane("checks").run(project_id, check_js_reward, source, name)
    doc = {"_id": "rw_" + secrets.token_hex(8), "project_id": project_id, "name": name, "source": source,
           "created_at": queue.now()}  # fmt: skip
    await db[REWARDS].insert_one(doc)
    return doc["_id"]


async def build_job_config(db, project_id: str, req: TrainRequest) -> CurriculumConfig:
    """The request's config, validated (the one validation on a job's way: every later hop opens
    its sealed form, ``pipeline.sealed``) with its data, model and reward resolved; a stored
    reward's source rides on it (``reward_source``). Raises ConfigError / NotFound."""
    # Old spellings are rewritten in each part before the parts merge: a shortcut or an override in
    # today's spelling must not replace a whole section written the old way (pipeline.deprecations).
    notes: list[str] = []
    parts = []
    for part in (req.config or {}, req.overrides):
        try:
            upgraded, said = upgrade_config(part)
        except ValueError as e:
            raise ConfigError(f"request: {e}", [{"loc": "rl", "msg": str(e)}]) from None
        parts.append(upgraded)
        notes += [n for n in said if n not in notes]
    raw = deep_merge(*parts)
    if req.dataset:
        raw = deep_merge(raw, {"data": {"dataset": req.dataset}})
    if req.epochs:
        for key, n in zip(TRAINED_SECTIONS, req.epochs, strict=False):
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
    if reward:
        raw["reward"] = reward
    cfg = await resolve_refs(db, project_id, build_config(raw, preset=req.preset, source="request"))
    check_fit(cfg)
    cfg._deprecations = notes + [n for n in cfg.deprecations if n not in notes]  # noqa: SLF001
    return cfg


async def resolve_refs(db, project_id: str, cfg: CurriculumConfig) -> CurriculumConfig:
    """Every field that names data, a model or a reward, through one gate with the tenant and the
    server's policy (a config is checked once, here, and travels checked). Returns the config
    the worker runs: stored ids turned into what it reads, a stored reward's source on it."""
    data = {f: await resolve_dataset(db, project_id, getattr(cfg.data, f), loc=f"data.{f}") for f in DATA_FIELDS}
    check_model(cfg.model)
    stored = await check_reward(db, project_id, cfg.reward)
    update: dict[str, Any] = {"data": cfg.data.model_copy(update=data)}
    if stored:
        update["reward"] = stored[0]
    out = cfg.model_copy(update=update)
    out._reward_source = stored[1] if stored else None  # noqa: SLF001 — pipeline.sealed carries it on
    out._deprecations = cfg.deprecations  # noqa: SLF001
    return out


def check_fit(cfg: CurriculumConfig) -> None:
    """A stage whose ``compute`` hint names a GPU it cannot fit is refused now, with the numbers
    (``pipeline.estimate``), not out of memory an hour into a paid run."""
    from pipeline.estimate import fit_problems

    problems = fit_problems(cfg)
    if problems:
        raise ConfigError("; ".join(f"{loc}: {msg}" for loc, msg in problems), [{"loc": loc, "msg": msg} for loc, msg in problems])


async def uploaded_names(db, project_id: str, config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The uploaded datasets a resolved config reads (``gridfs://…``), by field, with the name the
    user uploaded each under: what the job shows people, while its worker keeps the id."""
    out = {}
    for field in DATA_FIELDS:
        uri = (config.get("data") or {}).get(field) or ""
        if uri.startswith("gridfs://"):
            doc = await db[DATASETS].find_one({"project_id": project_id, "gridfs_id": uri.removeprefix("gridfs://")},
                                              {"name": 1})  # fmt: skip
            if doc:
                out[field] = {"id": doc["_id"], "name": doc["name"]}
    return out


def request_hash(req: TrainRequest) -> str:
    """What an Idempotency-Key stands for: the request body, independent of key order."""
    return hashlib.sha256(json.dumps(req.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


async def submit(db, project_id: str, req: TrainRequest, *, idempotency_key: str | None = None,
                 dedupe_key: str | None = None, status: str = "queued") -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Validate and enqueue; returns ``(job document, created)``. The same idempotency or
    dedupe key returns the existing job instead of a second one; the same idempotency key
    with another body raises IdempotencyConflict."""
    key = None
    body_hash = request_hash(req) if idempotency_key else None
    if idempotency_key or dedupe_key:
        key = ({"idempotency_key": queue.scoped(project_id, idempotency_key)} if idempotency_key
               else {"dedupe_key": queue.scoped(project_id, dedupe_key)})  # fmt: skip
        existing = await db[JOBS].find_one(key)
        if existing:
            return _same_request(existing, body_hash), False
    cfg = await build_job_config(db, project_id, req)
    sealed = seal(cfg, cfg.reward_source)
    config = sealed["config"]
    doc = queue.new_job(project_id, config, config_hash(cfg), source=req.source.model_dump(exclude_none=True),
                        idempotency_key=idempotency_key, dedupe_key=dedupe_key, status=status)  # fmt: skip
    doc["config_sha256"] = sealed["sha256"]
    if sealed["reward_source"] is not None:
        doc["reward_source"] = sealed["reward_source"]
    if cfg.deprecations:  # the API's answer says them now; the worker writes them to the job's log
        doc["warnings"] = cfg.deprecations
    if body_hash:
        doc["request_hash"] = body_hash
    if req.caps is not None:
        doc["caps"] = req.caps.model_dump(exclude_none=True)
    if names := await uploaded_names(db, project_id, config):
        doc["datasets"] = names
    try:
        await db[JOBS].insert_one(doc)
    except DuplicateKeyError:  # a concurrent twin won the race
        return _same_request(await db[JOBS].find_one(key), body_hash), False
    return doc, True


def _same_request(existing: dict[str, Any], body_hash: str | None) -> dict[str, Any]:
    # Jobs stored before request hashes were kept have none: they answer as before.
    if body_hash and existing.get("request_hash", body_hash) != body_hash:
        raise IdempotencyConflict(
            f"Idempotency-Key already used for job {existing['_id']} with a different request body; "
            "send a new key for a new job, or the same body to get that job back"
        )
    return existing
