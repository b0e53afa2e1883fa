"""A job document as the API shows it (``JobView``): internal fields never leave the database."""

from __future__ import annotations

from typing import Any

from dreamforge.schemas import JobView

JOB_FIELDS = {"config": 0, "infra_failures": 0, "reward_source": 0}  # what a job view never shows


def job_view(doc: dict[str, Any]) -> JobView:
    return JobView(
        jobId=doc["_id"], status=doc["status"], stage=doc.get("stage"), progress=doc.get("progress", 0.0),
        stages=doc["stages"], metrics=doc.get("metrics") or {}, error=doc.get("error"), source=doc.get("source") or {},
        preset=doc.get("preset"), task=doc.get("task", "detect"), attempt=doc.get("attempt", 0),
        created_at=doc["created_at"], updated_at=doc["updated_at"], finished_at=doc.get("finished_at"),
        result=doc.get("result"), cancel_requested=doc.get("cancel_requested", False),
        github_error=doc.get("github_error"), datasets=doc.get("datasets") or {},
        caps=doc.get("caps"), spend=doc.get("spend") or {}, paused=doc.get("paused"),
        warnings=doc.get("warnings") or [],
    )  # fmt: skip
