"""What routes inject, as ``Annotated`` aliases: the caller's project (``Project``), the
database (``Db``), the settings (``AppSettings``); and ``own_job``, the one tenancy check on a
job id (anything of another project is a 404, so ids cannot even be probed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from dreamforge import auth
from dreamforge.settings import Settings
from dreamforge.store import JOBS


async def current_project(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The project of the request's API key, looked up on every request (one ``_id`` index hit),
    so a revoked key stops working at once in every API process; a cache would need to hear
    about revocations from all of them."""
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing API key: send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
    token = authorization.removeprefix("Bearer ").strip()
    pid = await auth.project_for_key(request.app.state.db, token)
    if pid is None:
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return pid


def get_db(request: Request):
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


Project = Annotated[str, Depends(current_project)]
Db = Annotated[Any, Depends(get_db)]  # pymongo's AsyncDatabase; Any keeps it out of the OpenAPI schema
AppSettings = Annotated[Settings, Depends(get_settings)]


async def own_job(db, job_id: str, pid: str, projection: dict | None = None) -> dict[str, Any]:
    doc = await db[JOBS].find_one({"_id": job_id, "project_id": pid}, projection)
    if doc is None:
        raise HTTPException(404, f"job {job_id} not found")
    return doc
