"""The FastAPI app of ``dreamforge serve``: Moondream Station's routes over one trained model.

Shapes as Station (``moondream_station/core/rest_server.py``) and Moondream's client
(``moondream/cloud_vl.py``, PyPI ``moondream`` 0.1.1: JSON bodies with ``image_url`` a data URL,
the key in ``X-Moondream-Auth``, streams read as ``data: {"chunk"}`` … ``{"completed"}``) speak
them. Every error is ``{"error": sentence}`` with a 4xx naming the problem; a skill the model
was not trained for is a 422 that says which skills it has.
Beyond Station: ``POST /v1/detect`` (and ``/v1/point``) also take ``images: [data URL, …]`` and
answer ``{"results": [{"objects": …}, …]}``, and ``/health`` shows the batching counters.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dreamforge.serve import answers
from dreamforge.serve.inputs import DEFAULT_MAX_PIXELS, BadInput, read_image
from dreamforge.serve.model import ServedModel

log = logging.getLogger("dreamforge.serve")

DEFAULT_MAX_BODY = 20 * 1024 * 1024
AUTH_HEADER = "X-Moondream-Auth"
MAX_IMAGES = 64


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, refused (413) past ``max_bytes`` before it is all read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BadInput(f"the body is {int(declared)} bytes, more than this server's {max_bytes}; send a smaller image", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadInput(f"the body is more than this server's {max_bytes} bytes; send a smaller image", 413)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadInput("the body is not JSON; send {\"image_url\": \"data:image/…;base64,…\", …}") from None
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object with image_url")
    return data


def _max_objects(body: dict[str, Any]) -> int | None:
    settings = body.get("settings")
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise BadInput("settings must be an object, e.g. {\"max_objects\": 5}")
    n = settings.get("max_objects")
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BadInput(f"settings.max_objects must be a whole number ≥ 1, got {n!r}")
    return n


@dataclass(frozen=True)
class Serving:
    """What every route reads from ``app.state.serving``: the model and this server's limits."""

    served: ServedModel
    api_key: str | None
    max_body: int
    max_pixels: int
    name: str  # "job id/model folder", as /health and /v1/models show it

    @property
    def task(self) -> str:
        return self.served.codec.task


def serving(request: Request) -> Serving:
    return request.app.state.serving


Ctx = Annotated[Serving, Depends(serving)]
router = APIRouter()


def create_app(served: ServedModel, *, api_key: str | None = None, max_body: int = DEFAULT_MAX_BODY,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:  # fmt: skip
    app = FastAPI(title="DreamForge model server (Moondream Station API)", docs_url=None, redoc_url=None)
    owner = served.model_dir.parent
    name = (owner.parent.name if owner.name == "out" else owner.name) + "/" + served.model_dir.name  # job id/model
    app.state.serving = Serving(served, api_key, max_body, max_pixels, name)
    app.middleware("http")(guard)
    app.add_exception_handler(BadInput, bad_input)
    app.include_router(router)
    return app


async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    api_key = request.app.state.serving.api_key
    # /health stays open, as Station's does, for load balancers and `curl` checks.
    if api_key and request.url.path != "/health":
        given = request.headers.get(AUTH_HEADER, "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return error(f"missing or wrong API key: send it in the {AUTH_HEADER} header", 401)
    try:
        return await call_next(request)
    except Exception:  # noqa: BLE001 — the client gets a sentence, the log the traceback
        log.exception("serving %s %s failed", request.method, request.url.path)
        return error("the model failed on this request; the server log has the details", 500)


async def bad_input(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, BadInput)
    return error(str(e), e.status)


async def images_of(ctx: Serving, body: dict[str, Any]) -> tuple[list[Any], bool]:
    """The request's images and whether it sent a list (``images``) rather than ``image_url``."""
    if "images" in body:
        urls = body["images"]
        if not isinstance(urls, list) or not urls:
            raise BadInput("images must be a non-empty list of data URLs")
        if len(urls) > MAX_IMAGES:
            raise BadInput(f"images holds {len(urls)}; send at most {MAX_IMAGES} per request")
        fields = [f"images[{i}]" for i in range(len(urls))]
    elif "image_url" in body:
        urls, fields = [body["image_url"]], ["image_url"]
    else:
        raise BadInput("the body has no image_url (a data URL: data:image/jpeg;base64,…)")
    ims = [await asyncio.to_thread(read_image, f, u, ctx.max_pixels) for f, u in zip(fields, urls, strict=True)]
    return ims, "images" in body


async def one_image(ctx: Serving, body: dict[str, Any]) -> list[Any]:
    """Station's single ``image_url`` (segment and caption take no ``images`` list)."""
    return (await images_of(ctx, {k: body[k] for k in ("image_url",) if k in body}))[0]


async def located(ctx: Serving, request: Request, skill: str, key: str, shape: Callable[..., list]) -> dict[str, Any]:
    answers.check_skill(ctx.task, skill)
    with ctx.served.arriving_request():
        body = await read_json(request, ctx.max_body)
        category = answers.pick_category(ctx.served.codec.categories, body.get("object"))
        limit = _max_objects(body)
        ims, several = await images_of(ctx, body)
    targets = await ctx.served.predict(ims)
    results = [{key: shape(t, category, limit)} for t in targets]
    return {"results": results} if several else results[0]


@router.get("/health")
async def health(ctx: Ctx) -> dict[str, Any]:
    return {"status": "ok", "server": "dreamforge", "model": ctx.name, "task": ctx.task,
            "quantized": ctx.served.quantized, "batching": ctx.served.stats()}  # fmt: skip


@router.get("/v1/models")
async def models(ctx: Ctx) -> dict[str, Any]:
    return {"models": [{
        "id": ctx.name,
        "name": ctx.name,
        "description": f"DreamForge {ctx.task} model; categories: {', '.join(ctx.served.codec.categories) or '-'}",
        "version": "4bit" if ctx.served.quantized else "full",
    }]}  # fmt: skip


@router.post("/v1/detect")
async def detect(ctx: Ctx, request: Request) -> dict[str, Any]:
    return await located(ctx, request, "detect", "objects", answers.detections)


@router.post("/v1/point")
async def point(ctx: Ctx, request: Request) -> dict[str, Any]:
    return await located(ctx, request, "point", "points", answers.points)


@router.post("/v1/segment")
async def segment(ctx: Ctx, request: Request) -> dict[str, Any]:
    answers.check_skill(ctx.task, "segment")
    with ctx.served.arriving_request():
        body = await read_json(request, ctx.max_body)
        category = answers.pick_category(ctx.served.codec.categories, body.get("object"))
        image = await one_image(ctx, body)
    (target,) = await ctx.served.predict(image)
    return answers.segment(target, category)


@router.post("/v1/caption")
async def caption(ctx: Ctx, request: Request) -> Response:
    answers.check_skill(ctx.task, "caption")
    with ctx.served.arriving_request():
        body = await read_json(request, ctx.max_body)
        image = await one_image(ctx, body)
    (target,) = await ctx.served.predict(image)
    text = target.get("text", "")
    if body.get("stream") is True:
        return StreamingResponse(sse([text]), media_type="text/event-stream")
    return JSONResponse({"caption": text})


@router.post("/v1/query")
async def query(ctx: Ctx) -> dict[str, Any]:
    answers.check_skill(ctx.task, "query")  # no DreamForge task answers free questions (yet)
    return {}


@router.api_route("/v1/{skill}", methods=["GET", "POST"])
async def unknown(ctx: Ctx, skill: str) -> Response:
    return error(f"no skill /v1/{skill}; this {ctx.task} model answers "
                 f"{', '.join('/v1/' + s for s in answers.SKILLS.get(ctx.task, ()))}", 404)  # fmt: skip


def sse(chunks: list[str]):
    """Station's server-sent events: ``{"chunk": …}`` per piece, then ``{"completed": true}``."""
    for chunk in chunks:
        yield f"data: {json.dumps({'chunk': chunk})}\n\n"
    yield f"data: {json.dumps({'completed': True})}\n\n"
