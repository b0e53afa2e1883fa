"""One job: progress across the four stages, live logs, loss and reward curves, the held-out
metrics table, sample predictions, artifacts and a cancel button.

Logs and metric points are fetched incrementally into ``st.session_state`` (dashboard/stream.py);
while the job runs, a fragment re-renders the live part every few seconds and asks only for
rows newer than the last one it holds.
"""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import tryit, ui
from dashboard.api import ApiError
from dashboard.jobview import curves, duration, thin, timing, validation_names
from dashboard.stream import PANEL_LINES, job_stream
from pipeline.budget import spend_text
from pipeline.stage_table import REWARD_SCORE, STAGES, metric_title

REFRESH_S = 2.0
TAIL_LINES = 30


def chart(df: pd.DataFrame, title: str, y: str) -> None:
    df = pd.concat([thin(g) for _, g in df.groupby("stage", sort=False)]) if len(df) else df
    spec = {
        "title": title,
        "mark": {"type": "line", "point": len(df) < 200},  # single points of a tiny run stay visible
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": {"field": "value", "type": "quantitative", "title": y},
            "color": {"field": "stage", "type": "nominal", "sort": list(STAGES)},
        },
    }
    st.vega_lite_chart(df, spec, width="stretch")


def header(job: dict[str, Any]) -> None:
    src = job.get("source") or {}
    where = " · ".join(x for x in (src.get("repo"), src.get("branch"), (src.get("sha") or "")[:7]) if x)
    st.title(f"Job {job['jobId']}")
    # uploaded datasets by the name they were uploaded under (the id is for machines)
    data = "".join(f" · {f.replace('_', ' ')} {d['name']}" for f, d in (job.get("datasets") or {}).items())
    st.caption(f"{ui.badge(job['status'])} · preset {job.get('preset') or '–'} · task {job['task']}{data}"
               + (f" · {where}" if where else "") + f" · from {src.get('kind', 'api')}")  # fmt: skip


def progress_panel(job: dict[str, Any]) -> None:
    stage = job.get("stage")
    p = float(job.get("progress") or 0)
    st.progress(min(100, int(round(p))), text=f"{ui.STAGE_TITLES.get(stage, 'waiting for a worker')} · {p:.0f}%")
    elapsed, remaining = timing(job, ui.meta()["final"])
    c = st.columns(4)
    c[0].metric("Status", job["status"])
    c[1].metric("Stage", ui.STAGE_TITLES.get(stage, "–") if stage else "–")
    c[2].metric("Elapsed", duration(elapsed))
    c[3].metric("Remaining", duration(remaining) if remaining is not None else "estimating…")
    rows = []
    for s in STAGES:
        st_ = job["stages"][s]
        rows.append({"stage": ui.STAGE_TITLES[s], "status": st_["status"], "attempts": st_["attempts"],
                     "seconds": st_.get("seconds")})  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="stages_table")
    if job.get("error"):
        err = job["error"]
        where = f" in stage {err['stage']}" if err.get("stage") else ""
        (st.warning if err["kind"] == "cancelled" else st.error)(f"{err['kind']} error{where}: {err['message']}")


def live(job_id: str) -> None:
    """Everything that changes while the job runs; refetches only new rows."""
    c = ui.api()
    try:
        job = c.job(job_id)
        stream = job_stream(st.session_state, job_id)
        stream.refresh(c)
    except ApiError as e:
        st.error(str(e))
        return
    progress_panel(job)
    loss = curves(stream.points, ("loss", "train_loss"))
    reward = curves(stream.points, ("reward", "rewards/mean", "reward_mean"))
    # The RL stage's reward-hacking watch (pipeline/stages/watch.py): its validation score beside the reward.
    rl_points = [p for p in stream.points if p["stage"] == "reward"]
    watch = curves(rl_points, validation_names(rl_points))
    if len(watch) and len(reward):
        reward = pd.concat([reward, watch.assign(stage="reward: " + watch["metric"])])
    if any("reward_hacking" in p["values"] for p in rl_points):
        st.warning("Reward hacking? During RL the training reward rose while validation fell, or the model's boxes per "
                   "image drifted past twice the ground truth's: see the warnings in the logs.")  # fmt: skip
    # keyed containers get a CSS class (st-key-…): the browser test finds the charts by it
    left, right = st.container(key="charts").columns(2)
    with left:
        if len(loss):
            chart(loss, "loss vs step", "loss")
        else:
            st.info("No loss points yet.")
    with right:
        if len(reward):
            # a finished job knows its reward's name (metrics.json): the axis says which reward
            name = (job.get("result") or {}).get("reward")
            chart(reward, "reward vs step", metric_title(REWARD_SCORE, name) if name else "reward")
        else:
            st.info("No reward points yet (the RL stage reports them).")
    # The supervised stages' validation checks (pipeline/stages/validation.py): the curve that
    # chose the kept weights and stopped the stage early.
    val = curves(stream.points, validation_names(stream.points))
    if len(val):
        with st.container(key="val-chart").columns(2)[0]:
            chart(val, "validation vs step", "validation score")
    n = stream.log_next
    with st.expander(f"Logs ({n} lines)", expanded=job["status"] not in ui.meta()["final"]):
        # The newest TAIL_LINES in order, always in view: the panel follows the log like
        # `tail -f` without any scrolling; the longer view scrolls.
        more = st.toggle(f"show the last {PANEL_LINES}", key=f"more_logs_{job_id}")
        shown = stream.logs[-(PANEL_LINES if more else TAIL_LINES):]
        if n > len(shown):
            st.caption(f"the last {len(shown)} of {n} lines; `dreamforge logs {job_id}` prints them all")
        text = "\n".join(f"{ln['seq']:>6} {ln['level']:<7} {('[' + ln['stage'] + '] ') if ln.get('stage') else ''}{ln['message']}"
                         for ln in shown)  # fmt: skip
        st.code(text or "(no log lines yet)", language=None, height=420 if more else "content")
    if not ui.is_live(job["status"]) and st.session_state.get("_was_live") == job_id:
        st.session_state.pop("_was_live")
        st.rerun()  # the job just ended: draw the final sections once, and stop refreshing
    st.session_state["_job"] = job


def verdict_box(job: dict[str, Any]) -> None:
    """A job whose model learned nothing says so above everything else (pipeline/verdict.py)."""
    verdict = (job.get("result") or {}).get("verdict") or {}
    if verdict.get("verdict") != "did_not_learn":
        return
    lines = ["**The model did not learn.** " + "; ".join(verdict.get("problems") or [])]
    lines += [f"- likely cause: {c['cause']}. Try: {c['fix']}" for c in verdict.get("causes") or []]
    st.error("\n".join(lines), icon=":material/warning:")


def results(job: dict[str, Any]) -> None:
    result = job.get("result") or {}
    verdict_box(job)
    st.subheader("Held-out metrics per stage")
    rows = ui.models_table(result)
    if rows:
        key = result.get("primary_metric")
        st.caption(f"{key} is the primary metric · held-out images, never trained on" if key else "held-out images, never trained on")
        st.container(key="metrics-table").dataframe(pd.DataFrame(rows), hide_index=True, key="metrics_table")
        fit = ui.fit_caption(result)
        if fit:
            st.caption(fit)
    else:
        st.info("This job has no evaluation record.")
    stage_rows = [{"stage": ui.STAGE_TITLES[s], **{k: v for k, v in (job["stages"][s].get("metrics") or {}).items()
                                                   if isinstance(v, int | float)}}
                  for s in STAGES if job["stages"][s].get("metrics")]  # fmt: skip
    if stage_rows:
        st.subheader("Training metrics per stage")
        st.dataframe(pd.DataFrame(stage_rows), hide_index=True, key="stage_metrics_table")
    release = result.get("release") or {}
    if release:
        fmt = release.get("release_format")
        ratio = f" · {release['size_ratio']}× smaller than 16-bit" if release.get("size_ratio") and fmt in ("nf4", "fp4") else ""
        gate = f" · quality gate {release['gate']}" if release.get("gate") else ""
        st.caption(f"release: {fmt or '?'} model{ratio}{gate}" + (f" · {release['reason']}" if release.get("reason") else ""))
    samples(job)
    tryit.section(job)
    artifacts = result.get("artifacts") or {}
    if artifacts:
        st.subheader("Artifacts")
        st.dataframe(pd.DataFrame([{"artifact": k, "location": v} for k, v in artifacts.items()]), hide_index=True,
                     key="artifacts_table")  # fmt: skip


def samples(job: dict[str, Any]) -> None:
    st.subheader("Sample predictions on held-out images")
    cache = st.session_state.setdefault("samples", {})
    if job["jobId"] not in cache:
        try:
            cache[job["jobId"]] = ui.api().samples(job["jobId"])
        except ApiError as e:
            # FastAPI's bare "Not Found" is a missing route (an older API), not a missing job
            missing = e.status == 404 and e.message == "Not Found"
            cache[job["jobId"]] = {"error": "sample predictions are not available from this API version" if missing else str(e)}
    body = cache[job["jobId"]]
    if body.get("error"):
        st.info(body["error"])
        return
    st.caption(f"model: {body['model']} · left: prediction, right: ground truth" + (f" · {body['note']}" if body.get("note") else ""))
    cols = st.columns(3)
    for i, s in enumerate(body["samples"]):
        with cols[i % 3]:
            if s.get("pred_png"):
                pair = st.columns(2)
                pair[0].image(base64.b64decode(s["pred_png"]), caption=f"{s['file_name']}: prediction")
                pair[1].image(base64.b64decode(s["gt_png"]), caption="ground truth")
            else:
                st.write(f"**{s['file_name']}**")
            st.caption(f"answer: `{s['text'][:120]}`")


def approve_button(job: dict[str, Any]) -> None:
    """A held job (a fork's pull request) trains only once a project member approves it."""
    if job["status"] != "awaiting_approval":
        return
    st.info("A pull request from a fork: it trains once a project member approves it.")
    if st.button("Approve", key="approve", type="primary"):
        try:
            ui.api().approve(job["jobId"])
        except ApiError as e:
            st.error(f"approve failed: {e}")
            return
        st.session_state.pop("_job", None)
        st.rerun()  # now queued: the page follows it live


def spend_panel(job: dict[str, Any]) -> None:
    """Spend against the job's caps; a paused job says why, and raising a cap resumes it."""
    st.caption("Spend: " + spend_text(job.get("spend"), job.get("caps")))
    if job["status"] != "paused":
        return
    st.warning(f"Paused in {ui.STAGE_TITLES.get(job['paused']['stage'], job['paused']['stage'])}: "
               f"{job['paused']['reason']}. Raise the cap to resume where it stopped.")  # fmt: skip
    caps = job.get("caps") or {}
    with st.form("caps"):
        c = st.columns(3)
        new = {"wall_minutes": c[0].number_input("minutes of stages", min_value=0.0, value=float(caps.get("wall_minutes") or 0)),
               "gpu_seconds": c[1].number_input("GPU-seconds", min_value=0.0, value=float(caps.get("gpu_seconds") or 0)),
               "usd": c[2].number_input("dollars", min_value=0.0, value=float(caps.get("usd") or 0))}  # fmt: skip
        if st.form_submit_button("Set caps and resume", type="primary"):
            try:  # 0: no cap of that kind
                ui.api().set_caps(job["jobId"], {k: v for k, v in new.items() if v > 0})
            except ApiError as e:
                st.error(f"setting the caps failed: {e}")
                return
            st.session_state.pop("_job", None)
            st.rerun()


def cancel_button(job: dict[str, Any]) -> None:
    if job["status"] in ui.meta()["final"]:
        return
    if job.get("cancel_requested"):
        st.caption("cancel requested: the job stops within seconds")
        return
    if st.button("Cancel job", key="cancel", type="secondary"):
        try:
            after = ui.api().cancel(job["jobId"])
        except ApiError as e:
            st.error(f"cancel failed: {e}")
            return
        st.success("cancelled" if after["status"] == "cancelled" else "cancel requested: the job stops within seconds")


def pick_job() -> str | None:
    job_id = st.query_params.get("job") or st.session_state.get("job_id")
    if job_id:
        return job_id
    st.title("Job")
    typed = st.text_input("Job id", placeholder="job_…", key="job_lookup")
    if typed:
        st.session_state["job_id"] = typed.strip()
        return typed.strip()
    st.info("Open a job from the Jobs page, or paste its id.")
    return None


job_id = pick_job()
if job_id:
    st.session_state["job_id"] = job_id
    try:
        first = ui.api().job(job_id)
    except ApiError as e:
        st.error(str(e))
        st.stop()
    header(first)
    running = ui.is_live(first["status"])
    if running:
        st.session_state["_was_live"] = job_id
    st.fragment(live, run_every=REFRESH_S if running else None)(job_id)
    job = st.session_state.get("_job") or first
    approve_button(job)
    spend_panel(job)
    cancel_button(job)
    if job["status"] == "succeeded":
        results(job)
