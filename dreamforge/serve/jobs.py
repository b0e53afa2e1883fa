"""Every finished job's model behind one endpoint: ``/jobs/{job_id}/v1/…`` answers Moondream
Station's API for that job's released model, as ``dreamforge serve JOB`` does for one.

This is what Modal's ``serve`` function runs (``modal_app``): a GPU web endpoint that scales to
zero and loads a model from the artifacts Volume on its first request. A Station client points
at ``https://…modal.run/jobs/JOB_ID/v1`` and sends the project's API key in
``X-Moondream-Auth`` (Moondream's client sends its key there); a job of another project is a
404, as in the API. At most ``max_models`` models stay loaded, the least recently used goes
first. ``reload`` (``Volume.reload``) is called once when a job's model is not on the mounted
Volume yet, since a container sees only the commits made before it started or last reloaded.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from dreamforge import auth
from dreamforge.serve.app import AUTH_HEADER, create_app
from dreamforge.serve.model import ServedModel, resolve
from dreamforge.settings import Settings
from dreamforge.store import JOBS, async_client


class JobsServer:
    def __init__(self, settings: Settings, *, reload: Callable[[], None] | None = None, max_models: int = 2) -> None:
        self.settings, self.reload, self.max_models = settings, reload, max_models
        self._apps: OrderedDict[str, Any] = OrderedDict()
        self._lock = asyncio.Lock()
        self._db = None

    @property
    def db(self):
        if self._db is None:  # created in the serving loop: the async client belongs to it
            self._db = async_client(self.settings.require_uri())[self.settings.db_name]
        return self._db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/", 3)  # "", "jobs", id, rest
        if len(parts) < 4 or parts[1] != "jobs" or not parts[2]:
            return await _error(send, 404, "use /jobs/JOB_ID/v1/… (a Moondream Station API per job)")
        job_id, rest = parts[2], "/" + parts[3]
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope.get("headers") or []}
        key = headers.get(AUTH_HEADER.lower(), "")
        pid = await auth.project_for_key(self.db, key) if key else None
        if pid is None:
            return await _error(send, 401, f"send the project's API key in the {AUTH_HEADER} header")
        doc = await self.db[JOBS].find_one({"_id": job_id, "project_id": pid}, {"status": 1})
        if doc is None:
            return await _error(send, 404, f"job {job_id} not found")
        if doc["status"] != "succeeded":
            return await _error(send, 409, f"job {job_id} is {doc['status']}; its model is served once it has succeeded")
        try:
            app = await self._app_for(job_id)
        except FileNotFoundError:
            return await _error(send, 503, f"job {job_id}: its model is not on the artifacts volume yet; retry shortly")
        prefix = f"/jobs/{job_id}"
        await app({**scope, "path": rest, "raw_path": rest.encode(), "root_path": scope.get("root_path", "") + prefix}, receive, send)

    async def _app_for(self, job_id: str):
        async with self._lock:  # one model loads at a time
            if job_id in self._apps:
                self._apps.move_to_end(job_id)
                return self._apps[job_id]
            out = str(self.settings.artifacts / job_id / "out")
            try:
                model_dir = resolve(out, self.settings.artifacts)
            except FileNotFoundError:
                if self.reload is None:
                    raise
                await asyncio.to_thread(self.reload)
                model_dir = resolve(out, self.settings.artifacts)
            served = await asyncio.to_thread(ServedModel, model_dir)
            while len(self._apps) >= self.max_models:
                self._apps.popitem(last=False)
            self._apps[job_id] = create_app(served)
            return self._apps[job_id]


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
