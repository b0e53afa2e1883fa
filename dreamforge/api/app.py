"""The HTTP API (FastAPI): submit, watch and cancel jobs; upload datasets; store rewards.

Every route but ``/healthz``, ``/api/presets`` and ``/api/meta`` needs ``Authorization: Bearer <API key>``;
a project sees only its own jobs, datasets and rewards, and anything else is a 404, so ids
from other tenants cannot even be probed. The same app runs under uvicorn locally and under
``@modal.asgi_app`` in production. The routes are in ``routes/``, one module per resource.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError

from dreamforge.api import errors
from dreamforge.api.routes import caps, datasets, downloads, gate, github, jobs, logs, meta, preflight, rewards, samples, try_model
from dreamforge.github import push_outbox
from dreamforge.settings import Settings
from dreamforge.store import async_client, ensure_indexes_async

log = logging.getLogger("dreamforge.api")


class BodyLimit:
    """Caps request bodies (413) while they stream, whatever Content-Length claims."""

    def __init__(self, app, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = _cap(scope["path"], self.settings)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return await _too_large(send, cap)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > cap:
                    raise _TooLarge(cap)
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, cap)


def _cap(path: str, settings: Settings) -> int:
    if path == "/api/datasets":
        return settings.max_upload_bytes
    if path == "/api/webhooks/github":  # GitHub sends deliveries of up to 25 MB
        return settings.github_webhook_max_body
    if path.startswith("/api/jobs/") and "/try/" in path:
        return settings.max_try_bytes
    return settings.max_body_bytes


class _TooLarge(Exception):
    pass


async def _too_large(send, cap: int) -> None:
    body = json.dumps({"detail": f"request body over the {cap} byte limit"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    app.state.client = async_client(settings.require_uri(), timeout_ms=2000)
    app.state.db = app.state.client[settings.db_name]
    try:
        await ensure_indexes_async(app.state.db)
    except PyMongoError as e:  # start anyway: routes answer 503 until the database is back
        log.warning("database unavailable at start-up (%s); indexes will be created by the worker", e)
    outbox = push_outbox.start(app.state.db, settings)  # GitHub deliveries read while GitHub was away
    yield
    await push_outbox.stop(outbox)
    if getattr(app.state, "model_servers", None) is not None:  # "Try it" children stop with the API
        app.state.model_servers.stop()
    await app.state.client.close()


async def db_down(request: Request, exc: PyMongoError):
    if isinstance(exc, ConnectionFailure):
        return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "2"})  # fmt: skip
    raise exc


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="DreamForge API", version="0.1.0", lifespan=lifespan,
        description="Fine-tune a vision-language model on your own images: submit a curriculum, watch it train, get a 4-bit model.",
        responses=errors.COMMON,
    )  # fmt: skip
    app.state.settings = settings or Settings()
    app.add_middleware(BodyLimit, settings=app.state.settings)
    errors.install(app)
    app.add_exception_handler(PyMongoError, db_down)
    for module in (meta, jobs, caps, logs, datasets, rewards, preflight, github, gate, samples, downloads, try_model):
        app.include_router(module.router)
    errors.document(app, {("POST", "/api/train"): {200: "The job this Idempotency-Key already created.", 404: None, 409: None,
                                                      429: None}})
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
