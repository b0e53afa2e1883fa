"""Per repository, one row per branch, like Vercel's preview list: the branch's latest job,
its commit, a status badge, the key metric and a link to the job."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import ui
from dashboard.api import ApiError


def latest_per_branch(jobs: list[dict]) -> list[dict]:
    """Jobs arrive newest first, so the first job seen for a branch is its latest."""
    seen: dict[str, dict] = {}
    for j in jobs:
        branch = (j.get("source") or {}).get("branch") or "(no branch)"
        seen.setdefault(branch, j)
    return list(seen.values())


st.title("Previews")
try:
    jobs = ui.api().jobs(limit=200)["jobs"]
except ApiError as e:
    st.error(str(e))
    st.stop()
repos = sorted({(j.get("source") or {}).get("repo") for j in jobs} - {None})
if not repos:
    st.info("No job came from a repository yet: push with the DreamForge GitHub Action to get per-branch previews.")
    st.stop()
repo = st.selectbox("Repository", repos, key="preview_repo")
try:  # the repo's own list, so a busy project's other repositories do not push its branches out of the page
    repo_jobs = ui.api().jobs(repo=repo, limit=200)["jobs"]
except ApiError as e:
    st.error(str(e))
    st.stop()
rows = []
for j in latest_per_branch(repo_jobs):
    src = j.get("source") or {}
    rows.append({
        "branch": src.get("branch") or "(no branch)", "commit": (src.get("sha") or "")[:7] or "–",
        "status": ui.status_text(j), "key metric": ui.fmt_metric(j),
        "updated": (j.get("updated_at") or "")[:19].replace("T", " "), "job": ui.job_url(j["jobId"]),
    })  # fmt: skip
st.dataframe(pd.DataFrame(rows), hide_index=True, key="previews_table",
             column_config={"job": st.column_config.LinkColumn("job", display_text="open")})  # fmt: skip
