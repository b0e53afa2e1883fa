"""Errors in one documented shape (``Problem``: ``{"detail": sentence | [{loc, msg, …}]}``).

Every route declares the error statuses it can answer, so a client (and Schemathesis) can rely
on the OpenAPI schema; the handlers here turn what no route catches into those answers: a full
lane is a 503 with ``Retry-After``, a number too large for the database a 422, and anything
unexpected a 500 that names a reference for the server log instead of the exception.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from bson.errors import InvalidDocument
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dreamforge.jobs.lanes import Busy
from dreamforge.schemas import Problem

log = logging.getLogger("dreamforge.api")

_WHY = {
    400: "The body is not what the route reads (e.g. not JSON, or nested too deeply).",
    401: "Missing, unknown or revoked API key, or a signature that does not verify.",
    403: "Authenticated, but the repository is not this project's.",
    404: "No such job, dataset or reward in this project.",
    409: "The resource is in a state that does not allow this (e.g. requeue a running job).",
    413: "The request body is over the size limit.",
    416: "The Range header asks for bytes past the end of the artifact.",
    422: "The request is well-formed but invalid; each problem names its field.",
    429: "This project already has its share of heavy work (reward checks or tests) running; retry after the given seconds.",
    500: "An unexpected error; the detail names a reference for the server's log.",
    502: "An upstream service (GitHub, a model server) did not answer.",
    503: "The database is unavailable, or the server is busy with heavy work; retry after the given seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error statuses, each with the ``Problem`` body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": Problem, "description": _WHY[code]}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


# What any route may answer: an unreadable or oversized body, request validation, the database,
# the last resort.
COMMON = responses(400, 413, 422, 500, 503)


def json_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """:func:`responses` with the ``Problem`` body declared as JSON outright, for a route whose
    success is not JSON (an event stream): FastAPI would document a ``model`` under the route's
    own media type. Covers :data:`COMMON` too."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *COMMON}):
        out[code] = {"description": _WHY[code],
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}  # fmt: skip
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


# Every route but these reads an API key (or, for GitHub's webhook, a signature): 401.
PUBLIC = ("/healthz", "/api/presets", "/api/meta")


def document(app: FastAPI, extra: dict[tuple[str, str], dict[int, str | None]]) -> None:
    """Complete the served schema: 401 on every keyed route, and ``extra`` statuses (``None``:
    an error with the ``Problem`` body; a string: a success so described) on routes whose
    decorators live elsewhere. The ``Problem`` schema is referenced as ``COMMON`` defines it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # cached on the app: edited in place once
            for path, ops in schema["paths"].items():
                for method, op in ops.items():
                    codes = {**({401: None} if path not in PUBLIC else {}), **extra.get((method.upper(), path), {})}
                    for code, success in codes.items():
                        op["responses"].setdefault(str(code), {"description": success} if success else {
                            "description": _WHY[code], "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Problem"}}}})  # fmt: skip
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own handler echoes each bad input back; NaN or Infinity (Python's JSON parser
        # takes them) cannot be written as JSON, and a huge input need not travel back at all.
        items = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, exc: OverflowError):
        # BSON stores 64-bit integers: a field that passed validation can still be too large.
        return JSONResponse({"detail": [{"loc": ["body"], "msg": "a number in the request is too large to store "
                                         "(integers must fit in 64 bits, below 9223372036854775808)"}]},
                            status_code=422)  # fmt: skip

    @app.exception_handler(InvalidDocument)
    async def unstorable(request: Request, exc: InvalidDocument):
        return JSONResponse({"detail": [{"loc": ["body"], "msg": f"the request holds a value the database cannot store: {exc}"}]},
                            status_code=422)  # fmt: skip

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError):
        return JSONResponse({"detail": "the request nests too deeply to read"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        ref = secrets.token_hex(6)
        log.error("unhandled error on %s %s (reference %s)", request.method, request.url.path, ref, exc_info=exc)
        return JSONResponse({"detail": f"internal error (reference {ref}); the server's log has the details"},
                            status_code=500)  # fmt: skip


def deprecation_warnings(notes: list[str]) -> str:
    """A ``Warning`` header saying each deprecation, as Kubernetes' API server says its own
    (code 299, "miscellaneous persistent warning"; RFC 7234 5.5): clients that log response
    warnings show them without knowing our body."""
    return ", ".join('299 - "' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in notes)
