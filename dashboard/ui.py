"""What every page shares: the session's API client, the service's vocabulary, status badges,
the key metric of a job."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from dashboard.api import Api
from pipeline.config import CurriculumConfig
from pipeline.stage_table import BY_NAME, STAGE_TABLE, TRAINED, key_metric, metric_title, models_newest_first

STAGE_TITLES = {s.name: s.label for s in STAGE_TABLE}
# Markdown with Streamlit's Material icons (no emoji: see streamlit_app.py); tables, which do not
# render Markdown, show the plain status.
BADGES = {"queued": ":material/schedule: queued", "running": ":material/autorenew: running",
          "succeeded": ":material/check_circle: succeeded", "failed": ":material/error: failed",
          "cancelled": ":material/cancel: cancelled", "dead": ":material/dangerous: dead",
          "awaiting_approval": ":material/front_hand: awaiting approval", "paused": ":material/pause_circle: paused"}  # fmt: skip
# The row labels of the metrics table, in curriculum order.
MODEL_TITLES = {"base": "base", **{s: BY_NAME[s].title for s in TRAINED}, "4bit": "4-bit"}


def stage_defaults() -> dict[str, dict[str, Any]]:
    """The curriculum's own settings of each trained stage, by config section: what the server
    uses for a field a preset leaves out (derived, never copied, so the page cannot drift)."""
    cfg = CurriculumConfig()
    return {s.section: getattr(cfg, s.section).model_dump() for s in STAGE_TABLE if s.trains}


def api() -> Api:
    """The session's client, rebuilt when the user pastes another key in the sidebar."""
    url = os.environ.get("DREAMFORGE_URL") or "http://127.0.0.1:8000"
    key = st.session_state.get("api_key") or ""
    client = st.session_state.get("_api")
    if client is None or client.key != key or client.url != url.rstrip("/"):
        client = Api(url, key)
        st.session_state["_api"] = client
    return client


def meta() -> dict[str, Any]:
    """The service's statuses and their sets (``GET /api/meta``), read once per session and API."""
    client = api()
    cached = st.session_state.get("_meta")
    if cached is None or cached[0] != client.url:
        cached = (client.url, client.meta())
        st.session_state["_meta"] = cached
    return cached[1]


def is_live(status: str) -> bool:
    """A job a worker may still change: its page refreshes itself. A held job (awaiting a
    person's approval) changes only when someone acts, so its page waits for that."""
    m = meta()
    return status not in m["final"] and status not in m["held"]


def badge(status: str) -> str:
    return BADGES.get(status, status)


def status_text(job: dict[str, Any]) -> str:
    """The status as a table shows it: a succeeded job whose model learned nothing says so."""
    learned = ((job.get("result") or {}).get("verdict") or {}).get("verdict")
    return job["status"] + (" · did not learn" if job["status"] == "succeeded" and learned == "did_not_learn" else "")


def job_url(job_id: str) -> str:
    # The page's url_path (streamlit_app.py); the service builds the same links with
    # dreamforge.settings.dashboard_page (the browser test opens those).
    return f"/job?job={job_id}"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fmt_metric(job: dict[str, Any]) -> str:
    metric = key_metric(job)
    return f"{metric[0]} {metric[1]:.3f}" if metric else "–"


def fit_caption(result: dict[str, Any]) -> str:
    """One line on memorisation: the last domain-trained model on its own training images."""
    fit, key = result.get("train_fit") or {}, result.get("primary_metric")
    name = next((n for n in models_newest_first() if n in fit), None)
    if not name or not key:
        return ""
    m = fit[name]
    line = f"{MODEL_TITLES.get(name, name)} on {fit.get('n', '?')} of its training images: {key} {m[key]:.3f} ({m['gap']:+.3f} vs held-out)"
    if m["gap"] > 0.3:
        line += " · it has memorised them: more labelled images will help more than more training"
    return line


def models_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Held-out metrics per model (base → warm-start → domain → RL → 4-bit), one row each; the
    job's own reward score under the reward's name."""
    models = dict(result.get("models") or {})
    release = result.get("release") or {}
    quantized = release.get("quantized_metrics") or release.get("metrics_4bit")
    if isinstance(quantized, dict) and "4bit" not in models:
        models["4bit"] = quantized
    rows = []
    order = [m for m in MODEL_TITLES if m in models] + [m for m in models if m not in MODEL_TITLES]
    for name in order:
        m = models[name]
        row = {"model": MODEL_TITLES.get(name, name)}
        row.update({metric_title(k, result.get("reward")): v for k, v in m.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)})  # fmt: skip
        rows.append(row)
    return rows


def show_error(e: Exception) -> None:
    st.error(str(e))
