"""JavaScript rewards: store one (checked first), list them, and try one on a dataset."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project
from dreamforge.jobs.lanes import lane
from dreamforge.jobs.submit import NotFound, check_reward, resolve_dataset, store_reward
from dreamforge.schemas import RewardIn, RewardTestIn, RewardTestResult, RewardView
from dreamforge.store import REWARDS
from pipeline.config import ConfigError
from pipeline.rewards.base import RewardError

router = APIRouter(prefix="/api/rewards", tags=["rewards"])


@router.post("", status_code=201, response_model=RewardView, responses=errors.responses(429))
async def create_reward(db: Db, body: RewardIn, pid: Project):
    """Store a JavaScript reward after checking it compiles, defines ``reward`` and returns
    a finite number on a sample; a broken reward is a 422 naming the line."""
    try:
        rid = await store_reward(db, pid, body.name, body.source)
    except RewardError as e:
        raise HTTPException(422, [_reward_problem(e)]) from None
    doc = await db[REWARDS].find_one({"_id": rid})
    return RewardView(id=rid, name=body.name, created_at=doc["created_at"], size=len(body.source))


@router.post("/test", response_model=RewardTestResult, responses=errors.responses(404, 429))
async def test_reward(db: Db, body: RewardTestIn, pid: Project):
    """Run a reward (JavaScript source, a stored ``rw_…`` id, or a built-in name) on ground
    truths of a dataset against exact, shifted, missing and extra predictions: the score
    table a user checks before paying for a GPU job. Errors are a 422 naming the line."""
    from pipeline.data.errors import DataError  # the data and reward stacks load on first use, not at start-up

    source, name = body.source, "reward.js"
    if body.reward and not body.reward.startswith("rw_"):
        try:  # the same gate as a job's reward: never a .js path on the server (issue 14, 2)
            await check_reward(db, pid, body.reward)
        except ConfigError as e:
            raise HTTPException(422, [{"loc": ["reward"], "msg": x["msg"]} for x in e.errors]) from None
    if body.reward and body.reward.startswith("rw_"):
        doc = await db[REWARDS].find_one({"_id": body.reward, "project_id": pid}, {"source": 1, "name": 1})
        if doc is None:
            raise HTTPException(404, f"reward {body.reward} not found")
        source, name = doc["source"], doc["name"]
    try:
        uri = await resolve_dataset(db, pid, body.dataset)
    except ConfigError as e:
        raise HTTPException(422, [{"loc": ["dataset"], "msg": str(e)}]) from None
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    try:
        rows = await lane("probes").run(pid, _probe, uri, body, source, name)
    except RewardError as e:
        raise HTTPException(422, [_reward_problem(e)]) from None
    except DataError as e:
        raise HTTPException(422, [{"loc": ["dataset"], "msg": str(e)}]) from None
    except (KeyError, ValueError) as e:
        raise HTTPException(422, [{"loc": ["reward"], "msg": str(e).strip("'")}]) from None
    return RewardTestResult(reward=body.reward or name, samples=rows[0]["n"], cases=rows)


@router.get("", response_model=list[RewardView])
async def list_rewards(db: Db, pid: Project):
    docs = await db[REWARDS].find({"project_id": pid}).sort("created_at", -1).to_list(200)
    return [RewardView(id=d["_id"], name=d["name"], created_at=d["created_at"], size=len(d["source"])) for d in docs]


def _probe(uri: str, body: RewardTestIn, source: str | None, name: str) -> list[dict[str, Any]]:
    from pipeline.data.errors import DataError
    from pipeline.rewards.js import JsReward, check_reward
    from pipeline.rewards.probe import dataset_targets, load_any_reward, probe_reward

    targets = dataset_targets(uri, body.task, body.samples)
    if not targets:
        raise DataError(f"{body.dataset}: no labelled images to test the reward on")
    if source is not None:
        reward = JsReward(source, name)
        check_reward(reward, body.task)
    else:
        reward = load_any_reward(body.reward or "default", body.task)
    try:
        return probe_reward(reward, targets)
    finally:
        if hasattr(reward, "close"):
            reward.close()


def _reward_problem(e: RewardError) -> dict[str, Any]:
    return {"loc": ["source"], "msg": str(e), "line": e.line, "column": e.column}
