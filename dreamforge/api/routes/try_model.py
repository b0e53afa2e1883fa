"""``POST /api/jobs/{id}/try/{skill}``: ask a finished job's model about one image, as the
dashboard's "Try it" does.

The answer is what ``dreamforge serve`` answers for the same body (Moondream Station's shapes,
image-relative 0–1 coordinates), because it is that server that answers: the API starts it for
the job's model on demand (``dreamforge.serve.pool``) and forwards the request. Where the API
does not share the workers' disk (Modal's ``web``), the model is not here to serve and the
route says so, unless a model endpoint is configured (``DREAMFORGE_SERVE_URL``: Modal's ``serve``,
``dreamforge.serve.jobs``), which then answers with the caller's key.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from fastapi import APIRouter, HTTPException, Request

from dreamforge.api import errors
from dreamforge.api.deps import AppSettings, Db, Project, own_job
from dreamforge.schemas import TryRequest
from dreamforge.serve.app import AUTH_HEADER
from dreamforge.serve.model import resolve
from dreamforge.serve.pool import ServerFailed, ServerPool

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

Skill = Literal["detect", "point", "segment", "caption", "query"]


def pool(request: Request) -> ServerPool:
    state = request.app.state
    if getattr(state, "model_servers", None) is None:
        settings = state.settings
        state.model_servers = ServerPool(settings.home / "logs" / "serve", idle_s=settings.try_idle_s)
    return state.model_servers


@router.post("/{job_id}/try/{skill}", responses=errors.responses(404, 409, 502))
async def try_model(request: Request, db: Db, settings: AppSettings, job_id: str, skill: Skill,
                    body: TryRequest, pid: Project) -> dict[str, Any]:  # fmt: skip
    """The job's model's answer for one image: ``{"objects": …}``, ``{"points": …}``,
    ``{"path", "bbox"}`` or ``{"caption"}``. The first request starts the model (seconds)."""
    doc = await own_job(db, job_id, pid, {"status": 1})
    if doc["status"] != "succeeded":
        raise HTTPException(409, f"job {job_id} is {doc['status']}; its model can be tried once it has succeeded")
    if settings.serve_url:  # a deployment's model endpoint (Modal's `serve`) answers with the caller's key
        return await _remote(settings.serve_url, job_id, skill, body, request.headers.get("authorization", ""))
    try:
        model_dir = resolve(str(settings.artifacts / job_id / "out"), settings.artifacts, body.format)
    except (FileNotFoundError, ValueError) as e:
        raise HTTPException(404, f"job {job_id}: {_public(str(e), settings)} (the model is served where the "
                                 f"workers keep it: run `dreamforge pull {job_id}` and `dreamforge serve`)") from None  # fmt: skip
    station = body.model_dump(exclude={"format"}, exclude_none=True)
    try:
        status, answer = await pool(request).call(model_dir, skill, station)
    except ServerFailed as e:
        raise HTTPException(502, f"the model of job {job_id} could not be started: {_public(str(e), settings)}") from None
    if status >= 400:  # the server's own sentence: a skill the model lacks, an unreadable image …
        raise HTTPException(status if status < 500 else 502, answer.get("error") or f"the model server answered {status}")
    return answer


async def _remote(url: str, job_id: str, skill: str, body: TryRequest, authorization: str) -> dict[str, Any]:
    if body.format != "release":
        raise HTTPException(422, "this deployment serves each job's released model; leave format out")
    station = body.model_dump(exclude={"format"}, exclude_none=True)
    key = authorization.removeprefix("Bearer ").strip()
    try:
        async with httpx.AsyncClient(timeout=300) as client:  # the first request loads the model on a GPU
            r = await client.post(f"{url.rstrip('/')}/jobs/{job_id}/v1/{skill}", json=station, headers={AUTH_HEADER: key})
    except httpx.HTTPError as e:
        raise HTTPException(502, f"the model endpoint did not answer ({type(e).__name__}); retry shortly") from None
    try:
        answer = r.json()
    except ValueError:
        answer = {}
    if r.status_code >= 400:
        status = r.status_code if r.status_code < 500 else 502
        raise HTTPException(status, answer.get("error") or f"the model endpoint answered {r.status_code}")
    return answer


def _public(message: str, settings: Any) -> str:
    """No server paths in what the user reads."""
    return message.replace(str(settings.artifacts), "artifacts")
