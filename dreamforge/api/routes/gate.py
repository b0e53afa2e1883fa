"""The project's preview gate (``pipeline.gate.GateConfig``): what a branch's model must do against
the default branch's released model for its commit status to pass (``dreamforge.github.gates``)."""

from __future__ import annotations

from fastapi import APIRouter

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project
from dreamforge.store import PROJECTS
from pipeline.gate import GateConfig

router = APIRouter(tags=["github"], responses=errors.responses())


class GateView(GateConfig):
    """The gate in force, and whether the project set it (else each job reads the default
    branch's config, then these defaults)."""

    project_set: bool = False


@router.get("/api/gate", response_model=GateView)
async def get_gate(db: Db, pid: Project):
    doc = (await db[PROJECTS].find_one({"_id": pid}, {"gate": 1}) or {}).get("gate")
    return GateView(**(doc or {}), project_set=bool(doc))


@router.put("/api/gate", response_model=GateView)
async def put_gate(db: Db, body: GateConfig, pid: Project):
    """Set the project's gate; it wins over the ``gate`` section of the default branch's config."""
    await db[PROJECTS].update_one({"_id": pid}, {"$set": {"gate": body.model_dump()}})
    return GateView(**body.model_dump(), project_set=True)


@router.delete("/api/gate", response_model=GateView)
async def delete_gate(db: Db, pid: Project):
    """Forget the project's gate: jobs read the default branch's config (or the defaults) again."""
    await db[PROJECTS].update_one({"_id": pid}, {"$unset": {"gate": ""}})
    return GateView(project_set=False)
