"""``POST /api/jobs/{id}/try/{skill}``: ask a finished job's model about one image, as the
dashboard's "Try it" does.

The answer is what ``dreamforge serve`` answers for the same body (Moondream Station's shapes,
image-relative 0–1 coordinates), because it is that server that answers: the API starts it for
the job's model on demand (``dreamforge.serve.pool``) and forwards the request. Where the API
does not share the workers' disk (Modal's ``web``), the model is not here to serve and the
route says so.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request

from dreamforge.api import errors
from dreamforge.api.deps import AppSettings, Db, Project, own_job
from dreamforge.schemas import TryRequest
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


def _public(message: str, settings: Any) -> str:
    """No server paths in what the user reads."""
    return message.replace(str(settings.artifacts), "artifacts")
