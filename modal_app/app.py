"""DreamForge on Modal: `modal deploy modal_app/app.py`.

Serverless GPUs per curriculum stage, nothing running while idle. Read top to bottom: the image
(the project's own dependencies, CUDA torch), the Volumes and Secrets, one GPU function per
stage, the orchestrator that drives a job's stages, the scheduled sweep, and the API as a web
endpoint. Every function is a thin wrapper over `dreamforge` and `pipeline`; this module
imports neither torch nor the service at import time, so it loads on any CPU machine.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import modal

from dreamforge.executors.modal_limits import DEFAULT_GPU, STAGE_RETRIES, STAGE_TIMEOUT_S, STARTUP_TIMEOUT_S, stage_resources

MINUTES = 60  # seconds
HOURS = 60 * MINUTES

APP_NAME = "dreamforge"
ROOT = Path(__file__).resolve().parents[1]

# ## Images
# The project's own dependencies from pyproject.toml, so the containers run what the tests ran,
# split in two. The GPU stages get CUDA torch and the training stack; the CPU functions (`web`,
# `orchestrate`, `sweep`) get the service without it, so `web` starts in seconds, well inside
# GitHub's 10 s webhook deadline (tests/test_modal_app.py runs their code with the training
# stack unimportable). Neither gets the embedded database or the dashboard (local only), nor
# `modal`: Modal mounts its own client into every container (modal 1.6.4, modal/_functions.py,
# `_get_client_mount`). PyPI's Linux torch wheel is the CUDA build (the range in pyproject admits
# it). Read where the images are built: inside a container pyproject.toml is not there.
TORCH = "torch==2.13.0"
NOT_DEPLOYED = ("secantusdb", "streamlit", "pandas", "modal")
TRAINING = ("torch", "transformers", "trl", "accelerate", "peft", "bitsandbytes", "datasets", "safetensors", "tokenizers")


def _name(requirement: str) -> str:
    return requirement.replace(">", "=").replace("<", "=").replace("[", "=").split("=")[0].strip().lower()


def project_dependencies(pyproject: Path = ROOT / "pyproject.toml", *, training: bool = True) -> list[str]:
    """The requirements an image installs: the GPU one's (``training``) or the CPU one's."""
    if not pyproject.exists():
        return []
    project = tomllib.loads(pyproject.read_text())["project"]
    left_out = NOT_DEPLOYED + (("torch",) if training else TRAINING)  # torch: pinned on its own
    return [d for d in project["dependencies"] if _name(d) not in left_out]


ENV = {
    "DREAMFORGE_HOME": "/data",  # Settings.artifacts = /data/artifacts, the artifacts Volume
    "DREAMFORGE_CACHE": "/hf/datasets",  # remote datasets, cached by version beside the models
    "DREAMFORGE_EXECUTOR": "modal",
    "DREAMFORGE_MODAL_APP": APP_NAME,
}
SOURCE = ("pipeline", "dreamforge", "modal_app")
cpu_image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(*project_dependencies(training=False))
    .env(ENV)
    .add_local_python_source(*SOURCE, ignore=["**/__pycache__/**"])
)
image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(TORCH)
    .uv_pip_install(*project_dependencies())
    .env({
        **ENV,
        "HF_HOME": "/hf",
        "HF_HUB_OFFLINE": "0",  # pipeline.run defaults to offline; Modal reaches the hub
        # Modal gives a preempted container ~30 s: checkpoint every 5 minutes so a restart
        # loses at most that (pipeline/stages/common.py); GRPO also saves every 25 steps.
        "DREAMFORGE_CHECKPOINT_S": "300",
        "TOKENIZERS_PARALLELISM": "false",
        # The stage's own output (and `accelerate launch`'s children's) goes to Modal's logs as
        # well as to its log file on the Volume (dreamforge/executors/local.py).
        "DREAMFORGE_ECHO_STAGE_LOG": "1",
    })  # fmt: skip
    .add_local_python_source(*SOURCE, ignore=["**/__pycache__/**"])
)

# ## Volumes and Secrets
# Artifacts (stage checkpoints, models, events) outlive any container; the Hugging Face cache
# saves re-downloading a 3B model on every cold start. Both are created as v2 Volumes: no limit on
# the number of files (v1 stops at 500k: every job writes checkpoints) and many concurrent
# writers (v1 recommends about 5; every running stage writes). An existing v1 Volume of the same
# name is used as it is (see the README to migrate).
VOLUME_VERSION = 2
artifacts = modal.Volume.from_name("dreamforge-artifacts", create_if_missing=True, version=VOLUME_VERSION)
hf_cache = modal.Volume.from_name("dreamforge-hf-cache", create_if_missing=True, version=VOLUME_VERSION)
ARTIFACTS_PATH = "/data/artifacts"
VOLUMES = {ARTIFACTS_PATH: artifacts, "/hf": hf_cache}

mongodb = modal.Secret.from_name("dreamforge-mongodb", required_keys=["MONGODB_URI"])
# The GitHub App (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY, GITHUB_APP_WEBHOOK_SECRET), or the
# single-tenant fallback GITHUB_TOKEN: which keys it holds is checked by Settings, not here.
github = modal.Secret.from_name("dreamforge-github")
huggingface = modal.Secret.from_name("dreamforge-huggingface", required_keys=["HF_TOKEN"])

app = modal.App(APP_NAME, image=image)

# ## One GPU function per stage
# Preemption restarts the same input at once (initial_delay 0) in a fresh container
# (single_use_containers); the stage resumes from its newest checkpoint on the Volume. Errors the user
# must fix are returned, not raised, so they are never retried. Timeouts, retries and the startup
# limit come from dreamforge/executors/modal_limits.py, which the orchestrator polls against.
RETRIES = modal.Retries(max_retries=STAGE_RETRIES, initial_delay=0.0, backoff_coefficient=1.0)


def stage_function(stage: str):
    return app.function(gpu=DEFAULT_GPU[stage], **stage_resources(DEFAULT_GPU[stage]), timeout=int(STAGE_TIMEOUT_S[stage]),
                        startup_timeout=int(STARTUP_TIMEOUT_S), retries=RETRIES, volumes=VOLUMES,
                        secrets=[mongodb, huggingface], single_use_containers=True)  # fmt: skip


def run_stage(stage: str, job_id: str, token: str, config: dict[str, Any], reward_source: str | None,
              gpu: str | None) -> dict[str, Any]:  # fmt: skip
    # On Modal the body commits the artifacts Volume once, after the stage closed its files; Modal
    # commits in the background meanwhile (dreamforge/executors/modal_stage.py, commit_volume).
    from dreamforge.executors.modal_stage import run_stage as body

    if modal.is_local():
        return body(job_id, stage, token, config, reward_source, gpu)
    return body(job_id, stage, token, config, reward_source, gpu, call_id=modal.current_function_call_id(),
                commit=artifacts.commit)  # fmt: skip


@stage_function("warm_start")
def warm_start(job_id: str, token: str, config: dict, reward_source: str | None = None, gpu: str | None = None) -> dict:
    return run_stage("warm_start", job_id, token, config, reward_source, gpu)


@stage_function("domain")
def domain(job_id: str, token: str, config: dict, reward_source: str | None = None, gpu: str | None = None) -> dict:
    return run_stage("domain", job_id, token, config, reward_source, gpu)


@stage_function("reward")
def reward(job_id: str, token: str, config: dict, reward_source: str | None = None, gpu: str | None = None) -> dict:
    return run_stage("reward", job_id, token, config, reward_source, gpu)


@stage_function("evaluate")
def evaluate(job_id: str, token: str, config: dict, reward_source: str | None = None, gpu: str | None = None) -> dict:
    return run_stage("evaluate", job_id, token, config, reward_source, gpu)


# ## The orchestrator
# A CPU function spawned per new job: the ordinary worker with the Modal executor, in burst
# mode (claims jobs until none is ready, then exits). Its timeout covers a whole job; if it
# dies, the sweep reaps the job's lease and spawns another, which adopts the running stage call.
# While it runs it posts its jobs' commit statuses and pull request comments (the worker's
# GitHub outbox, dreamforge/github/status.py), as `dreamforge worker` does locally.
@app.function(image=cpu_image, timeout=24 * HOURS, retries=modal.Retries(max_retries=3, initial_delay=5.0),
              volumes={ARTIFACTS_PATH: artifacts}, secrets=[mongodb, github])  # fmt: skip
def orchestrate() -> int:
    from dreamforge.executors.modal_executor import ModalExecutor
    from dreamforge.worker import Worker

    reload = artifacts.reload if not modal.is_local() else None
    return run_jobs(Worker(executor=ModalExecutor(reload=reload)))


def run_jobs(worker) -> int:
    """Run ready jobs until none is left, posting to GitHub meanwhile; returns how many ran."""
    from dreamforge.github.status import syncing

    runs = 0
    with syncing(worker.db, worker.settings):
        while worker.run_once():
            runs += 1
    return runs


# ## The sweep
# Every minute: return jobs whose orchestrator stopped renewing its lease to the queue, read the
# GitHub deliveries that waited for GitHub (the API that stored them may be scaled to zero), spawn
# an orchestrator for every ready job (requeued, backed off, missed or just read), post due commit
# statuses and pull request comments, and delete intermediate checkpoints and datasets of jobs
# finished longer ago than the retention, and cached datasets no job has read for as long.
SPAWN_AT_MOST = 20


@app.function(image=cpu_image, schedule=modal.Period(minutes=1), timeout=10 * MINUTES,
              volumes={ARTIFACTS_PATH: artifacts, "/hf": hf_cache}, secrets=[mongodb, github])  # fmt: skip
def sweep() -> dict[str, Any]:
    on_modal = not modal.is_local()
    return sweep_once(spawn=orchestrate.spawn if on_modal else None, volumes=(artifacts, hf_cache) if on_modal else ())


def sweep_once(spawn=None, volumes=()) -> dict[str, Any]:
    """The sweep's body; ``spawn`` starts one orchestrator, ``volumes`` are the mounted Volumes
    (the artifacts and the dataset cache; none off Modal)."""
    from dreamforge.github import push_outbox, status
    from dreamforge.jobs import queue
    from dreamforge.settings import Settings
    from dreamforge.store import JOBS, client
    from dreamforge.worker import cleanup_temporary

    settings = Settings()
    with client(settings.require_uri()) as c:
        db = c[settings.db_name]
        reaped = queue.reap(db, limit=settings.infra_retries)
        resolved = push_outbox.drain(settings)
        ready = db[JOBS].count_documents({"queue_key": {"$lte": queue.queue_key(queue.now(), "~")}})
        spawned = min(ready, SPAWN_AT_MOST)
        for _ in range(spawned if spawn else 0):
            spawn()
        posted = status.sync_once(db, settings)
        for volume in volumes:
            volume.reload()
        removed = cleanup_temporary(settings, db)
        for volume in volumes if removed else ():
            volume.commit()
    return {"reaped": reaped, "resolved": resolved, "ready": ready, "spawned": spawned, "github": posted,
            "removed": removed}


# ## The API
# The same FastAPI app as `dreamforge up`, as a web endpoint. A request that queues a job
# spawns an orchestrator for it at once instead of waiting for the sweep. It reads artifacts
# through the Volume's API rather than a mount: it sees each commit at once, with no reload
# (which would fail while another request holds a file open).
QUEUEING = ("/api/train", "/api/webhooks/", "/requeue")


def spawn_on_queue(api, spawn) -> None:
    """After a successful POST that may have queued a job, call ``spawn()``."""

    @api.middleware("http")
    async def _spawn(request, call_next):
        response = await call_next(request)
        path = request.url.path
        if request.method == "POST" and response.status_code < 300 and any(q in path for q in QUEUEING):
            await spawn()
        return response


def configure_web(api, spawn, read_file, listdir) -> None:
    """The API as ``web`` serves it: queueing spawns ``spawn()``, and artifacts (a job's held-out
    samples, its downloads) are read and listed with ``read_file`` and ``listdir``
    (``Volume.read_file.aio``, ``Volume.listdir.aio``): ``web`` mounts no Volume."""
    from dreamforge.api.artifacts import VolumeStore

    spawn_on_queue(api, spawn)
    api.state.artifact_store = VolumeStore(read_file, listdir)


# One container stays warm (min_containers=1): a cold start would take several seconds of GitHub's
# 10 s webhook deadline. Its cost is in the README (Modal, "What it costs").
WEB_WARM_CONTAINERS = 1


@app.function(image=cpu_image, secrets=[mongodb, github], min_containers=WEB_WARM_CONTAINERS, scaledown_window=5 * MINUTES)
@modal.concurrent(max_inputs=100)
@modal.asgi_app()
def web():
    import os

    from dreamforge.api.app import create_app

    try:  # "Try it" asks the GPU endpoint above, with the caller's key
        os.environ.setdefault("DREAMFORGE_SERVE_URL", serve.get_web_url() or "")
    except Exception:  # noqa: BLE001 — without it, Try it says the model is not here to serve
        pass
    api = create_app()
    configure_web(api, orchestrate.spawn.aio, artifacts.read_file.aio, artifacts.listdir.aio)
    return api


# ## Serving the trained models
# Moondream Station's API for every finished job, at `/jobs/JOB_ID/v1` of this endpoint (the
# project's API key in X-Moondream-Auth): a GPU web endpoint that scales to zero, loading a job's
# released model from the artifacts Volume on its first request (dreamforge/serve/jobs.py). The
# dashboard's "Try it" goes through it (`web` sets DREAMFORGE_SERVE_URL to its URL).
SERVE_GPU = "L4"


@app.function(gpu=SERVE_GPU, **stage_resources(SERVE_GPU), volumes={ARTIFACTS_PATH: artifacts}, secrets=[mongodb],
              scaledown_window=5 * MINUTES, startup_timeout=int(STARTUP_TIMEOUT_S), timeout=HOURS)  # fmt: skip
@modal.concurrent(max_inputs=32)  # concurrent requests share a batched forward pass (dreamforge/serve/model.py)
@modal.asgi_app()
def serve():
    from dreamforge.serve.jobs import JobsServer
    from dreamforge.settings import Settings

    return JobsServer(Settings(), reload=None if modal.is_local() else artifacts.reload)


@app.local_entrypoint()
def main() -> None:
    """`modal run modal_app/app.py`: one sweep now (reap, spawn, clean up) and its report."""
    print(sweep.remote())  # noqa: T201 — a command a person types
