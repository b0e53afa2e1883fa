"""Preview gates against the default branch: the service's half of ``pipeline.gate``.

A branch's preview job is compared with the newest released model of its repository's default
branch (``main`` unless the push named another). Three moments:

- a job of any branch succeeds: :func:`record_release` notes it as its branch's newest release
  (in the branch's preview document, so finding main's release is one ``_id`` lookup);
- a branch's job is prepared for its stages: :func:`baseline_for` hands the evaluate stage
  main's released model, its held-out metrics and the fingerprint of the set they came from
  (the stage reuses them on the same set and scores the model again on another);
- it succeeds: :func:`judge` turns both numbers into the gate's verdict, which the commit status,
  the PR comment, the API and the Action's outputs show.

The gate's settings (``GateConfig``) are the project's (``PUT /api/gate``), else the ``gate``
section of the default branch's released config (never the branch's own: a branch must not
lower its own bar), else the defaults.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from dreamforge.store import JOBS, PREVIEWS, PROJECTS
from pipeline.gate import BaselineModel, GateConfig, decide

log = logging.getLogger("dreamforge.gates")

DEFAULT_BASE = "main"


def project_gate(db, pid: str) -> GateConfig | None:
    doc = (db[PROJECTS].find_one({"_id": pid}, {"gate": 1}) or {}).get("gate")
    return GateConfig.model_validate(doc) if doc else None


def _config_gate(job: dict[str, Any] | None) -> GateConfig | None:
    raw = ((job or {}).get("config") or {}).get("gate")
    try:
        return GateConfig.model_validate(raw) if raw else None
    except ValidationError:  # validated at submit; a schema change since must not fail the job
        return None


def base_branch(job: dict[str, Any], gate: GateConfig | None) -> str:
    src = job.get("source") or {}
    return (gate.branch if gate else None) or src.get("default_branch") or DEFAULT_BASE


def _preview_id(pid: str, repo: str, branch: str) -> str:
    return f"{pid}|{repo}|{branch}"  # as webhooks.supersede names a branch's preview


def record_release(db, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Note a succeeded job as its branch's newest release (only jobs from GitHub have branches)."""
    src = job.get("source") or {}
    if src.get("kind") != "github" or not src.get("repo") or not src.get("branch") or not (result.get("release") or {}):
        return
    db[PREVIEWS].update_one({"_id": _preview_id(job["project_id"], src["repo"], src["branch"])},
                            {"$set": {"repo": src["repo"], "branch": src["branch"],
                                      "released": {"job_id": job["_id"], "sha": src.get("sha")}}},
                            upsert=True)  # fmt: skip


def _base_job(db, job: dict[str, Any], base: str) -> dict[str, Any] | None:
    src = job["source"]
    head = db[PREVIEWS].find_one({"_id": _preview_id(job["project_id"], src["repo"], base)}, {"released": 1}) or {}
    rel = head.get("released") or {}
    return db[JOBS].find_one({"_id": rel["job_id"], "status": "succeeded"}) if rel.get("job_id") else None


def baseline_for(db, job: dict[str, Any]) -> dict[str, Any] | None:
    """``evaluate.baseline`` for a branch's job: the default branch's released model, or None
    (not from GitHub, the default branch itself, no release there yet, the gate switched off)."""
    src = job.get("source") or {}
    if src.get("kind") != "github" or not src.get("repo"):
        return None
    own = project_gate(db, job["project_id"])
    base = base_branch(job, own)
    if src.get("branch") == base:
        return None
    bj = _base_job(db, job, base)
    gate = own or _config_gate(bj) or GateConfig()
    if bj is None or not gate.enabled:
        return None
    result = bj.get("result") or {}
    release = result.get("release") or {}
    model = release.get("full_dir") or (result.get("artifacts") or {}).get("model")
    if not model:
        return None
    metrics = (result.get("models") or {}).get(release.get("stage") or "") or {}
    sha = (bj.get("source") or {}).get("sha") or ""
    return BaselineModel(
        name=f"{base}@{sha[:7]}", model=model, job_id=bj["_id"], sha=sha or None,
        split_fingerprint=result.get("split_fingerprint"),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)},
    ).model_dump()  # fmt: skip


def judge(db, job: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
    """The gate's verdict for a finished job whose evaluation scored a baseline; None without one.
    ``passed`` is None when the two could not be compared (``text`` says why)."""
    baseline = result.get("baseline") or {}
    if not baseline:
        return None
    ref = {"base": baseline.get("name"), "base_job": baseline.get("job_id"), "base_sha": baseline.get("sha"),
           "rescored": bool(baseline.get("rescored"))}  # fmt: skip
    if baseline.get("error"):
        return {**ref, "passed": None, "text": f"not compared with {baseline['name']}: {baseline['error']}"}
    base_job = db[JOBS].find_one({"_id": baseline.get("job_id")}, {"config": 1}) if baseline.get("job_id") else None
    gate = project_gate(db, job["project_id"]) or _config_gate(base_job) or GateConfig()
    key = gate.metric or result.get("primary_metric") or ""
    stage = (result.get("release") or {}).get("stage") or ""
    value = ((result.get("models") or {}).get(stage) or {}).get(key)
    base_value = (baseline.get("metrics") or {}).get(key)
    if not isinstance(value, int | float) or not isinstance(base_value, int | float):
        return {**ref, "metric": key, "passed": None, "text": f"{key} was not measured for both models; not compared"}
    return {**decide(gate, key, float(value), float(base_value), baseline["name"]), **ref}


# -- what GitHub shows (github/status.py) ---------------------------------------------------
def _gate(job: dict[str, Any]) -> dict[str, Any]:
    return (job.get("result") or {}).get("gate") or {}


def gate_state(job: dict[str, Any]) -> str | None:
    """The commit status's state by the gate: success or failure; None when nothing was compared."""
    passed = _gate(job).get("passed")
    return None if passed is None else "success" if passed else "failure"


def gate_text(job: dict[str, Any]) -> str:
    """``mean_iou 0.712, +0.040 vs main@abc1234``, or empty when nothing was compared."""
    g = _gate(job)
    return g.get("text", "") if g.get("passed") is not None else ""


def gate_rows(job: dict[str, Any], keys: list[str]) -> list[str]:
    """The PR comment's lines under its model table: the default branch's released model as one
    more row of the same columns (side by side with the branch's stages), then the gate's line."""
    result = job.get("result") or {}
    g, baseline = _gate(job), result.get("baseline") or {}
    if not baseline:
        return []
    lines = []
    if baseline.get("metrics"):
        how = "re-scored on these images" if baseline.get("rescored") else "on the same images"
        lines.append(f"| **{baseline['name']}** (released, {how}) | "
                     + " | ".join(_cell(baseline["metrics"].get(k)) for k in keys) + " |")  # fmt: skip
    if g.get("passed") is None:
        return [*lines, "", f"Gate: {g.get('text') or 'not compared'}."]
    rule = f"tolerance {g['tolerance']:.3f}" if g.get("tolerance") is not None else f"margin {g.get('margin', 0):+.3f}"
    icon = "✅ passed" if g["passed"] else "❌ failed"
    return [*lines, "", f"**Gate {icon}**: {g['text']} ({rule})."]


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else ""
