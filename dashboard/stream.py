"""A job's logs and metric points, kept per session and fetched incrementally.

Each refresh asks only for rows after the last sequence number seen (``after=next``), so a job
with 20,000 log lines costs one small request per refresh instead of re-reading everything.
Opening a job reads only its last :data:`PANEL_LINES` log lines (``last=``), since that is all
the log panel shows; metric points are all read once, for the curves. The buffer lives in
``st.session_state`` (one per job), so it survives reruns and page switches.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from dashboard.api import LOG_PAGE, METRIC_PAGE, Api

# Lines shown in the log panel: the browser renders a few hundred fast, 20k slowly; the CLI's
# `dreamforge logs JOB` prints them all.
PANEL_LINES = 400


@dataclass
class JobStream:
    job_id: str
    logs: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    log_next: int = 0  # the last log seq held; seqs are dense per job, so also the line count
    metric_next: int = 0
    requests: int = 0  # HTTP requests this buffer cost (the benchmark and the tests read it)

    def refresh(self, api: Api, *, max_pages: int = 50) -> tuple[int, int]:
        """Fetch rows newer than what is held; returns (new log lines, new metric points)."""
        new_logs = new_points = 0
        first = self.requests == 0
        for _ in range(max_pages):
            body = api.logs(self.job_id, after=self.log_next, last=PANEL_LINES if first else None)
            first = False
            self.requests += 1
            self.logs += body["lines"]
            new_logs += len(body["lines"])
            self.log_next = body["next"]
            if len(body["lines"]) < LOG_PAGE:
                break
        del self.logs[:-PANEL_LINES]  # the panel never shows more; the buffer stays small
        for _ in range(max_pages):
            body = api.metrics(self.job_id, after=self.metric_next)
            self.requests += 1
            self.points += body["points"]
            new_points += len(body["points"])
            self.metric_next = body["next"]
            if len(body["points"]) < METRIC_PAGE:
                break
        return new_logs, new_points


def job_stream(state: MutableMapping, job_id: str) -> JobStream:
    """The session's buffer for ``job_id`` (created empty on first use)."""
    streams = state.setdefault("streams", {})
    if job_id not in streams:
        streams[job_id] = JobStream(job_id)
    return streams[job_id]
