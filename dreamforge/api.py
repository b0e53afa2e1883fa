"""The HTTP API (FastAPI): submit, watch and cancel jobs; upload datasets; store rewards.

Every route but ``/healthz``, ``/api/presets`` and ``/api/meta`` needs ``Authorization: Bearer <API key>``;
a project sees only its own jobs, datasets and rewards, and anything else is a 404, so ids
from other tenants cannot even be probed. The same app runs under uvicorn locally and under
``@modal.asgi_app`` in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pymongo.errors import ConnectionFailure, PyMongoError

from dreamforge import auth, errors, push_outbox, queue
from dreamforge.lanes import lane
from dreamforge.routes_samples import router as samples_router
from dreamforge.schemas import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    HELD_STATUSES,
    REQUEUABLE_STATUSES,
    WAITING_STATUSES,
    DatasetView,
    JobPage,
    JobStatus,
    JobView,
    LogLine,
    MetricPoint,
    RewardIn,
    RewardTestIn,
    RewardTestResult,
    RewardView,
    TrainRequest,
)
from dreamforge.settings import Settings
from dreamforge.store import DATASETS, GRIDFS_BUCKET, JOBS, LOGS, METRICS, REWARDS, async_client, ensure_indexes_async
from dreamforge.submit import IdempotencyConflict, NotFound, check_reward, resolve_dataset, store_reward, submit
from dreamforge.webhooks import github_router
from pipeline.config import ConfigError
from pipeline.rewards.base import RewardError

log = logging.getLogger("dreamforge.api")

# Sequence numbers are stored as BSON 64-bit integers; a larger cursor cannot be compared.
SEQ_MAX = 2**63 - 1

JOB_FIELDS = {"config": 0, "infra_failures": 0}


def job_view(doc: dict[str, Any]) -> JobView:
    return JobView(
        jobId=doc["_id"], status=doc["status"], stage=doc.get("stage"), progress=doc.get("progress", 0.0),
        stages=doc["stages"], metrics=doc.get("metrics") or {}, error=doc.get("error"), source=doc.get("source") or {},
        preset=doc.get("preset"), task=doc.get("task", "detect"), attempt=doc.get("attempt", 0),
        created_at=doc["created_at"], updated_at=doc["updated_at"], finished_at=doc.get("finished_at"),
        result=doc.get("result"), cancel_requested=doc.get("cancel_requested", False), datasets=doc.get("datasets") or {},
    )  # fmt: skip


class BodyLimit:
    """Caps request bodies (413) while they stream, whatever Content-Length claims."""

    def __init__(self, app, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.settings.max_upload_bytes if scope["path"] == "/api/datasets" else self.settings.max_body_bytes
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


class _TooLarge(Exception):
    pass


async def _too_large(send, cap: int) -> None:
    body = json.dumps({"detail": f"request body over the {cap} byte limit"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


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


Project = Annotated[str, Depends(current_project)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = async_client(settings.require_uri(), timeout_ms=2000)
        app.state.db = app.state.client[settings.db_name]
        try:
            await ensure_indexes_async(app.state.db)
        except PyMongoError as e:  # start anyway: routes answer 503 until the database is back
            log.warning("database unavailable at start-up (%s); indexes will be created by the worker", e)
        outbox = push_outbox.start(app.state.db, settings)  # GitHub deliveries read while GitHub was away
        yield
        await push_outbox.stop(outbox)
        await app.state.client.close()

    app = FastAPI(
        title="DreamForge API", version="0.1.0", lifespan=lifespan,
        description="Fine-tune a vision-language model on your own images: submit a curriculum, watch it train, get a 4-bit model.",
        responses=errors.COMMON,
    )  # fmt: skip
    app.add_middleware(BodyLimit, settings=settings)
    errors.install(app)

    @app.exception_handler(PyMongoError)
    async def db_down(request: Request, exc: PyMongoError):
        if isinstance(exc, ConnectionFailure):
            return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                                headers={"Retry-After": "2"})  # fmt: skip
        raise exc

    def db(request: Request):
        return request.app.state.db


    async def own_job(request: Request, job_id: str, pid: str, projection: dict | None = None) -> dict[str, Any]:
        doc = await request.app.state.db[JOBS].find_one({"_id": job_id, "project_id": pid}, projection)
        if doc is None:
            raise HTTPException(404, f"job {job_id} not found")
        return doc

    @app.get("/healthz", tags=["meta"])
    async def healthz(request: Request):
        await db(request).command("ping")
        return {"ok": True, "db": "up"}

    @app.get("/api/presets", tags=["meta"])
    async def presets():
        from pipeline.config import load_preset, preset_names

        return {name: load_preset(name) for name in preset_names()}

    @app.get("/api/meta", tags=["meta"])
    async def meta():
        """The service's vocabulary, for clients that must not copy it (the dashboard, the Action):
        the curriculum's stages in order, the job statuses, and which are final, active (waiting
        or training), waiting (no worker holds them: a cancel ends them at once), held (waiting
        for a person's approval, not a worker) or requeuable."""
        from pipeline.stage_table import as_json

        return {"stages": as_json(), "statuses": [s.value for s in JobStatus],
                "final": list(FINAL_STATUSES), "active": list(ACTIVE_STATUSES),
                "waiting": list(WAITING_STATUSES), "held": list(HELD_STATUSES),
                "requeuable": list(REQUEUABLE_STATUSES)}  # fmt: skip

    @app.post("/api/train", status_code=201, tags=["jobs"])
    async def train(request: Request, body: TrainRequest, pid: Project,
                    idempotency_key: Annotated[str | None, Header(max_length=200)] = None):  # fmt: skip
        """Validate and enqueue a training job; answers its ``jobId``. The same
        ``Idempotency-Key`` with the same body returns the first job (200) instead of a second
        one; with a different body it is a 409."""
        try:
            doc, created = await submit(db(request), pid, body, idempotency_key=idempotency_key)
        except ConfigError as e:
            raise HTTPException(422, [{"loc": e_["loc"].split(".") if e_["loc"] else [], "msg": e_["msg"]}
                                      for e_ in e.errors]) from None  # fmt: skip
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        except IdempotencyConflict as e:
            raise HTTPException(409, str(e)) from None
        return JSONResponse({"jobId": doc["_id"], "status": doc["status"], "created": created},
                            status_code=201 if created else 200)  # fmt: skip

    @app.get("/api/train/status", response_model=JobView, tags=["jobs"], responses=errors.responses(404))
    async def status(request: Request, pid: Project, jobId: str = Query(...)):  # noqa: N803 — the seed's API name
        return job_view(await own_job(request, jobId, pid))

    @app.get("/api/jobs", response_model=JobPage, tags=["jobs"])
    async def jobs(request: Request, pid: Project, repo: str | None = None, branch: str | None = None,
                   status: str | None = None, limit: int = Query(50, ge=1, le=200), cursor: str | None = None):  # fmt: skip
        want: dict[str, Any] = {}
        if repo:
            want["repo"] = repo
        if branch:
            want["branch"] = branch
        statuses = set(status.split(",")) if status else None

        def keep(d: dict[str, Any]) -> bool:
            src = d.get("source") or {}
            return all(src.get(k) == v for k, v in want.items()) and (statuses is None or d["status"] in statuses)

        # One range on one indexed field per page (see store.py); filters run on bounded pages.
        # Both bounds lie inside this project's keys whatever the cursor says.
        lower, upper = f"{pid}|", f"{pid}|~"
        if cursor is not None:
            if not queue.is_list_key(cursor, pid):
                raise HTTPException(422, [{"loc": ["query", "cursor"],
                                           "msg": "not a cursor of this project's job list; pass next_cursor back unchanged"}])  # fmt: skip
            upper = cursor
        docs: list[dict[str, Any]] = []
        for _ in range(20):
            page = await db(request)[JOBS].find({"list_key": {"$gt": lower, "$lt": upper}}, JOB_FIELDS) \
                .sort("list_key", -1).limit(200).to_list(200)
            docs += [d for d in page if keep(d)]
            if len(page) < 200 or len(docs) >= limit:
                break
            upper = page[-1]["list_key"]
        docs = docs[:limit]
        nxt = docs[-1]["list_key"] if len(docs) == limit else None
        return JobPage(jobs=[job_view(d) for d in docs], next_cursor=nxt)

    @app.get("/api/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=errors.responses(404))
    async def get_job(request: Request, job_id: str, pid: Project):
        return job_view(await own_job(request, job_id, pid))

    async def tail(request: Request, coll: str, job_id: str, after: int, limit: int, stage: str | None = None):
        """Rows with ``seq > after``: chunks are keyed by their last seq, so ``seq > after``
        selects exactly the chunks holding newer rows; read a few chunks at a time."""
        rows: list[dict[str, Any]] = []
        cursor_seq = after
        while len(rows) < limit:
            n_chunks = max(1, min(50, limit // queue.CHUNK + 2))
            chunks = await db(request)[coll].find({"job_id": job_id, "seq": {"$gt": cursor_seq}}, {"rows": 1, "seq": 1}) \
                .limit(n_chunks).to_list(n_chunks)
            if not chunks:
                break
            got = queue.read_rows(chunks, cursor_seq, 10**9)
            cursor_seq = max(c["seq"] for c in chunks)
            rows += [r for r in got if stage is None or r.get("stage") == stage]
            if len(chunks) < n_chunks:
                break
        return rows[:limit]

    @app.get("/api/jobs/{job_id}/logs", tags=["jobs"], responses=errors.responses(404))
    async def logs(request: Request, job_id: str, pid: Project, after: int = Query(0, ge=0, le=SEQ_MAX),
                   limit: int = Query(1000, ge=1, le=5000),
                   last: int | None = Query(None, ge=1, le=5000, description="Only the last N lines.")):  # fmt: skip
        """Log lines with ``seq > after``, oldest first; pass the last ``seq`` back to follow."""
        doc = await own_job(request, job_id, pid, {"_id": 1, "log_seq": 1})
        if last:  # sequence numbers are dense per job, so the last N lines start after log_seq - N
            after = max(after, int(doc.get("log_seq", 0)) - last)
        rows = await tail(request, LOGS, job_id, after, limit)
        return {"lines": [LogLine(**r).model_dump() for r in rows], "next": rows[-1]["seq"] if rows else after}

    @app.get("/api/jobs/{job_id}/logs/stream", tags=["jobs"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}, **errors.responses(404)})  # fmt: skip
    async def logs_stream(request: Request, job_id: str, pid: Project, after: int = Query(0, ge=0, le=SEQ_MAX)):
        """Server-sent events: one ``log`` event per line, a ``status`` event on each change,
        and ``end`` when the job has finished and every line was sent."""
        await own_job(request, job_id, pid, {"_id": 1})

        async def events():
            seq, last_status = after, None
            while True:
                rows = await tail(request, LOGS, job_id, seq, 1000)
                for r in rows:
                    seq = r["seq"]
                    yield f"id: {seq}\nevent: log\ndata: {json.dumps(LogLine(**r).model_dump())}\n\n"
                doc = await db(request)[JOBS].find_one({"_id": job_id}, {"status": 1, "progress": 1, "stage": 1})
                state = (doc["status"], doc.get("progress"), doc.get("stage"))
                if state != last_status:
                    last_status = state
                    yield f"event: status\ndata: {json.dumps({'status': state[0], 'progress': state[1], 'stage': state[2]})}\n\n"
                if doc["status"] in FINAL_STATUSES and not rows:
                    yield "event: end\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                if not rows:
                    await asyncio.sleep(0.5)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/api/jobs/{job_id}/metrics", tags=["jobs"], responses=errors.responses(404))
    async def metrics(request: Request, job_id: str, pid: Project, after: int = Query(0, ge=0, le=SEQ_MAX), stage: str | None = None,
                      limit: int = Query(5000, ge=1, le=20000)):  # fmt: skip
        """Metric points (loss, reward, lr … per step) with ``seq > after``; the job's latest
        metrics and final per-stage evaluation are on the job itself."""
        await own_job(request, job_id, pid, {"_id": 1})
        rows = await tail(request, METRICS, job_id, after, limit, stage)
        return {"points": [MetricPoint(**r).model_dump() for r in rows], "next": rows[-1]["seq"] if rows else after}

    @app.post("/api/jobs/{job_id}/cancel", status_code=202, response_model=JobView, tags=["jobs"], responses=errors.responses(404))
    async def cancel(request: Request, job_id: str, pid: Project):
        """A queued job (or one awaiting approval) is cancelled at once; a running one stops within seconds."""
        await queue.cancel(db(request), {"_id": job_id, "project_id": pid}, "cancelled by the user")
        return job_view(await own_job(request, job_id, pid))

    @app.post("/api/jobs/{job_id}/requeue", response_model=JobView, tags=["jobs"], responses=errors.responses(404, 409))
    async def requeue(request: Request, job_id: str, pid: Project):
        """Put a dead, failed or cancelled job back in the queue; its finished stages are kept."""
        doc = await own_job(request, job_id, pid)
        if doc["status"] not in REQUEUABLE_STATUSES:
            raise HTTPException(409, f"job {job_id} is {doc['status']}; only dead, failed or cancelled jobs can be requeued")
        await db(request)[JOBS].update_one({"_id": job_id, "project_id": pid, "status": doc["status"]},
                                           queue.requeue_update(doc, queue.now()))  # fmt: skip
        return job_view(await own_job(request, job_id, pid))

    # -- datasets ------------------------------------------------------------------------
    @app.post("/api/datasets", status_code=201, response_model=DatasetView, tags=["datasets"])
    async def upload_dataset(request: Request, pid: Project, name: str = Query(..., max_length=100),
                             task: str = Query("detect")):  # fmt: skip
        """Upload a COCO dataset as a ZIP (the raw request body). It is checked like any
        hostile archive (zip-slip, symlinks, bombs, images) before anything is stored."""
        with tempfile.TemporaryDirectory(prefix="df-upload-") as tmp:  # removed on every path, failures too
            path = Path(tmp) / "upload.zip"
            size = 0
            with path.open("wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    fh.write(chunk)
            # Uncompressed, a dataset may be twice the upload limit (images barely compress; the
            # ratio cap in extract_zip catches bombs below this).
            summary = await asyncio.to_thread(_validate_zip, path, task, f"{name}.zip", 2 * settings.max_upload_bytes)
            from gridfs import AsyncGridFSBucket

            bucket = AsyncGridFSBucket(db(request), GRIDFS_BUCKET)
            with path.open("rb") as fh:
                gid = await bucket.upload_from_stream(f"{pid}/{name}.zip", fh, metadata={"project_id": pid, "name": name})
        doc = {"_id": "ds_" + secrets.token_hex(8), "project_id": pid, "name": name, "gridfs_id": str(gid),
               "created_at": queue.now(), "size": size, **summary}  # fmt: skip
        await db(request)[DATASETS].insert_one(doc)
        return DatasetView(id=doc["_id"], **{k: doc[k] for k in ("name", "created_at", "size", "images", "categories", "warnings")})

    @app.get("/api/datasets", response_model=list[DatasetView], tags=["datasets"])
    async def list_datasets(request: Request, pid: Project):
        docs = await db(request)[DATASETS].find({"project_id": pid}).sort("created_at", -1).to_list(200)
        return [DatasetView(id=d["_id"], **{k: d[k] for k in ("name", "created_at", "size", "images", "categories", "warnings")})
                for d in docs]  # fmt: skip

    # -- rewards -------------------------------------------------------------------------
    @app.post("/api/rewards", status_code=201, response_model=RewardView, tags=["rewards"], responses=errors.responses(429))
    async def create_reward(request: Request, body: RewardIn, pid: Project):
        """Store a JavaScript reward after checking it compiles, defines ``reward`` and returns
        a finite number on a sample; a broken reward is a 422 naming the line."""
        try:
            rid = await store_reward(db(request), pid, body.name, body.source)
        except RewardError as e:
            raise HTTPException(422, [_reward_problem(e)]) from None
        doc = await db(request)[REWARDS].find_one({"_id": rid})
        return RewardView(id=rid, name=body.name, created_at=doc["created_at"], size=len(body.source))

    @app.post("/api/rewards/test", response_model=RewardTestResult, tags=["rewards"], responses=errors.responses(404, 429))
    async def test_reward(request: Request, body: RewardTestIn, pid: Project):
        """Run a reward (JavaScript source, a stored ``rw_…`` id, or a built-in name) on ground
        truths of a dataset against exact, shifted, missing and extra predictions: the score
        table a user checks before paying for a GPU job. Errors are a 422 naming the line."""
        from pipeline.data.errors import DataError
        from pipeline.rewards.probe import dataset_targets, load_any_reward, probe_reward

        source, name = body.source, "reward.js"
        if body.reward and not body.reward.startswith("rw_"):
            try:  # the same gate as a job's reward: never a .js path on the server (issue 14, 2)
                await check_reward(db(request), pid, body.reward)
            except ConfigError as e:
                raise HTTPException(422, [{"loc": ["reward"], "msg": x["msg"]} for x in e.errors]) from None
        if body.reward and body.reward.startswith("rw_"):
            doc = await db(request)[REWARDS].find_one({"_id": body.reward, "project_id": pid}, {"source": 1, "name": 1})
            if doc is None:
                raise HTTPException(404, f"reward {body.reward} not found")
            source, name = doc["source"], doc["name"]
        try:
            uri = await resolve_dataset(db(request), pid, body.dataset)
        except ConfigError as e:
            raise HTTPException(422, [{"loc": ["dataset"], "msg": str(e)}]) from None
        except NotFound as e:
            raise HTTPException(404, str(e)) from None

        def run() -> list[dict[str, Any]]:
            targets = dataset_targets(uri, body.task, body.samples)
            if not targets:
                raise DataError(f"{body.dataset}: no labelled images to test the reward on")
            if source is not None:
                from pipeline.rewards.js import JsReward, check_reward

                reward = JsReward(source, name)
                check_reward(reward, body.task)
            else:
                reward = load_any_reward(body.reward or "default", body.task)
            try:
                return probe_reward(reward, targets)
            finally:
                if hasattr(reward, "close"):
                    reward.close()

        try:
            rows = await lane("probes").run(pid, run)
        except RewardError as e:
            raise HTTPException(422, [_reward_problem(e)]) from None
        except DataError as e:
            raise HTTPException(422, [{"loc": ["dataset"], "msg": str(e)}]) from None
        except (KeyError, ValueError) as e:
            raise HTTPException(422, [{"loc": ["reward"], "msg": str(e).strip("'")}]) from None
        return RewardTestResult(reward=body.reward or name, samples=rows[0]["n"], cases=rows)

    @app.get("/api/rewards", response_model=list[RewardView], tags=["rewards"])
    async def list_rewards(request: Request, pid: Project):
        docs = await db(request)[REWARDS].find({"project_id": pid}).sort("created_at", -1).to_list(200)
        return [RewardView(id=d["_id"], name=d["name"], created_at=d["created_at"], size=len(d["source"])) for d in docs]

    # GitHub: webhooks, approvals, previews (webhooks.py); the statuses its routes answer between them
    app.include_router(github_router(settings), responses={**errors.responses(403, 404, 409, 502),
                       200: {"description": "Done, or a replayed delivery's job."}, 202: {"description": "Skipped: why."}})  # fmt: skip
    app.include_router(samples_router)
    errors.document(app, {("POST", "/api/train"): {200: "The job this Idempotency-Key already created.", 404: None, 409: None,
                                                      429: None}})
    return app


def _reward_problem(e: RewardError) -> dict[str, Any]:
    return {"loc": ["source"], "msg": str(e), "line": e.line, "column": e.column}


def _validate_zip(path: Path, task: str, label: str, max_bytes: int) -> dict[str, Any]:
    """Open the upload as a job will (safe extraction, every image checked), with bounded disk
    and memory: extracted beside the upload (so removed with it, whatever happens), at most
    ``max_bytes`` uncompressed, images checked one at a time and none kept. Messages name the
    upload (``label``) and its members, never a server path; 422 on failure."""
    from pipeline.data.coco import load_dataset
    from pipeline.data.errors import DataError
    from pipeline.data.sources import extract_zip

    tmp = str(path.parent)

    def shown(message: str) -> str:  # the last line of defence: no message may show our temp folder
        return message.replace(tmp + "/", "").replace(tmp, label)[:2000]

    try:
        folder = extract_zip(path, label=label, dest_root=path.parent / "extracted", max_bytes=max_bytes)
        ds = load_dataset(folder, task, label=label, keep_images=False)
    except DataError as e:
        raise HTTPException(422, f"upload rejected: {shown(str(e))}") from None
    n = sum(len(v) for v in ds.splits.values())
    return {"images": n, "categories": list(ds.categories), "warnings": [shown(str(w)) for w in ds.warnings[:50]]}


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
