"""``POST /api/preflight``: a curriculum checked before it spends GPU time (``pipeline.preflight``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project
from dreamforge.jobs.lanes import lane
from dreamforge.jobs.submit import NotFound, build_job_config, uploaded_names
from dreamforge.schemas import PreflightIn, PreflightReport, TrainRequest
from pipeline.config import ConfigError, CurriculumConfig
from pipeline.rewards.base import RewardError

router = APIRouter(prefix="/api/preflight", tags=["preflight"])


@router.post("", response_model=PreflightReport, responses=errors.responses(404, 429))
async def preflight(db: Db, body: PreflightIn, pid: Project):
    """Check a curriculum as ``POST /api/train`` would receive it, without training: dataset
    health, the reward on perturbed ground truth, and each stage's estimated time and price.
    Its data and reward go through the same checks as a job's (this project's ids only)."""
    from pipeline.data.errors import DataError  # the data stack loads on first use, not at start-up

    req = TrainRequest(config=body.config, preset=body.preset, overrides=body.overrides, dataset=body.dataset,
                       reward=body.reward)  # fmt: skip
    try:
        cfg = await build_job_config(db, pid, req)
    except ConfigError as e:
        raise HTTPException(422, [{"loc": x["loc"].split(".") if x["loc"] else [], "msg": x["msg"]} for x in e.errors]) from None
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    uploaded = (await uploaded_names(db, pid, cfg.model_dump(mode="json"))).get("dataset")  # its name, never the gridfs:// id
    label = f"{uploaded['name']} ({uploaded['id']})" if uploaded else cfg.data.dataset
    try:
        return await lane("probes").run(pid, _run, cfg, label, body.samples)
    except RewardError as e:
        raise HTTPException(422, [{"loc": ["reward"], "msg": str(e)}]) from None
    except DataError as e:
        raise HTTPException(422, [{"loc": ["dataset"], "msg": str(e)}]) from None
    except (KeyError, ValueError) as e:
        raise HTTPException(422, [{"loc": ["reward"], "msg": str(e).strip("'")}]) from None


def _run(cfg: CurriculumConfig, label: str, samples: int) -> dict[str, Any]:
    from dreamforge.executors.modal_limits import DEFAULT_GPU
    from pipeline.preflight import run_preflight
    from pipeline.rewards.js import JsReward, check_reward
    from pipeline.sealed import parse_reward_ref

    reward = None
    stored = parse_reward_ref(cfg.reward)
    if stored and cfg.reward_source is not None and cfg.rl.enabled:
        reward = JsReward(cfg.reward_source, stored[1])
        check_reward(reward, cfg.task)
    try:
        return run_preflight(cfg, label=label, reward=reward, samples=samples, default_gpu=DEFAULT_GPU)
    finally:
        if reward is not None:
            reward.close()
