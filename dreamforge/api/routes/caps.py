"""Spending caps (``schemas.Caps``, ``jobs/budgets.py``): a job's and its project's, and what each
has spent. Raising a cap puts the jobs it paused back in the queue."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from dreamforge.api import errors
from dreamforge.api.deps import Db, Project, own_job
from dreamforge.api.views import JOB_FIELDS, job_view
from dreamforge.jobs import budgets
from dreamforge.schemas import Caps, JobView, Spend
from dreamforge.store import JOBS, PROJECTS

router = APIRouter(tags=["jobs"], responses=errors.responses(404))


class ProjectCaps(BaseModel):
    caps: Caps
    spend: Spend
    resumed: list[str] = []


@router.put("/api/jobs/{job_id}/caps", response_model=JobView)
async def put_job_caps(db: Db, job_id: str, body: Caps, pid: Project):
    """Set the job's caps (a field left out: no cap of that kind); a paused job no cap holds any
    more is queued again and resumes where it stopped."""
    await own_job(db, job_id, pid, {"_id": 1})
    await db[JOBS].update_one({"_id": job_id}, {"$set": {"caps": body.model_dump(exclude_none=True)}})
    await budgets.resume_paused(db, {"_id": job_id})
    return job_view(await own_job(db, job_id, pid, JOB_FIELDS))


@router.get("/api/caps", response_model=ProjectCaps)
async def get_caps(db: Db, pid: Project):
    doc = await db[PROJECTS].find_one({"_id": pid}, {"caps": 1, "spend": 1}) or {}
    return ProjectCaps(caps=doc.get("caps") or {}, spend=doc.get("spend") or {})


@router.put("/api/caps", response_model=ProjectCaps)
async def put_caps(db: Db, body: Caps, pid: Project):
    """Set the project's caps on all its jobs' spend together; resumes the jobs they no longer hold."""
    doc = await db[PROJECTS].find_one_and_update({"_id": pid}, {"$set": {"caps": body.model_dump(exclude_none=True)}},
                                                 projection={"spend": 1}, return_document=True)  # fmt: skip
    resumed = await budgets.resume_paused(db, {"project_id": pid})
    return ProjectCaps(caps=body, spend=(doc or {}).get("spend") or {}, resumed=resumed)
