"""The service's schemas over the pipeline's curriculum config: one pydantic model per concept,
shared by the API, the CLI, the worker and the documents in MongoDB."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import STAGES


class JobStatus(StrEnum):
    """A job's state; the one spelling of each (``GET /api/meta`` publishes them to clients)."""

    AWAITING_APPROVAL = "awaiting_approval"  # a fork's pull request, held (not claimable) until a member approves it
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # out of infrastructure retries (dead-lettered)
    PAUSED = "paused"  # at a spending cap: its stage checkpointed; raising the cap resumes it (jobs/budgets.py)


# A final job never changes again (unless requeued); an active one is waiting or training.
FINAL_STATUSES: tuple[JobStatus, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DEAD)
ACTIVE_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s not in FINAL_STATUSES)
# Not claimed by a worker yet: a cancel ends these at once (a running job is asked to stop).
WAITING_STATUSES: tuple[JobStatus, ...] = (JobStatus.AWAITING_APPROVAL, JobStatus.QUEUED, JobStatus.PAUSED)
# Waiting for a person, not a worker: nothing changes until someone approves, raises a cap (or cancels).
HELD_STATUSES: tuple[JobStatus, ...] = (JobStatus.AWAITING_APPROVAL, JobStatus.PAUSED)
# What POST /api/jobs/{id}/requeue puts back in the queue (a succeeded job is done).
REQUEUABLE_STATUSES: tuple[JobStatus, ...] = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)

StageStatus = Literal["pending", "running", "done", "failed", "skipped", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobSource(_Strict):
    """Where a job came from: a git push (GitHub Action / webhook), the CLI, the dashboard."""

    kind: Literal["api", "cli", "dashboard", "github"] = "api"
    repo: str | None = None
    branch: str | None = None
    sha: str | None = None
    pr: int | None = Field(None, ge=1, le=2**53)  # stored in BSON: an int64 at most
    run_id: str | None = None
    default_branch: str | None = Field(None, max_length=255, description="The repository's default branch, as the push "
                                       "names it: the base a branch's preview is gated against (github/gates.py).")  # fmt: skip


class Caps(_Strict):
    """Spending caps, of one job or of a whole project (its jobs' spend added up). At a cap the running
    stage checkpoints and the job is ``paused``; raising the cap resumes it where it stopped."""

    gpu_seconds: float | None = Field(None, gt=0, le=1e9, description="GPU-seconds (seconds × GPUs of each stage).")
    usd: float | None = Field(None, gt=0, le=1e7, description="Dollars at Modal's per-second GPU prices.")
    wall_minutes: float | None = Field(None, gt=0, le=1e6, description="Minutes of stages running (queue time is free).")
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Spend(BaseModel):
    """What a job (or project) has been billed: stages' running time, their GPUs and price."""

    seconds: float = 0.0
    gpu_seconds: float = 0.0
    usd: float = 0.0


class TrainRequest(_Strict):
    """``POST /api/train``: a full config, or a preset plus overrides, plus shortcuts."""

    config: dict[str, Any] | None = Field(None, description="A whole dreamforge.config.json.")
    preset: str | None = Field(None, description="Curriculum preset the config is merged over.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Deep-merged over preset and config.")
    dataset: str | None = Field(
        None, description="Dataset URI (s3://, gs://, https://, synthetic://, a server path) or a stored dataset id (ds_…)."
    )
    reward: str | None = Field(None, description="Built-in reward name or a stored reward id (rw_…).")
    reward_js: str | None = Field(None, description="Inline JavaScript defining reward(out, gt).", max_length=200_000)
    # Checked by the curriculum (warm_start.epochs …), which names the stage and refuses NaN and Infinity.
    epochs: list[float] | None = Field(None, max_length=3, description="Epochs of stage 1, 2 and the RL stage.")
    source: JobSource = Field(default_factory=JobSource)
    caps: Caps | None = Field(None, description="This job's spending caps (the project's apply as well).")


class StageState(BaseModel):
    status: StageStatus = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifact: str | None = None


class JobError(BaseModel):
    kind: Literal["user", "infra", "timeout", "cancelled"]
    message: str
    stage: str | None = None


class DatasetRef(BaseModel):
    """An uploaded dataset as a person knows it (its name) and as machines do (its id)."""

    id: str
    name: str


class JobView(BaseModel):
    """What ``GET /api/train/status`` and ``GET /api/jobs`` answer."""

    jobId: str
    status: JobStatus
    stage: str | None = None
    progress: float = 0.0
    stages: dict[str, StageState]
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: JobError | None = None
    source: JobSource
    preset: str | None = None
    task: str
    attempt: int = 0
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    github_error: str | None = Field(None, description="Why DreamForge stopped posting this job's commit status or "
                                     "pull request comment to GitHub (GitHub's refusal), if it did.")
    caps: Caps | None = None
    spend: Spend = Field(default_factory=Spend)
    warnings: list[str] = Field(default_factory=list, description="Old spellings the job's config was accepted "
                                "with, each saying the spelling to use instead (also in the job's log).")
    paused: dict[str, Any] | None = Field(None, description="Why and where a paused job stopped: reason, stage.")
    datasets: dict[str, DatasetRef] = Field(
        default_factory=dict,
        description="The uploaded datasets the job trains on, by config field (dataset, warm_start_dataset): "
        "the name the user gave each and its id (ds_…).",
    )


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = None


class ArtifactView(BaseModel):
    name: str = Field(description="model, model-4bit, adapter (a LoRA job's adapters), metrics.json or MODEL_CARD.md.")
    kind: Literal["model", "adapter", "file"]
    format: str | None = Field(None, description="A model's weight format: 16-bit, nf4 or fp4.")
    released: bool = Field(False, description="The model the evaluation chose to release.")
    bytes: int | None = Field(None, description="Its size; null where the API cannot see the artifacts' disk (Modal).")
    files: int | None = None


class ArtifactList(BaseModel):
    """``GET /api/jobs/{id}/artifacts``: what a finished job left, and how to use its model."""

    jobId: str
    artifacts: list[ArtifactView]
    serve: str = Field(description="The command that serves the released model over Moondream Station's API.")


class TryRequest(BaseModel):
    """``POST /api/jobs/{id}/try/{skill}``: Moondream Station's request body (``dreamforge serve``
    answers it), plus which of the job's models to ask."""

    image_url: str = Field(max_length=20 * 1024 * 1024, description="The image as a data URL: data:image/png;base64,…")
    object: str | None = Field(None, max_length=200, description="detect/point/segment: a category name; none for all.")
    settings: dict[str, int] | None = Field(None, description='detect: {"max_objects": N}.')
    length: str | None = Field(None, max_length=20, description="caption: normal or short.")
    format: Literal["release", "full", "4bit"] = Field("release", description="The released model, or the full or 4-bit one.")


class LogLine(BaseModel):
    seq: int
    t: float
    level: str = "info"
    stage: str | None = None
    message: str


class MetricPoint(BaseModel):
    seq: int
    t: float
    stage: str
    step: int
    values: dict[str, float]


class RewardIn(_Strict):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\- ]+$")
    source: str = Field(..., min_length=1, max_length=200_000)


class RewardTestIn(_Strict):
    """``POST /api/rewards/test``: a reward to try on a dataset's ground truths."""

    source: str | None = Field(None, max_length=200_000, description="JavaScript defining reward(out, gt).")
    reward: str | None = Field(None, description="A stored reward id (rw_…) or a built-in name, when no source is given.")
    dataset: str = Field(..., description="Dataset URI or stored dataset id (ds_…).")
    task: Literal["detect", "segment", "keypoints", "caption"] = "detect"
    samples: int = Field(8, ge=1, le=256)


class RewardCase(BaseModel):
    case: str
    n: int
    mean: float
    min: float
    max: float
    std: float


class RewardTestResult(BaseModel):
    reward: str
    samples: int
    cases: list[RewardCase]


class RewardView(BaseModel):
    id: str
    name: str
    created_at: datetime
    size: int


class DatasetView(BaseModel):
    id: str
    name: str
    created_at: datetime
    size: int
    images: int
    categories: list[str]
    warnings: list[str] = Field(default_factory=list)


def new_stages() -> dict[str, dict[str, Any]]:
    return {s: StageState().model_dump() for s in STAGES}


class ErrorItem(BaseModel):
    """One problem of a request: where (``loc``: body / query / config field path) and what."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int] = Field(default_factory=list)
    msg: str
    type: str | None = None
    line: int | None = Field(None, description="Line of a reward's source, when the problem is in it.")
    column: int | None = None


class Problem(BaseModel):
    """Every error answer: ``detail`` is one sentence, or a list of problems each naming its field."""

    detail: str | list[ErrorItem]


class PreflightIn(_Strict):
    """``POST /api/preflight``: the curriculum a ``POST /api/train`` would get, checked without training."""

    config: dict[str, Any] | None = Field(None, description="A whole dreamforge.config.json.")
    preset: str | None = Field(None, description="Curriculum preset the config is merged over.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Deep-merged over preset and config.")
    dataset: str | None = Field(None, description="Dataset URI or stored dataset id (ds_…), instead of the config's.")
    reward: str | None = Field(None, description="Built-in reward name or a stored reward id (rw_…).")
    samples: int = Field(32, ge=1, le=256, description="Ground truths the reward is tried on.")


class PreflightFinding(BaseModel):
    check: str
    severity: Literal["info", "warning", "error"]
    message: str
    fix: str


class PreflightReport(BaseModel):
    """What ``dreamforge preflight --json`` prints: findings (errors first), dataset health, the
    reward's scores on perturbed ground truth, and each stage's estimated time and price."""

    ok: bool = Field(description="No finding is an error.")
    errors: int
    findings: list[PreflightFinding]
    dataset: dict[str, Any]
    reward: dict[str, Any] | None
    cost: dict[str, Any]
