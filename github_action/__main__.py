"""``python -m github_action``: the DreamForge Action's step.

Reads and validates ``dreamforge.config.json`` with the server's own schema (``pipeline.config``),
POSTs it with the push's repository, branch, sha, pull request and run to
``/api/webhooks/github-action`` (signed, or with a GitHub OIDC token), then writes the outputs
and the job summary; with ``wait: true`` it follows the job and fails the step if the job fails.
Imports nothing heavier than pydantic and httpx: it runs on a bare runner in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from github_action import checkout
from github_action.workflow import annotate, event, get_input, key_lines, line_of, set_output, write_summary
from pipeline.stage_table import REWARD_SCORE, STAGES, metric_title, models_newest_first

RETRIES = 5
MAX_ANNOTATIONS = 10
PERMISSIONS_FIX = "permissions:\n  id-token: write\n  contents: read"


class StepFailed(Exception):
    """Ends the step with exit code 1; the message was already annotated."""


def fail(message: str, file: str | None = None, line: int | None = None, col: int | None = None) -> StepFailed:
    annotate("error", message, file=file, line=line, col=col, title="DreamForge")
    return StepFailed(message)


# -- the push ------------------------------------------------------------------------------
def describe_push() -> dict[str, Any] | None:
    """Repository, branch, sha and pull request of this run, from the runner's variables and
    the event payload; None for an event that trains nothing (a tag push, a deleted branch)."""
    name = os.environ.get("GITHUB_EVENT_NAME", "")
    ev = event()
    repo = os.environ.get("GITHUB_REPOSITORY") or (ev.get("repository") or {}).get("full_name", "")
    repo_id = os.environ.get("GITHUB_REPOSITORY_ID") or (ev.get("repository") or {}).get("id")
    info: dict[str, Any] = {"repository": repo, "repository_id": int(repo_id) if repo_id else None, "event": name,
                            "run_id": os.environ.get("GITHUB_RUN_ID"),
                            "run_attempt": int(os.environ.get("GITHUB_RUN_ATTEMPT") or 1)}  # fmt: skip
    if (ev.get("repository") or {}).get("default_branch"):  # the base a branch's preview is gated against
        info["default_branch"] = ev["repository"]["default_branch"]
    if name in ("pull_request_target", "workflow_run"):
        raise fail(f"DreamForge does not run on {name}: such workflows hold the base repository's secrets next to a "
                   "fork's code. Use `on: [push, pull_request]`; forks' pull requests wait for a project member's approval.")  # fmt: skip
    if name == "pull_request":
        pr = ev["pull_request"]
        info.update(ref=os.environ.get("GITHUB_REF") or f"refs/pull/{ev['number']}/merge", branch=pr["head"]["ref"],
                    sha=pr["head"]["sha"], pr=int(ev.get("number") or pr["number"]),
                    head_repository=(pr["head"].get("repo") or {}).get("full_name"))  # fmt: skip
        return info
    ref = os.environ.get("GITHUB_REF") or ev.get("ref") or ""
    if not ref.startswith("refs/heads/") or ev.get("deleted"):
        return None
    sha = ev.get("after") or os.environ.get("GITHUB_SHA", "")
    info.update(ref=ref, branch=ref.removeprefix("refs/heads/"), sha=sha)
    return info


# -- the config ----------------------------------------------------------------------------
def read_config(text: str, shown: str) -> dict[str, Any]:
    """The config as JSON, validated by the server's schema; each problem annotated at its line."""
    from pipeline.config import ConfigError, build_config

    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(f"{shown}: not valid JSON: {e.msg}", file=shown, line=e.lineno, col=e.colno) from None
    if not isinstance(raw, dict):
        raise fail(f"{shown}: the config must be a JSON object", file=shown, line=1)
    try:
        build_config(raw, source=shown)
    except ConfigError as e:
        annotate_config_errors(shown, text, e.errors)
        raise StepFailed(str(e)) from None
    return raw


def annotate_config_errors(shown: str, text: str, errors: list[dict[str, Any]]) -> None:
    """One annotation per problem, at its line. GitHub shows at most 10 error annotations per step
    (docs.github.com "Workflow commands for GitHub Actions", and the Checks API's limits): past
    that, 9 are annotated, the 10th says how many more, and the job summary lists them all."""
    lines = key_lines(text)
    found = []
    for err in errors:
        loc = err["loc"] if isinstance(err["loc"], str) else ".".join(str(p) for p in err["loc"])
        found.append((f"{loc or '(top level)'}: {err['msg']}", line_of(lines, loc)))
    cut = len(found) if len(found) <= MAX_ANNOTATIONS else MAX_ANNOTATIONS - 1
    for msg, line in found[:cut]:
        annotate("error", msg, file=shown, line=line, title="DreamForge config")
    if cut < len(found):
        annotate("error", f"{len(found) - cut} more problems in {shown}: see the job summary", file=shown, title="DreamForge config")
        rows = [f"| {line} | " + msg.replace("|", "\\|") + " |" for msg, line in found]
        write_summary("\n".join([f"### {len(found)} problems in `{shown}`", "", "| line | problem |", "|---|---|", *rows]))


# -- the API -------------------------------------------------------------------------------
def request_with_retries(http: httpx.Client, method: str, url: str, *, auth: Callable[[], str] | None = None,
                         **kw) -> httpx.Response:  # fmt: skip
    """5xx and network errors are retried with exponential backoff (1, 2, 4, 8 s); 4xx are answers.
    ``auth``: the Authorization header, made anew for each attempt (an OIDC token is single-use)."""
    delay = float(os.environ.get("DREAMFORGE_ACTION_BACKOFF_S", "1"))
    for attempt in range(1, RETRIES + 1):
        try:
            if auth is not None:
                kw["headers"] = {**kw.get("headers", {}), "Authorization": auth()}
            r = http.request(method, url, **kw)
            if r.status_code < 500:
                return r
            why = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            why = f"{type(e).__name__}: {e}"
        if attempt == RETRIES:
            raise fail(f"DreamForge API unreachable at {url} after {RETRIES} attempts; last: {why}")
        annotate("warning", f"attempt {attempt} of {RETRIES} failed ({why}); retrying in {delay:g} s")
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def oidc_token(audience: str) -> str:
    url, token = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"), os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not token:
        raise fail("no credentials: set the `secret` and `api-key` inputs, or let the job request an OIDC token "
                   f"with\n{PERMISSIONS_FIX}")  # fmt: skip
    # The URL already carries a query (api-version); add the audience to it, as @actions/core does.
    # Like @actions/core's getIDToken (src/oidc-utils.ts): retried, and masked in the log.
    with httpx.Client(timeout=30) as http:
        r = request_with_retries(http, "GET", str(httpx.URL(url).copy_merge_params({"audience": audience})),
                                 headers={"Authorization": f"bearer {token}"})  # fmt: skip
    if r.status_code != 200:
        raise fail(f"GitHub refused an OIDC token (HTTP {r.status_code}); the job needs\n{PERMISSIONS_FIX}")
    value = r.json()["value"]
    sys.stdout.write(f"::add-mask::{value}\n")
    return value


def post_push(endpoint: str, payload: dict[str, Any], secret: str, api_key: str, audience: str,
              config_path: str, config_text: str) -> dict[str, Any]:  # fmt: skip
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "X-DreamForge-Delivery": payload["delivery"]}
    auth = None
    if secret:
        if not api_key:
            raise fail("the `secret` input needs the `api-key` input too (the key names the project, the secret signs)")
        headers["Authorization"] = f"Bearer {api_key}"
        headers["X-DreamForge-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    else:  # a fresh token per attempt: the server spends each token once
        def auth() -> str:
            return f"Bearer {oidc_token(audience)}"
    with httpx.Client(timeout=30) as http:
        r = request_with_retries(http, "POST", f"{endpoint}/api/webhooks/github-action", content=body, headers=headers,
                                 auth=auth)  # fmt: skip
    if r.status_code == 422:
        detail = r.json().get("detail")
        if isinstance(detail, list):  # the server's own checks (dataset, reward): point at the field too
            annotate_config_errors(config_path, config_text, [{"loc": ".".join(str(p) for p in e["loc"][1:]) if
                                   e["loc"] and e["loc"][0] == config_path else ".".join(map(str, e["loc"])),
                                   "msg": e["msg"]} for e in detail])  # fmt: skip
            raise StepFailed("the DreamForge API refused the config")
        raise fail(f"{config_path}: {detail}", file=config_path)
    if r.status_code >= 400:
        raise fail(f"the DreamForge API answered HTTP {r.status_code}: {_detail(r)}")
    return r.json()


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text[:500]


def wait_for_job(endpoint: str, api_key: str, job_id: str, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """The job once it has finished (``(job, True)``), or as it is when ``timeout_s`` runs out."""
    poll = float(os.environ.get("DREAMFORGE_ACTION_POLL_S", "10"))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=endpoint, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as http:
        r = request_with_retries(http, "GET", "/api/meta")  # which statuses are final: the server's word
        if r.status_code != 200:
            raise fail(f"cannot read the API's vocabulary (GET /api/meta): HTTP {r.status_code} {_detail(r)}")
        final = set(r.json()["final"])
        while True:
            r = request_with_retries(http, "GET", f"/api/jobs/{job_id}")
            if r.status_code != 200:
                raise fail(f"cannot read job {job_id}: HTTP {r.status_code} {_detail(r)}")
            job = r.json()
            if job["status"] in final or time.monotonic() > deadline:
                return job, job["status"] in final
            time.sleep(poll)


# -- outputs -------------------------------------------------------------------------------
def metrics_of(job: dict[str, Any]) -> dict[str, Any]:
    result = job.get("result") or {}
    return {"primary_metric": result.get("primary_metric"), "reward": result.get("reward"), "models": result.get("models") or {},
            "training": job.get("metrics") or {}, "verdict": verdict_of(job),
            "released": (result.get("release") or {}).get("stage")}  # fmt: skip


def reward_score_of(job: dict[str, Any] | None) -> str:
    """The released model's held-out score under the job's own reward (the ``reward-score``
    output), else empty."""
    result = (job or {}).get("result") or {}
    models = result.get("models") or {}
    for name in models_newest_first((result.get("release") or {}).get("stage")):
        if isinstance((models.get(name) or {}).get(REWARD_SCORE), int | float):
            return f"{models[name][REWARD_SCORE]:.4g}"
    return ""


def gate_of(job: dict[str, Any] | None) -> dict[str, Any]:
    """The preview gate's verdict against the default branch's released model (github/gates.py), or {}."""
    return (((job or {}).get("result") or {}).get("gate")) or {}


def delta_of(job: dict[str, Any] | None) -> str:
    """The ``delta`` output: the gate metric's difference to the default branch's model, e.g. ``+0.0400``."""
    d = gate_of(job).get("delta")
    return f"{d:+.4f}" if isinstance(d, int | float) else ""


def verdict_of(job: dict[str, Any] | None) -> str:
    """``learned`` / ``did_not_learn`` for a finished job (pipeline/verdict.py), else empty."""
    return ((((job or {}).get("result") or {}).get("verdict") or {}).get("verdict")) or ""


def summary(push: dict[str, Any], answer: dict[str, Any], job: dict[str, Any] | None) -> str:
    link = answer.get("dashboard_url")
    head = f"## DreamForge preview `{answer['jobId']}`: {job['status'] if job else answer['status']}"
    out = [head, "", f"`{push['repository']}` · branch `{push['branch']}` · commit `{push['sha'][:12]}`"
           + (f" · PR #{push['pr']}" if push.get("pr") else "")]  # fmt: skip
    if link:
        out += ["", f"[Open the preview in the dashboard]({link})"]
    if answer.get("superseded"):
        out += ["", "Superseded: " + ", ".join(f"`{j}`" for j in answer["superseded"])]
    if answer.get("duplicate") or answer.get("created") is False:
        out += ["", "This push and config already have a job; it is reused."]
    if answer["status"] == "awaiting_approval":
        out += ["", "A pull request from a fork: it trains once a project member approves it "
                f"(`POST /api/jobs/{answer['jobId']}/approve`)."]  # fmt: skip
    if job:
        out += ["", "| stage | status | attempts | seconds |", "|---|---|---|---|"]
        for s in STAGES:
            st = job["stages"].get(s) or {}
            secs = f"{st['seconds']:.1f}" if isinstance(st.get("seconds"), int | float) else ""
            out.append(f"| {s} | {st.get('status', '')} | {st.get('attempts', 0)} | {secs} |")
        result = job.get("result") or {}
        models = result.get("models") or {}
        verdict = result.get("verdict") or {}
        if verdict.get("verdict") == "did_not_learn":
            out += ["", "> [!WARNING]", "> **The model did not learn.** " + "; ".join(verdict.get("problems") or [])]
            out += [f"> - likely cause: {c['cause']}. Try: {c['fix']}" for c in verdict.get("causes") or []]
        if models:
            primary = result.get("primary_metric")
            released = (result.get("release") or {}).get("stage")
            trained = [n for n in models_newest_first(released)
                       if isinstance((models.get(n) or {}).get(primary), int | float)]  # fmt: skip
            final = trained[0] if trained else None
            if final:
                out += ["", f"**{primary}** of the released model ({final}): **{models[final][primary]:.4g}**"]
            if (result.get("release") or {}).get("reason"):
                out += ["", f"Released: {result['release']['reason']}."]
            keys = table_keys(models, primary)
            titles = [metric_title(k, result.get("reward")) for k in keys]
            out += ["", "| model | " + " | ".join(titles) + " |", "|---|" + "---|" * len(keys)]
            out += [f"| {n} | " + " | ".join(f"{m[k]:.4g}" if isinstance(m.get(k), int | float) else "" for k in keys) + " |"
                    for n, m in models.items()]  # fmt: skip
            gate = gate_of(job)
            base = result.get("baseline") or {}
            if base.get("metrics"):  # the default branch's released model, side by side with this branch's
                out.append(f"| **{base['name']}** | " + " | ".join(
                    f"{base['metrics'][k]:.4g}" if isinstance(base["metrics"].get(k), int | float) else "" for k in keys) + " |")
            if gate:
                word = {True: "✅ passed", False: "❌ failed"}.get(gate.get("passed"), "not compared")
                out += ["", f"**Gate {word}**: {gate.get('text')}."]
        if job.get("error"):
            out += ["", f"**Error** ({job['error'].get('kind')}): {job['error'].get('message')}"]
    return "\n".join(out) + "\n"


def preflight_section(endpoint: str, api_key: str, raw: dict[str, Any]) -> str:
    """The server's preflight of this config (``POST /api/preflight``) as Markdown. It informs and
    never fails the step: the job is already queued, and a preflight the server cannot run (busy,
    an older server) only says so. Error findings are also annotated, so the run's page shows them."""
    out = ["", "### Preflight", ""]
    try:
        with httpx.Client(base_url=endpoint, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as http:
            r = http.post("/api/preflight", json={"config": raw})
    except httpx.HTTPError as e:
        return "\n".join([*out, f"Not run: {type(e).__name__}: {e}", ""])
    if r.status_code != 200:
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else r.text[:200]
        if isinstance(detail, list):
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc') or []))}: {d.get('msg')}" for d in detail)
        return "\n".join([*out, f"Not run (HTTP {r.status_code}): {detail}", ""])
    rep = r.json()
    for f in rep["findings"]:
        if f["severity"] == "error":
            annotate("warning", f"preflight: {f['message']}. Fix: {f['fix']}", title="DreamForge preflight")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out += [f"**{rep['errors']} error(s)**" if rep["errors"] else "No errors.", "",
            "| severity | check | finding | fix |", "|---|---|---|---|"]  # fmt: skip
    out += [f"| {f['severity']} | {f['check']} | {cell(f['message'])} | {cell(f['fix'])} |" for f in rep["findings"]]
    cost = rep["cost"]
    out += ["", f"Estimated on Modal: {cost['seconds'] / 60:.1f} min, ${cost['usd']:.2f}"
            + ("" if cost["complete"] else " plus stages with no measured step time")
            + f" (prices as of {cost['prices_as_of']})."]  # fmt: skip
    return "\n".join(out) + "\n"


def table_keys(models: dict[str, dict[str, Any]], primary: str | None) -> list[str]:
    """Metric columns: the primary metric first; timings are not metrics."""
    keys = sorted({k for m in models.values() for k, v in m.items() if isinstance(v, int | float) and not k.endswith("_seconds")})
    return sorted(keys, key=lambda k: k != primary)


def run() -> None:
    endpoint = get_input("endpoint").rstrip("/")
    if not endpoint:
        raise fail("the `endpoint` input is required: the DreamForge API's URL, e.g. https://dreamforge.example.com")
    secret, api_key = get_input("secret"), get_input("api-key")
    wait = get_input("wait", "false").lower() in ("true", "1", "yes")
    timeout_s = float(get_input("timeout-minutes", "60")) * 60
    workspace = Path(os.environ.get("GITHUB_WORKSPACE") or ".")
    config_path = get_input("config", "dreamforge.config.json")
    push = describe_push()
    if push is None:
        annotate("notice", f"{os.environ.get('GITHUB_REF')}: not a branch push; nothing to train")
        set_output("status", "skipped")
        return
    try:  # at the sha the job is for: a pull request's head, not the merge commit checked out
        text = checkout.config_text(workspace, config_path, push["sha"] if push["event"] == "pull_request" else None)
    except (checkout.NotAtSha, OSError) as e:
        raise fail(str(e), file=config_path) from None
    if text is None:
        annotate("notice", f"no {config_path} in this commit; nothing to train")
        set_output("status", "skipped")
        return
    raw = read_config(text, config_path)
    payload = {**push, "delivery": str(uuid.uuid4()), "timestamp": time.time(), "config": raw, "config_path": config_path}
    answer = post_push(endpoint, payload, secret, api_key, get_input("audience", "dreamforge"), config_path, text)
    job_id = answer["jobId"]
    set_output("job-id", job_id)
    set_output("dashboard-url", answer.get("dashboard_url") or "")
    job, finished = None, False
    if wait:
        if not api_key:
            raise fail("`wait: true` reads the job with the `api-key` input; add it (a project API key)")
        job, finished = wait_for_job(endpoint, api_key, job_id, timeout_s)
    elif api_key:
        with httpx.Client(base_url=endpoint, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as http:
            r = request_with_retries(http, "GET", f"/api/jobs/{job_id}")
            job = r.json() if r.status_code == 200 else None
    status = job["status"] if job else answer["status"]
    set_output("status", status)
    set_output("verdict", verdict_of(job))
    set_output("reward", ((job or {}).get("result") or {}).get("reward") or "")
    set_output("reward-score", reward_score_of(job))
    set_output("metrics", json.dumps(metrics_of(job) if job else {}))
    set_output("gate", {True: "passed", False: "failed"}.get(gate_of(job).get("passed"), ""))
    set_output("delta", delta_of(job))
    write_summary(summary(push, answer, job) + (preflight_section(endpoint, api_key, raw) if api_key else ""))
    if wait and not finished:
        raise fail(f"job {job_id} still {status} after {timeout_s / 60:.0f} minutes (timeout-minutes)")
    if wait and status != "succeeded":
        err = (job or {}).get("error") or {}
        raise fail(f"job {job_id} {status}" + (f" in stage {err.get('stage')}" if err.get("stage") else "")
                   + (f": {err.get('message')}" if err.get("message") else ""))  # fmt: skip
    if wait and gate_of(job).get("passed") is False:  # the commit status fails too (github/gates.py)
        raise fail(f"job {job_id} is worse than the default branch's model: {gate_of(job)['text']}")
    if wait and verdict_of(job) == "did_not_learn":  # the commit status says failure too (github_status.py)
        problems = "; ".join(job["result"]["verdict"].get("problems") or [])
        raise fail(f"job {job_id} succeeded but the model did not learn: {problems}")


def main() -> int:
    try:
        run()
    except StepFailed as e:
        write_summary(f"## DreamForge: the step failed\n\n```\n{e}\n```\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
