"""All jobs of the project, newest first, filterable by repo, branch and status."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import ui
from dashboard.api import ApiError


def job_rows(jobs: list[dict]) -> pd.DataFrame:
    rows = []
    for j in jobs:
        src = j.get("source") or {}
        rows.append({
            "job": ui.job_url(j["jobId"]), "status": ui.status_text(j), "progress": float(j.get("progress") or 0),
            "stage": j.get("stage") or "–", "key metric": ui.fmt_metric(j), "repo": src.get("repo") or "–",
            "branch": src.get("branch") or "–", "commit": (src.get("sha") or "")[:7] or "–", "preset": j.get("preset") or "–",
            "created": (j.get("created_at") or "")[:19].replace("T", " "),
        })  # fmt: skip
    return pd.DataFrame(rows)


st.title("Jobs")
f = st.columns([2, 2, 3])
repo = f[0].text_input("Repository", key="f_repo", placeholder="owner/name").strip() or None
branch = f[1].text_input("Branch", key="f_branch").strip() or None
try:
    known = ui.meta()["statuses"]
except ApiError as e:
    st.error(str(e))
    st.stop()
statuses = f[2].multiselect("Status", known, key="f_status")
try:
    page = ui.api().jobs(repo=repo, branch=branch, status=",".join(statuses) or None, limit=200)
except ApiError as e:
    st.error(str(e))
    st.stop()
jobs = page["jobs"]
if not jobs:
    st.info("No jobs match." if (repo or branch or statuses) else "No jobs yet: launch one on the Train page.")
else:
    st.caption(f"{len(jobs)} job(s)" + (" (the newest 200)" if page.get("next_cursor") else ""))
    st.dataframe(
        job_rows(jobs), hide_index=True, key="jobs_table",
        column_config={
            "job": st.column_config.LinkColumn("job", display_text=r"/job\?job=(.*)"),
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%.0f%%"),
        },
    )  # fmt: skip
