"""Unauthenticated routes: liveness, the presets, and the service's vocabulary."""

from __future__ import annotations

from fastapi import APIRouter

from dreamforge.api.deps import Db
from dreamforge.schemas import ACTIVE_STATUSES, FINAL_STATUSES, HELD_STATUSES, REQUEUABLE_STATUSES, WAITING_STATUSES, JobStatus
from pipeline.config import load_preset, preset_names
from pipeline.stage_table import as_json

router = APIRouter(tags=["meta"])


@router.get("/healthz")
async def healthz(db: Db):
    await db.command("ping")
    return {"ok": True, "db": "up"}


@router.get("/api/presets")
async def presets():
    return {name: load_preset(name) for name in preset_names()}


@router.get("/api/meta")
async def meta():
    """The service's vocabulary, for clients that must not copy it (the dashboard, the Action):
    the curriculum's stages in order, the job statuses, and which are final, active (waiting
    or training), waiting (no worker holds them: a cancel ends them at once), held (waiting
    for a person's approval, not a worker) or requeuable."""
    return {"stages": as_json(), "statuses": [s.value for s in JobStatus],
            "final": list(FINAL_STATUSES), "active": list(ACTIVE_STATUSES),
            "waiting": list(WAITING_STATUSES), "held": list(HELD_STATUSES),
            "requeuable": list(REQUEUABLE_STATUSES)}  # fmt: skip
