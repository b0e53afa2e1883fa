"""DreamForge dashboard: `streamlit run dashboard/streamlit_app.py`.

Talks only to the DreamForge API (``DREAMFORGE_URL``) with the user's API key
(``DREAMFORGE_API_KEY``, or pasted in the sidebar), never to the database, so it can be
deployed anywhere the API is reachable. ``dreamforge up`` starts it with both set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `streamlit run` puts this folder on sys.path, not the repository root the imports start from.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="DreamForge", page_icon=":material/local_fire_department:", layout="wide")
st.session_state.setdefault("api_key", os.environ.get("DREAMFORGE_API_KEY", ""))

# Every page has a name in the URL (/train, /jobs, /job?job=…, /previews) so links from the README,
# the API, the CLI and the Action open it; the root is a hidden page that sends the visitor on.
# Material icons ship with Streamlit's own font; emoji need a system emoji font, which Debian's
# Chromium lacks (they drew as empty boxes there).
TRAIN = st.Page("app_pages/train.py", title="Train", icon=":material/rocket_launch:", url_path="train")
JOB = st.Page("app_pages/job.py", title="Job", icon=":material/monitoring:", url_path="job")


def _root() -> None:
    """``/``: a job link without its page name (``/?job=…``) opens the job, anything else /train."""
    job = st.query_params.get("job")
    st.switch_page(JOB, query_params={"job": job}) if job else st.switch_page(TRAIN)


pages = [
    st.Page(_root, title="DreamForge", url_path="home", default=True, visibility="hidden"),
    TRAIN,
    JOB,
    st.Page("app_pages/jobs.py", title="Jobs", icon=":material/list_alt:", url_path="jobs"),
    st.Page("app_pages/previews.py", title="Previews", icon=":material/account_tree:", url_path="previews"),
]
page = st.navigation(pages)

with st.sidebar:
    st.caption(f"API: {ui.api().url}")
    st.text_input("API key", key="api_key", type="password",
                  help="Your project's key (dfk_…). `dreamforge up` prints the local one; it stays in this browser session.")  # fmt: skip
    if not st.session_state["api_key"]:
        st.warning("Paste an API key to see your jobs.")

page.run()
