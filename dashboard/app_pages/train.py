"""Train: pick a dataset, a reward and a curriculum, then launch; lands on the job's page."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import ui
from dashboard.api import ApiError
from pipeline.stage_table import STAGE_TABLE

BUILTIN_REWARDS = ("default", "iou", "f1", "mask_iou", "oks", "format", "caption")
TASK_REWARDS = {"detect": "iou", "segment": "mask_iou", "keypoints": "oks", "caption": "caption"}  # what "default" means
SYNTHETIC_KINDS = ("retail-shelf", "medical-scan", "traffic-camera", "generic")
LINK_SCHEMES = ("s3://", "gs://", "https://")
JS_TEMPLATE = """// out and gt: {boxes: [[x1,y1,x2,y2]...], labels: [...], image: {width, height}}
function reward(out, gt) {
  if (!out.boxes.length || !gt.boxes.length) return out.boxes.length === gt.boxes.length ? 1 : 0;
  const [a, b] = [out.boxes[0], gt.boxes[0]];
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (r) => (r[2] - r[0]) * (r[3] - r[1]);
  return (iw * ih) / (area(a) + area(b) - iw * ih);
}
"""
# Stage knobs the configurator exposes (by config section), with the curriculum's defaults for
# fields a preset omits.
STAGE_KEYS = {s.section: s.label for s in STAGE_TABLE if s.trains}
DEFAULTS = ui.stage_defaults()


def dataset_section(task: str, preset_dataset: str) -> str | None:
    """The dataset reference for the request: None keeps the preset's own dataset."""
    st.subheader("1 · Dataset")
    how = st.radio("Source", ["Preset's dataset", "Upload a ZIP", "Link (s3:// or gs://)", "Existing dataset", "Synthetic"],
                   key="ds_how", horizontal=True)  # fmt: skip
    c = ui.api()
    if how == "Preset's dataset":
        st.caption(f"`{preset_dataset}`")
        return None
    if how == "Upload a ZIP":
        up = st.file_uploader("COCO dataset as a .zip (annotations JSON + images)", type=["zip"], key="ds_zip")
        name = st.text_input("Dataset name", key="ds_name", placeholder="the file's name")
        if up is not None and st.button("Upload and validate", key="ds_upload"):
            try:
                ds = c.upload_dataset(up.getvalue(), name.strip() or up.name.rsplit(".", 1)[0], task)
            except ApiError as e:
                st.session_state.pop("uploaded", None)
                st.error(f"{up.name}: {e}")
            else:
                st.session_state["uploaded"] = ds
        ds = st.session_state.get("uploaded")
        if ds:
            st.success(f"{ds['name']}: {ds['images']} images, categories: {', '.join(ds['categories']) or '–'} ({ds['id']})")
            for w in ds.get("warnings") or []:
                st.warning(w)
            return ds["id"]
        return ""
    if how == "Link (s3:// or gs://)":
        link = st.text_input("Dataset URI", key="ds_link", placeholder="s3://bucket/shelves.zip").strip()
        if link and not link.startswith(LINK_SCHEMES):
            st.error(f"{link}: a link must start with s3://, gs:// or https://")
            return ""
        return link or ""
    if how == "Existing dataset":
        try:
            stored = c.datasets()
        except ApiError as e:
            st.error(str(e))
            return ""
        if not stored:
            st.info("No uploaded datasets yet.")
            return ""
        labels = {d["id"]: f"{d['name']} · {d['images']} images · {d['id']}" for d in stored}
        return st.selectbox("Dataset", list(labels), format_func=labels.get, key="ds_existing")
    kind = st.selectbox("Kind", SYNTHETIC_KINDS, key="ds_kind")
    n = st.number_input("Images", min_value=8, max_value=100_000, value=128, step=8, key="ds_n")
    return f"synthetic://{kind}?n={int(n)}&seed=1"


def reward_section(preset_reward: str) -> tuple[str | None, str | None, str]:
    """(built-in name or None, JavaScript source or None, name for a stored JS reward)."""
    st.subheader("2 · Reward")
    how = st.radio("Reward", ["Built-in", "JavaScript"], key="rw_how", horizontal=True)
    if how == "Built-in":
        options = list(BUILTIN_REWARDS)
        idx = options.index(preset_reward) if preset_reward in options else 0
        return st.selectbox("Built-in reward", options, index=idx, key="rw_builtin"), None, ""
    name = st.text_input("Reward name", value="my-reward", key="rw_name")
    source = st.text_area("reward(out, gt) in JavaScript: return a number, higher is better", value=JS_TEMPLATE, height=260,
                          key="rw_js")  # fmt: skip
    return None, source, name


def test_reward(builtin: str | None, source: str | None, dataset: str, task: str) -> None:
    """Score the reward on samples of the chosen dataset: an exact answer, a shifted one, a
    missing one and an extra one should score in that order, or the reward has a bug."""
    if builtin == "default":
        builtin = TASK_REWARDS.get(task, "iou")
    try:
        body = ui.api().test_reward(source=source, reward=None if source else builtin, dataset=dataset, task=task)
    except ApiError as e:
        if e.status == 404 and e.message == "Not Found":
            st.info("Testing rewards is not available from this API version (POST /api/rewards/test); "
                    "the reward is still checked when you launch.")  # fmt: skip
            return
        lines = [d for d in (e.detail if isinstance(e.detail, list) else []) if isinstance(d, dict) and d.get("line")]
        if lines and source:
            d = lines[0]
            st.error(f"line {d['line']}, column {d.get('column', '?')}: {d['msg']}")
            code = source.splitlines()
            lo = max(0, d["line"] - 3)
            st.code("\n".join(f"{'>' if i + 1 == d['line'] else ' '} {i + 1:>3} | {code[i]}"
                              for i in range(lo, min(len(code), d["line"] + 2))), language=None)  # fmt: skip
        else:
            st.error(f"reward test failed: {e}")
        return
    st.success(f"{body['reward']} on {body['samples']} samples")
    st.dataframe(pd.DataFrame(body["cases"]), hide_index=True, key="reward_cases")


def stage_knobs(preset: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-stage epochs, max steps and learning rate, and the RL group size; keyed per preset so
    switching presets shows that preset's values."""
    st.subheader("3 · Curriculum")
    overrides: dict[str, Any] = {}
    cols = st.columns(3)
    for col, (stage, title) in zip(cols, STAGE_KEYS.items()):
        d = {**DEFAULTS[stage], **(cfg.get(stage) or {})}
        with col:
            st.markdown(f"**{title}**")
            epochs = st.number_input("epochs", min_value=0.1, max_value=1000.0, value=float(d["epochs"]), step=1.0,
                                     key=f"{preset}.{stage}.epochs")  # fmt: skip
            steps = st.number_input("max steps (0 = by epochs)", min_value=0, max_value=10**7, value=int(d.get("max_steps") or 0),
                                    key=f"{preset}.{stage}.max_steps")  # fmt: skip
            lr = st.number_input("learning rate", min_value=1e-8, max_value=0.5, value=float(d["lr"]), format="%.2e",
                                 key=f"{preset}.{stage}.lr")  # fmt: skip
            over: dict[str, Any] = {"epochs": epochs, "max_steps": int(steps) or None, "lr": lr}
            if stage == "rl":
                over["num_generations"] = int(st.number_input("group size (samples per prompt)", min_value=2, max_value=256,
                                                              value=int(d["num_generations"]), key=f"{preset}.rl.group"))  # fmt: skip
                over["batch_size"] = int(st.number_input("completions per step (a multiple of the group size)", min_value=2,
                                                         max_value=4096, value=int(d["batch_size"]), key=f"{preset}.rl.batch"))  # fmt: skip
            overrides[stage] = over
    return overrides


def preflight(body: dict[str, Any], js: bool) -> None:
    """The job's preflight (POST /api/preflight): findings with their fixes, the reward's spread,
    and each stage's estimated time and price on Modal. Nothing is stored or trained."""
    try:
        rep = ui.api().preflight(body)
    except ApiError as e:
        if e.status == 404 and e.message == "Not Found":
            st.info("Preflight is not available from this API version (POST /api/preflight).")
            return
        st.error(f"preflight failed: {e}")
        return
    if js:
        st.caption("The JavaScript reward is not stored yet, so the preflight tried the preset's reward; "
                   "use 'Test reward' for yours.")  # fmt: skip
    (st.error if rep["errors"] else st.success)(f"preflight: {rep['errors']} error(s)" if rep["errors"] else "preflight: no errors")
    for f in rep["findings"]:
        show = {"error": st.error, "warning": st.warning, "info": st.info}[f["severity"]]
        show(f"**{f['check']}**: {f['message']}" + (f" — fix: {f['fix']}" if f["fix"] else ""))
    cost = rep["cost"]
    st.caption(f"Estimated on Modal: {cost['seconds'] / 60:.1f} min, ${cost['usd']:.2f} (prices as of {cost['prices_as_of']})")
    st.dataframe(pd.DataFrame(cost["stages"]), hide_index=True, key="preflight_cost")


def launch(body: dict[str, Any], source: str | None, reward_name: str) -> None:
    c = ui.api()
    try:
        if source is not None:
            body["reward"] = c.store_reward(reward_name, source)["id"]
        job = c.train(body)
    except ApiError as e:
        st.error(f"not launched: {e}")
        return
    st.session_state["job_id"] = job["jobId"]
    st.switch_page("app_pages/job.py", query_params={"job": job["jobId"]})


st.title("Train")
try:
    presets = ui.api().presets()
except ApiError as e:
    st.error(str(e))
    st.stop()
preset = st.selectbox("Preset", sorted(presets), index=sorted(presets).index("retail-shelf") if "retail-shelf" in presets else 0,
                      key="preset")  # fmt: skip
pcfg = presets[preset]
task = pcfg.get("task", "detect")
st.caption(f"task: {task}")
dataset = dataset_section(task, (pcfg.get("data") or {}).get("dataset", "the preset's dataset"))
builtin, js, js_name = reward_section(pcfg.get("reward", "default"))
if st.button("Test reward", key="test_reward"):
    if dataset == "":
        st.error("choose a dataset first: the reward is tested on samples of it")
    else:
        test_reward(builtin, js, dataset or (pcfg.get("data") or {}).get("dataset", ""), task)
overrides = stage_knobs(preset, pcfg)
name = st.text_input("Job name", value=f"{preset}-dashboard", key="job_name")
ready = dataset != ""
body: dict[str, Any] = {"preset": preset, "overrides": {**overrides, "name": name}}
if dataset:
    body["dataset"] = dataset
if builtin and builtin != "default":
    body["reward"] = builtin
if st.button("Preflight", icon=":material/checklist:", key="preflight", disabled=not ready):
    preflight(dict(body), js is not None)
if st.button("Launch training", icon=":material/rocket_launch:", key="launch", type="primary", disabled=not ready):
    launch({**body, "source": {"kind": "dashboard"}}, js, js_name)
if not ready:
    st.caption("Choose a dataset to launch.")
