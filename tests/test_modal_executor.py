"""Jobs through ``ModalExecutor`` against a real SecantusDB, with only the lookup of the deployed
functions swapped: a "spawn" runs the stage function's body (``.local()``) in a thread behind a
FunctionCall-like handle. Everything else (the worker, the queue, the fencing, the stage
function body, the pipeline on the tiny model) is the real code."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_job_config
from service_helpers import wait_for

from dreamforge.executors import modal_calls
from dreamforge.executors.modal_executor import ModalExecutor
from dreamforge.executors.modal_stage import run_stage
from dreamforge.jobs import queue
from dreamforge.jobs.sink import MongoSink
from dreamforge.settings import Settings
from dreamforge.store import JOBS, LOGS, METRICS, client, ensure_indexes
from dreamforge.worker import Worker
from pipeline.config import STAGES, build_config, config_hash


class LocalCall:
    """Like ``modal.FunctionCall``: ``object_id``, ``get(timeout=0)`` raising TimeoutError while
    running, ``cancel()``. The body runs with ``.local()`` in a thread."""

    def __init__(self, fn, args) -> None:
        self.object_id = "fc-" + secrets.token_hex(6)
        self.cancelled = False
        self._result = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._result = fn.local(*args)
        except BaseException as e:  # noqa: BLE001 — handed to get(), as Modal does
            self._error = e

    def get(self, timeout=None):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError()
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True  # a thread cannot be killed: the body stops on the job's cancel flag


class LocalFunctions:
    """Stands in for ``modal.Function.from_name`` / ``FunctionCall.from_id``: the functions
    registered in ``modal_app.app``, spawned locally; records every spawn."""

    def __init__(self) -> None:
        self.calls: dict[str, LocalCall] = {}
        self.spawns: list[tuple[str, str | None]] = []  # (function name, gpu from with_options)
        self.options: dict[str, dict] = {}  # function name -> its with_options

    def lookup(self, name: str):
        return _LocalFunction(self, name)

    def from_id(self, call_id: str) -> LocalCall:
        return self.calls[call_id]


class _LocalFunction:
    def __init__(self, registry: LocalFunctions, name: str, gpu: str | None = None) -> None:
        self.registry, self.name, self.gpu = registry, name, gpu

    def with_options(self, *, gpu: str | None = None, **options):
        self.registry.options[self.name] = {"gpu": gpu, **options}
        return _LocalFunction(self.registry, self.name, gpu)

    def spawn(self, *args) -> LocalCall:
        import modal_app.app as deployed

        call = LocalCall(getattr(deployed, self.name), args)
        self.registry.calls[call.object_id] = call
        self.registry.spawns.append((self.name, self.gpu))
        return call


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from dbserver import running_secantus

    home = tmp_path_factory.mktemp("modal")
    with running_secantus(home) as uri:
        # The stage functions read Settings() from the environment, as in their container.
        saved = {k: os.environ.get(k) for k in ("MONGODB_URI", "DREAMFORGE_HOME")}
        os.environ.update(MONGODB_URI=uri, DREAMFORGE_HOME=str(home))
        settings = Settings(lease_s=3.0, backoff_s=0.2, poll_s=0.05)
        with client(uri) as c:
            ensure_indexes(c[settings.db_name])
            yield settings, c[settings.db_name]
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def sealed(config: dict) -> dict:
    """What the orchestrator ships to a stage's function: the config as submit sealed it."""
    from pipeline.sealed import seal

    return seal(build_config(config))


def new_job(db, config: dict) -> str:
    doc = queue.new_job("prj_modal", config, config_hash(build_config(config)), source={"kind": "test"})
    db[JOBS].insert_one(doc)
    return doc["_id"]


def logs_of(db, job_id: str) -> list[dict]:
    return [r for c in db[LOGS].find({"job_id": job_id}) for r in c["rows"]]


def messages(db, job_id: str) -> list[str]:
    return [r["message"] for r in sorted(logs_of(db, job_id), key=lambda r: r["seq"])]


def metric_rows(db, job_id: str) -> list[dict]:
    return [{**r, "attempt": c["attempt"]} for c in db[METRICS].find({"job_id": job_id}) for r in c["rows"]]


@pytest.fixture(scope="module")
def local_reference(env, tmp_path_factory):
    """The local path: each stage as ``pipeline.run --stages N`` runs it (one ``run_job`` per stage)."""
    from pipeline.job import run_job

    out = tmp_path_factory.mktemp("reference") / "out"
    cfg = build_config(tiny_job_config())
    for n in (1, 2, 3, 4):
        record = run_job(cfg, out, stages=[n])
    return record["evaluation"]


def test_a_stage_function_whose_call_was_replaced_trains_nothing(env):
    """A worker that died between spawning and recording its call is followed by one that
    spawns again with a new token: the old call, if it ever starts, must not train."""
    import modal_app.app as deployed

    settings, db = env
    cfg = tiny_job_config()
    job_id = new_job(db, cfg)
    job = queue.claim(db, "test-worker", lease_s=600)
    modal_calls.record_token(db, job_id, job["attempt"], "warm_start", "the-new-token", None)
    result = deployed.warm_start.local(job_id, "the-old-token", sealed(cfg))
    assert result["kind"] == "lost"
    # On Modal the call also waits for its own id on the job: one whose spawner died before
    # recording it gives up, even holding the current token.
    modal_calls.record_call(db, job_id, job["attempt"], "warm_start", "the-new-token", "fc-recorded")
    result = run_stage(job_id, "warm_start", "the-new-token", sealed(cfg), call_id="fc-never-recorded", own_wait_s=1.0)
    assert result["kind"] == "lost"
    assert logs_of(db, job_id) == [] and not (settings.artifacts / job_id / "out").exists()
    queue.finish(db, job_id, job["attempt"], "failed")


def test_a_users_mistake_is_returned_not_raised_so_modal_never_retries_it(env):
    import modal_app.app as deployed

    settings, db = env
    cfg = tiny_job_config(data={"dataset": "/no/such/dataset"})
    job_id = new_job(db, cfg)
    job = queue.claim(db, "test-worker", lease_s=600)
    token = modal_calls.new_token()
    modal_calls.record_token(db, job_id, job["attempt"], "warm_start", token, None)
    result = deployed.warm_start.local(job_id, token, sealed(cfg))
    assert result["kind"] == "user_error"
    assert "/no/such/dataset" in result["message"]
    queue.finish(db, job_id, job["attempt"], "failed")


def test_job_through_modal_executor_survives_a_crashed_orchestrator_with_local_metrics(env, local_reference):
    """The first orchestrator spawns stage 1 and dies; the one that takes the job over follows
    that call instead of paying for a second run, and the job ends with the local path's metrics."""
    settings, db = env
    fake = LocalFunctions()
    cfg = tiny_job_config(domain={"compute": "A10G"})
    job_id = new_job(db, cfg)

    # Orchestrator 1: claims, spawns warm_start, then loses its lease (killed).
    job = queue.claim(db, "orchestrator-1", settings.lease_s)
    workdir = settings.artifacts / job_id
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(sealed(job["config"])))
    queue.stage_started(db, job_id, job["attempt"], "warm_start")
    first = ModalExecutor(settings, lookup=fake.lookup, call_from_id=fake.from_id, poll_s=0.05)
    outcome = first.run_stage(job, "warm_start", workdir, MongoSink(db, job_id, job["attempt"]), lambda: "lost", 600)
    assert outcome.kind == "lost"
    stored = db[JOBS].find_one({"_id": job_id})["modal_calls"]["warm_start"]
    assert stored["call_id"] in fake.calls and stored["attempt"] == 1 and stored["gpu"] == "L40S"
    assert not fake.calls[stored["call_id"]].cancelled  # a lost lease never cancels the paid call

    # Its lease expires; the sweep returns the job to the queue; orchestrator 2 takes it over.
    db[JOBS].update_one({"_id": job_id}, {"$set": {"lease_expires": queue.now()}})
    assert queue.reap(db, limit=settings.infra_retries) == [job_id]
    worker = Worker(settings, executor=ModalExecutor(settings, lookup=fake.lookup, call_from_id=fake.from_id,
                                                     poll_s=0.05), worker_id="orchestrator-2")  # fmt: skip
    assert worker.run_once()

    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "succeeded", (doc["error"], messages(db, job_id)[-10:])
    assert doc["attempt"] == 2
    assert [name for name, _ in fake.spawns] == ["warm_start", "domain", "reward", "evaluate"]  # warm_start once
    assert ("domain", "A10G") in fake.spawns  # the job's compute hint picks the GPU
    assert fake.options == {"domain": {"gpu": "A10G", "cpu": 4.0, "memory": 16384}}  # and reserves CPU and memory for it
    assert {s: c["attempt"] for s, c in doc["modal_calls"].items()} == dict.fromkeys(STAGES, 2)
    assert all(doc["stages"][s]["status"] == "done" for s in STAGES)
    # Every stage function body ran its real stage on the tiny model (.local()).
    out = settings.artifacts / job_id / "out"
    assert doc["stages"]["warm_start"]["metrics"]["steps"] == cfg["warm_start"]["max_steps"]
    assert doc["stages"]["reward"]["metrics"]["steps"] == cfg["rl"]["max_steps"]
    assert doc["stages"]["domain"]["artifact"] == str(out / "stages" / "domain" / "model")
    assert (out / "stages" / "domain" / "model" / "config.json").exists()
    assert doc["result"]["artifacts"]["metrics.json"] == str(out / "metrics.json")
    assert doc["progress"] == 100.0

    # Same metrics as the local path.
    key = local_reference["primary_metric"]
    assert doc["result"]["primary_metric"] == key
    assert set(doc["result"]["models"]) == set(local_reference["models"])
    for name, m in local_reference["models"].items():
        assert doc["result"]["models"][name][key] == pytest.approx(m[key], abs=1e-6), name

    # The adopted call's lines went to attempt 2, and sequence numbers stayed unique and dense
    # although the function and the worker appended from different threads.
    msgs = messages(db, job_id)
    assert any("following Modal call" in m for m in msgs)
    assert "stage warm_start completed" in " ".join(msgs)
    seqs = sorted(r["seq"] for r in logs_of(db, job_id))
    assert seqs == list(range(1, len(seqs) + 1))
    rows = metric_rows(db, job_id)
    assert {r["stage"] for r in rows} >= {"warm_start", "domain", "reward"}
    assert {r["attempt"] for r in rows if r["stage"] == "warm_start"} == {2}


def test_cancelling_a_job_cancels_its_modal_call(env):
    settings, db = env
    fake = LocalFunctions()
    cfg = tiny_job_config(warm_start={"max_steps": 400})
    job_id = new_job(db, cfg)
    job = queue.claim(db, "orchestrator-c", settings.lease_s * 100)
    workdir = settings.artifacts / job_id
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(sealed(cfg)))

    def check() -> str | None:  # the worker's heartbeat saw the user's cancel once training ran
        if db[JOBS].find_one({"_id": job_id}, {"progress": 1})["progress"] > 0:
            db[JOBS].update_one({"_id": job_id}, {"$set": {"cancel_requested": True}})  # what POST /cancel does
            return "cancelled"
        return None

    executor = ModalExecutor(settings, lookup=fake.lookup, call_from_id=fake.from_id, poll_s=0.2)
    outcome = executor.run_stage(job, "warm_start", workdir, MongoSink(db, job_id, job["attempt"]), check, 600)
    assert outcome.kind == "cancelled"
    call = next(iter(fake.calls.values()))
    assert call.cancelled  # Modal stops the container; the stored call is forgotten so a requeue spawns afresh
    assert "warm_start" not in (db[JOBS].find_one({"_id": job_id}).get("modal_calls") or {})
    # The body stops on its own as well (a local thread cannot be killed): early, and says why.
    assert call.get(timeout=30)["kind"] == "cancelled"
    assert 0 < db[JOBS].find_one({"_id": job_id})["progress"] < 45  # warm_start is the first 45 %
    queue.finish(db, job_id, job["attempt"], "cancelled")


def test_a_github_job_on_modal_posts_its_commit_status_and_pr_comment(env, gh, monkeypatch):
    """End to end on the local stand-ins: a push stored while GitHub was away is read by the
    sweep, its job runs through ``ModalExecutor`` in the orchestrator's loop, and the commit
    status goes pending → success with the pull request's comment posted, with no API process
    and no ``dreamforge worker`` running (on Modal neither exists)."""
    from github_helpers import sha

    import modal_app.app as deployed
    from dreamforge.auth import create_project
    from dreamforge.github import push_outbox
    from dreamforge.store import GITHUB_PUSHES

    settings, db = env
    for k, v in {"GITHUB_TOKEN": "ghs_modal", "GITHUB_API_URL": gh.url, "DREAMFORGE_GITHUB_WRITE_INTERVAL_S": "0"}.items():
        monkeypatch.setenv(k, v)  # the `github` secret of sweep and orchestrate, and where GitHub is
    pid, _ = create_project(db, "modal-github")
    repo, commit, pr = "acme/on-modal", sha(), 7
    cfg = tiny_job_config(name="on-modal", evaluate={"min_gain": 0, "min_parse_rate": 0})  # a green check on a tiny model
    gh.files[(repo, commit, "dreamforge.config.json")] = json.dumps(cfg)
    p = push_outbox.pending_doc(pid, "d-modal", repo, ("pr-branch", commit, pr, False))
    db[GITHUB_PUSHES].insert_one({**p, "due": queue.stamp(queue.now())})  # the web endpoint stored it; GitHub was away

    first = deployed.sweep.local()
    assert first["resolved"] == 1 and first["ready"] == 1 and first["github"] == 1
    job = db[JOBS].find_one({"source.sha": commit})
    assert job["status"] == "queued" and job["source"]["pr"] == pr
    assert [(s["state"], s["description"]) for s in gh.statuses(commit)] == [("pending", "queued")]

    fake = LocalFunctions()
    worker = Worker(Settings(lease_s=3.0, backoff_s=0.2, poll_s=0.05),
                    executor=ModalExecutor(settings, lookup=fake.lookup, call_from_id=fake.from_id, poll_s=0.05),
                    worker_id="orchestrator-gh")  # fmt: skip
    try:
        assert deployed.run_jobs(worker) == 1
    finally:
        worker.client.close()
    deployed.sweep.local()  # whatever the orchestrator left due
    doc = db[JOBS].find_one({"_id": job["_id"]})
    assert doc["status"] == "succeeded", (doc["error"], messages(db, job["_id"])[-10:])
    states = [(s["state"], s["description"]) for s in gh.statuses(commit)]
    assert states[0] == ("pending", "queued") and states[-1][0] == "success", states
    assert any(d.startswith("training: stage") for _, d in states)  # posted while the stages ran
    assert [s for s, _ in states[:-1]] == ["pending"] * (len(states) - 1)
    comments = [r for r in gh.requests if r["method"] == "POST" and r["path"] == f"/repos/{repo}/issues/{pr}/comments"]
    assert len(comments) == 1 and job["_id"] in comments[0]["json"]["body"]
    assert "github_outbox" not in doc  # final status and comment are on GitHub: nothing left to post
    assert {r["auth"] for r in gh.requests if repo in r["path"]} == {"token ghs_modal"}


# -- the artifacts Volume ---------------------------------------------------------------------
class MountedVolume:
    """The artifacts Volume as Modal 1.6.4's ``_Volume.commit`` treats the container's mount:
    a commit is followed by a reload (modal/volume.py: ``if not resp.skip_reload: await
    self._do_reload(lock=False)``), and a reload fails while files on the Volume are open
    ("Reloading will fail if there are open files for the volume", raised as RuntimeError).
    Open files are this process's, read from /proc/self/fd under ``root``. ``fail`` makes that
    many commits fail first, as a dropped connection does."""

    def __init__(self, root: Path) -> None:
        self.root, self.commits, self.refused, self.fail = root, 0, [], 0

    def open_files(self) -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(f"{self.root}/"):
                found.append(target)
        return found

    def commit(self) -> None:
        import modal.exception

        if self.fail:
            self.fail -= 1
            raise modal.exception.ConnectionError("Could not connect to the Modal server.")
        if files := self.open_files():
            self.refused.append(files)
            raise RuntimeError(f"there are open files preventing the operation: {files[0]}")
        self.commits += 1


def test_a_stage_commits_its_volume_once_after_closing_its_files_retrying_a_failed_commit(env):
    """No commit thread: while the stage runs, events.jsonl is open on the Volume, so a periodic
    commit (and its reload) would fail; the one commit after the stage succeeds, on its second
    try after a dropped connection."""
    from dreamforge.executors.modal_stage import commit_volume

    settings, db = env
    cfg = tiny_job_config()
    job_id = new_job(db, cfg)
    job = queue.claim(db, "volume-test", settings.lease_s * 100)
    assert job["_id"] == job_id
    token = modal_calls.new_token()
    modal_calls.record_token(db, job_id, job["attempt"], "warm_start", token, None)
    volume = MountedVolume(settings.artifacts / job_id)
    volume.fail = 1
    seen_open, done = set(), threading.Event()

    def watch() -> None:  # what a commit made during the stage would have run into
        while not done.wait(0.05):
            seen_open.update(Path(f).name for f in volume.open_files())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_stage(job_id, "warm_start", token, sealed(cfg), commit=volume.commit)
    finally:
        done.set()
        watcher.join(5)
    assert result["kind"] == "done", result
    assert "events.jsonl" in seen_open  # open for the whole stage: a commit then would have failed
    assert volume.commits == 1 and volume.refused == [] and volume.fail == 0  # retried once, files closed
    queue.finish(db, job_id, job["attempt"], "failed")

    volume.fail = 2  # twice in a row: reported, so a finished stage raises and Modal retries it
    assert commit_volume(volume.commit, "test") is False and volume.commits == 1


def test_the_app_has_no_volume_commit_thread():
    import modal_app.app as deployed

    assert not hasattr(deployed, "_committing") and not hasattr(deployed, "COMMIT_EVERY_S")
    assert "threading" not in vars(deployed)


# -- polling a call: stand-ins for Modal's answers -------------------------------------------
class RunningCall:
    """A ``FunctionCall`` whose input has no output yet: ``get(timeout=0)`` raises the built-in
    TimeoutError, as Modal's ``_Invocation.poll_function`` does when ``FunctionGetOutputs``
    returns no output while inputs are unfinished (modal/_functions.py, 1.6.4). ``errors`` are
    raised first, one per poll, then ``result`` (if any) is returned."""

    def __init__(self, errors=(), result=None) -> None:
        self.object_id = "fc-" + secrets.token_hex(6)
        self.errors, self.result = list(errors), result
        self.polls, self.cancelled = 0, False

    def get(self, timeout=None):
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.result is not None:
            return self.result
        raise TimeoutError()

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True


class Spawner:
    """``Function.from_name(...)`` whose ``spawn`` hands out the given stand-in calls."""

    def __init__(self, *calls: RunningCall) -> None:
        self.calls = list(calls)
        self.by_id = {c.object_id: c for c in calls}

    def lookup(self, name: str):
        return self

    def with_options(self, **_):
        return self

    def spawn(self, *args) -> RunningCall:
        return self.calls.pop(0)


def claimed_job(settings, db, stage: str = "warm_start"):
    job_id = new_job(db, tiny_job_config())
    job = queue.claim(db, "poller", settings.lease_s * 100)
    while job["_id"] != job_id:
        queue.finish(db, job["_id"], job["attempt"], "cancelled")
        job = queue.claim(db, "poller", settings.lease_s * 100)
    workdir = settings.artifacts / job_id
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(sealed(job["config"])))
    queue.stage_started(db, job_id, job["attempt"], stage)
    return job, workdir


def test_a_call_is_polled_against_its_stage_budget_counted_from_its_spawn(env):
    """Not the worker's local stage timeout: a call runs until its Modal budget is spent, and an
    adopted call keeps the budget it had (a takeover does not restart the clock)."""
    import time
    from datetime import timedelta

    settings, db = env
    job, workdir = claimed_job(settings, db)
    call = RunningCall()
    spawner = Spawner(call)
    ex = ModalExecutor(settings, lookup=spawner.lookup, call_from_id=spawner.by_id.get, poll_s=0.05,
                       budget_s=lambda stage: 1.0)  # fmt: skip
    t0 = time.monotonic()
    outcome = ex.run_stage(job, "warm_start", workdir, MongoSink(db, job["_id"], job["attempt"]), lambda: None, 0.01)
    assert outcome.kind == "timeout" and "budget on Modal" in outcome.message
    assert time.monotonic() - t0 >= 1.0 and call.cancelled  # the worker's 0.01 s did not cut it

    # A call spawned an hour ago by a dead orchestrator, adopted now with an hour and a second of budget.
    adopted = RunningCall()
    spawner.by_id[adopted.object_id] = adopted
    db[JOBS].update_one({"_id": job["_id"]}, {"$set": {"modal_calls.warm_start": {
        "token": "t", "attempt": job["attempt"], "call_id": adopted.object_id, "gpu": "L40S",
        "spawned_at": queue.now() - timedelta(hours=1)}}})  # fmt: skip
    job = db[JOBS].find_one({"_id": job["_id"]})
    ex.budget_s = lambda stage: 3601.0
    t0 = time.monotonic()
    outcome = ex.run_stage(job, "warm_start", workdir, MongoSink(db, job["_id"], job["attempt"]), lambda: None, 600)
    assert outcome.kind == "timeout" and time.monotonic() - t0 < 10 and adopted.cancelled
    queue.finish(db, job["_id"], job["attempt"], "failed")


def unreachable_errors() -> list[Exception]:
    """What ``get()`` raises when Modal cannot be asked, in Modal 1.6.4: ``ConnectionError`` once
    the client's own retries are spent on an OSError or a timeout
    (``_utils.grpc_utils.process_exception_before_retry``), ``ServiceError`` for gRPC UNAVAILABLE
    (``_grpc_client``), the client's ``RetryTimeoutError`` (a Modal TimeoutError), a bare OSError."""
    import modal.exception as me
    from modal._utils.grpc_utils import RetryTimeoutError

    return [me.ConnectionError("Could not connect to the Modal server."), me.ServiceError("UNAVAILABLE"),
            RetryTimeoutError(OSError("timed out")), ConnectionResetError(104, "Connection reset by peer")]  # fmt: skip


def test_modal_unreachable_while_polling_keeps_the_running_call(env):
    """Was: the first connection error counted as the call's end, ``forget()`` made the paid call
    see itself superseded, and it stopped. Now polling goes on (backing off) until Modal answers."""
    import time

    settings, db = env
    job, workdir = claimed_job(settings, db)
    errors = unreachable_errors()
    call = RunningCall(errors=list(errors))
    spawner = Spawner(call)
    ex = ModalExecutor(settings, lookup=spawner.lookup, call_from_id=spawner.by_id.get, poll_s=0.01)
    # The lease is lost a poll after Modal answers again: the call must still be the job's.
    t0 = time.monotonic()
    outcome = ex.run_stage(job, "warm_start", workdir, MongoSink(db, job["_id"], job["attempt"]),
                           lambda: "lost" if call.polls > len(errors) else None, 600)  # fmt: skip
    assert outcome.kind == "lost" and call.polls == len(errors) + 1 and not call.cancelled
    assert time.monotonic() - t0 >= 0.01 * (2 + 4 + 8 + 16)  # it backed off between unanswered polls
    stored = db[JOBS].find_one({"_id": job["_id"]})["modal_calls"]["warm_start"]
    assert stored["call_id"] == call.object_id  # not forgotten: the next owner adopts it
    queue.finish(db, job["_id"], job["attempt"], "failed")


def test_only_modals_terminal_answers_end_a_call(env):
    """Each terminal answer of ``get()`` in Modal 1.6.4 (``_process_result``, ``poll_function``)
    ends the call, and only then is it forgotten so a retry spawns afresh."""
    import modal.exception as me

    from dreamforge.executors.modal_executor import poll_answer
    from dreamforge.executors.modal_stage import StageInfraError

    assert poll_answer(TimeoutError()) == "running"
    assert {poll_answer(e) for e in unreachable_errors()} == {"transient"}
    settings, db = env
    cases = [(me.FunctionTimeoutError("timed out"), "timeout"), (me.OutputExpiredError(), "infra_error"),
             (me.InternalFailure("internal"), "infra_error"), (me.RemoteError("terminated"), "infra_error"),
             (StageInfraError("stage warm_start: CUDA error"), "infra_error")]  # fmt: skip
    for exc, kind in cases:
        job, workdir = claimed_job(settings, db)
        call = RunningCall(errors=[me.ConnectionError("blip"), exc])
        spawner = Spawner(call)
        ex = ModalExecutor(settings, lookup=spawner.lookup, call_from_id=spawner.by_id.get, poll_s=0.01)
        outcome = ex.run_stage(job, "warm_start", workdir, MongoSink(db, job["_id"], job["attempt"]), lambda: None, 600)
        assert outcome.kind == kind and call.polls == 2, (exc, outcome)
        assert "warm_start" not in (db[JOBS].find_one({"_id": job["_id"]}).get("modal_calls") or {})
        queue.finish(db, job["_id"], job["attempt"], "failed")


def test_the_stage_function_raises_only_its_own_error_type(env):
    """An OSError inside the function would read as "Modal unreachable" to the orchestrator,
    which would then poll a dead call until its budget ran out."""
    from dreamforge.executors.modal_stage import StageInfraError

    settings, db = env
    job, _ = claimed_job(settings, db)
    token = modal_calls.new_token()
    modal_calls.record_token(db, job["_id"], job["attempt"], "warm_start", token, None)
    blocker = settings.artifacts / "not-a-dir"
    blocker.write_text("")  # the artifacts root is a file: mkdir raises an OSError
    with pytest.raises(StageInfraError, match="NotADirectoryError|FileExistsError"):
        run_stage(job["_id"], "warm_start", token, sealed(tiny_job_config()), settings=Settings(home=blocker))
    queue.finish(db, job["_id"], job["attempt"], "failed")


@pytest.mark.parametrize("refusal,status,kind", [("invalid", "failed", "user"), ("unreachable", "queued", "infra")])
def test_a_spawn_modal_refuses_fails_the_job_not_the_orchestrator(env, refusal, status, kind):
    """Was: an exception from ``spawn`` went up through the worker and crashed the orchestrator
    (retried by Modal as infrastructure, over and over). Modal refusing the request (its
    ``InvalidError``, what the server answers for a GPU it does not offer) fails the job and names
    the field; Modal unreachable sends the job back to the queue to retry."""
    import modal.exception as me

    settings, db = env
    job_id = new_job(db, tiny_job_config(rl={"compute": "H100:2"}))

    class Refusing:
        def __init__(self) -> None:
            self.tries = 0

        def lookup(self, name):
            return self

        def with_options(self, **_):
            return self

        def spawn(self, *args):
            self.tries += 1
            raise (me.InvalidError("GPU type not available") if refusal == "invalid"
                   else me.ConnectionError("Could not connect to the Modal server."))  # fmt: skip

    fn = Refusing()
    worker = Worker(settings, executor=ModalExecutor(settings, lookup=fn.lookup, poll_s=0.01), worker_id="spawn-refused")
    # The job's earlier stages are done: the spawn that fails is the RL stage's, on its compute hint.
    db[JOBS].update_one({"_id": job_id}, {"$set": {f"stages.{s}.status": "done" for s in ("warm_start", "domain")}})
    try:
        while (doc := db[JOBS].find_one({"_id": job_id}))["status"] == "queued" and doc["attempt"] == 0:
            assert worker.run_once()  # returns: the orchestrator lives on
    finally:
        worker.client.close()
    doc = db[JOBS].find_one({"_id": job_id})
    assert fn.tries == 1 and doc["status"] == status and doc["error"]["kind"] == kind, doc["error"]
    assert "reward" not in (doc.get("modal_calls") or {})  # the recorded token is dropped with the call that never was
    if refusal == "invalid":
        assert "rl.compute" in doc["error"]["message"] and "H100:2" in doc["error"]["message"]
    else:
        assert "could not start it on Modal" in doc["error"]["message"]
        db[JOBS].update_one({"_id": job_id}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})


class CommittedFiles:
    """The artifacts Volume as ``Volume.read_file`` serves it outside a mount (Modal 1.6.4,
    modal/volume.py): an async generator of the committed file's blocks, FileNotFoundError
    (translated from the server's NotFoundError) for a path it does not hold."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.reads: list[str] = []

    async def read_file(self, path: str):
        self.reads.append(path)
        if path not in self.files:
            raise FileNotFoundError(f"No such file: {path}")
        data = self.files[path]
        for i in range(0, len(data), 8):  # in blocks, as Modal streams them
            yield data[i : i + 8]

    async def listdir(self, path: str, *, recursive: bool = False):
        """``Volume.listdir``: a file path lists that file; a folder its files and folders (all
        levels when ``recursive``), paths from the Volume's root; a path with nothing under it is
        the server's NOT_FOUND, raised as ``modal.exception.NotFoundError``."""
        import modal.exception
        from modal.types import FileEntry, FileEntryType

        if path in self.files:
            return [FileEntry(path, FileEntryType.FILE, 1_700_000_000, len(self.files[path]))]
        under = [f for f in self.files if f.startswith(path.rstrip("/") + "/")]
        if not under:
            raise modal.exception.NotFoundError(f"No such file or directory: {path}")
        entries, folders = [], set()
        for f in sorted(under):
            parts = f[len(path.rstrip("/")) + 1 :].split("/")
            if len(parts) > 1 and not recursive:
                folders.add(parts[0])
                continue
            for i in range(1, len(parts)):
                folders.add("/".join(parts[:i]))
            entries.append(FileEntry(f, FileEntryType.FILE, 1_700_000_000, len(self.files[f])))
        base = path.rstrip("/")
        return entries + [FileEntry(f"{base}/{d}", FileEntryType.DIRECTORY, 1_700_000_000, 0) for d in sorted(folders)]


# -- the web endpoint and the sweep (last: they leave a queued job behind) -----------------
def test_web_endpoint_spawns_an_orchestrator_when_a_request_queues_a_job(env):
    import asyncio

    import httpx
    import uvicorn
    from dbserver import free_port

    from dreamforge.api.app import create_app
    from dreamforge.auth import create_project
    from modal_app.app import configure_web

    settings, db = env
    pid, key = create_project(db, "modal-web")
    spawned = []

    async def spawn():
        spawned.append(1)

    # A job that finished on Modal: its predictions are on the Volume, not on this API's disk.
    volume = CommittedFiles()
    finished = new_job(db, tiny_job_config())
    out = settings.artifacts / finished / "out"
    db[JOBS].update_one({"_id": finished}, {"$set": {"project_id": pid, "status": "succeeded",
                        "result": {"artifacts": {"metrics.json": str(out / "metrics.json"), "model": str(out / "model")}}},
                        "$unset": {"queue_key": ""}})  # fmt: skip
    sample = {"file_name": "not-in-the-dataset.png", "text": "<box>", "pred": {"boxes": []}, "gt": {"boxes": []}}
    volume.files[f"{finished}/out/predictions.json"] = json.dumps({"domain": [sample]}).encode()
    model_files = {"config.json": b'{"model_type": "tiny"}', "weights/model.safetensors": os.urandom(5000)}
    for name, data in model_files.items():
        volume.files[f"{finished}/out/model/{name}"] = data
    volume.files[f"{finished}/out/metrics.json"] = b'{"evaluation": {}}'
    assert not out.exists()

    api = create_app(settings)
    configure_web(api, spawn, volume.read_file, volume.listdir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.post("/api/train", json={"config": {"rl": {"beta": -1}}}).status_code == 422
            bad_gpu = c.post("/api/train", json={"config": tiny_job_config(rl={"compute": "H100:0"})})
            assert bad_gpu.status_code == 422 and bad_gpu.json()["detail"][0]["loc"] == ["rl", "compute"]
            assert "from 1 to 8" in bad_gpu.json()["detail"][0]["msg"]
            assert c.get("/api/jobs").status_code == 200
            assert spawned == []  # nothing was queued
            r = c.post("/api/train", json={"config": tiny_job_config()})
            assert r.status_code == 201, r.text
            assert spawned == [1]
            assert db[JOBS].find_one({"_id": r.json()["jobId"]})["status"] == "queued"
            # GET /samples reads predictions.json through the Volume's API (was: always 404 on Modal).
            r = c.get(f"/api/jobs/{finished}/samples")
            assert r.status_code == 200, r.text
            assert [x["text"] for x in r.json()["samples"]] == ["<box>"] and r.json()["model"] == "domain"
            assert volume.reads == [f"{finished}/out/predictions.json"]
            # downloads list and stream through the Volume's API too (was: 404 "not on this server's disk")
            listed = {a["name"]: a for a in c.get(f"/api/jobs/{finished}/artifacts").json()["artifacts"]}
            assert (listed["model"]["files"], listed["model"]["bytes"]) == (2, sum(map(len, model_files.values())))
            whole = c.get(f"/api/jobs/{finished}/artifacts/model")
            assert whole.status_code == 200 and int(whole.headers["content-length"]) == len(whole.content)
            with tarfile.open(fileobj=io.BytesIO(whole.content)) as tar:
                got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            assert got == {f"{finished}-model/{k}": v for k, v in model_files.items()}
            cut = len(whole.content) // 2 + 3  # a resumed download, from inside a file's blocks
            r = c.get(f"/api/jobs/{finished}/artifacts/model", headers={"Range": f"bytes={cut}-"})
            assert r.status_code == 206 and whole.content[:cut] + r.content == whole.content
            r = c.get(f"/api/jobs/{finished}/artifacts/metrics.json", headers={"Range": "bytes=2-11"})
            assert r.status_code == 206 and r.content == b'{"evaluation": {}}'[2:12]
            volume.files.clear()
            r = c.get(f"/api/jobs/{finished}/samples", params={"n": 2})  # not cached: a new request
            assert r.status_code == 404 and "predictions.json" in r.json()["detail"]
            r = c.get(f"/api/jobs/{finished}/artifacts/model")
            assert r.status_code == 404 and "no longer stored" in r.json()["detail"]
    finally:
        server.should_exit = True
        thread.join(10)


def test_sweep_reaps_expired_leases_counts_ready_jobs_and_deletes_old_temporaries(env):
    import modal_app.app as deployed

    settings, db = env
    stale = new_job(db, tiny_job_config())
    job = queue.claim(db, "dead-orchestrator", settings.lease_s)
    while job["_id"] != stale:  # older queued jobs of this module go first
        queue.finish(db, job["_id"], job["attempt"], "cancelled")
        job = queue.claim(db, "dead-orchestrator", settings.lease_s)
    db[JOBS].update_one({"_id": stale}, {"$set": {"lease_expires": queue.now()}})
    old = new_job(db, tiny_job_config())
    db[JOBS].update_one({"_id": old}, {"$set": {"status": "succeeded", "finished_at": queue.now()},
                                       "$unset": {"queue_key": ""}})  # fmt: skip
    tmp = settings.artifacts / old / "out" / "stages"
    tmp.mkdir(parents=True)
    os.environ["DREAMFORGE_TEMP_RETENTION_S"] = "0"
    try:
        report = deployed.sweep.local()
    finally:
        os.environ.pop("DREAMFORGE_TEMP_RETENTION_S")
    assert report["reaped"] == [stale]
    assert report["ready"] == 1 and report["spawned"] == 1  # one orchestrator for the requeued job
    assert str(tmp) in report["removed"] and not tmp.exists()
    assert db[JOBS].find_one({"_id": stale})["status"] == "queued"


def test_a_stored_reward_reaches_the_gpu_container_under_its_own_name(env, tmp_path):
    """A stored JavaScript reward keeps the name its author gave it (the held-out tables title its
    score with it), and the Modal orchestrator ships its source inside the sealed config. The job
    here is one queued before configs were sealed (``reward_ref``): the worker seals it once."""
    from dreamforge.executors.modal_executor import _inputs
    from dreamforge.store import REWARDS
    from pipeline.sealed import open_sealed, reward_ref

    settings, db = env
    source = "function reward(out, gt) { return 1 }"
    db[REWARDS].insert_one({"_id": "rw_named", "project_id": "prj_modal", "name": "retail facings/v2.js", "source": source})
    job = {"_id": "job_named", "project_id": "prj_modal", "reward_ref": "rw_named", "config": tiny_job_config()}
    worker = Worker(settings, worker_id="prepare-only")
    try:
        worker._prepare(job, tmp_path)
    finally:
        worker.client.close()
    shipped, _ = _inputs(tmp_path)
    assert shipped["reward_source"] == source
    assert shipped["config"]["reward"] == reward_ref("retail_facings_v2.js", source)
    assert open_sealed(shipped).reward_source == source


def test_a_multi_gpu_stages_output_is_echoed_to_the_functions_own_output(tmp_path):
    """With several GPUs the stage runs as ``accelerate launch`` children writing to a log file
    on the Volume; LogEcho copies each new part on to stdout (Modal's logs), in order, none twice."""
    import io

    from dreamforge.executors.local import LogEcho

    log_file = tmp_path / "reward-attempt1.log"
    log_file.write_bytes(b"")
    code = "import sys, time\nfor i in range(30):\n    print(f'rank0 step {i}', flush=True); time.sleep(0.01)\n"
    with log_file.open("ab") as out:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    seen = io.StringIO()
    echo = LogEcho(log_file, seen)
    while child.poll() is None:
        echo.copy()
        time.sleep(0.02)
    echo.copy()
    assert seen.getvalue() == "".join(f"rank0 step {i}\n" for i in range(30))
    assert log_file.read_text() == seen.getvalue()  # the file on the Volume keeps it all too


@pytest.mark.slow
def test_a_cap_reached_on_modal_checkpoints_mid_stage_and_the_next_call_resumes_from_it(env):
    """The stage function reads the caps as the orchestrator's heartbeat bills them: at the cap it
    checkpoints at its next step, commits, and ends "paused" (not only before the next stage).
    Raising the cap spawns the stage again, and the new call resumes from that checkpoint."""
    import asyncio

    from dreamforge.jobs import budgets
    from dreamforge.store import async_client

    settings, db = env
    fake = LocalFunctions()
    cfg = tiny_job_config(warm_start={"enabled": False}, rl={"enabled": False}, domain={"max_steps": 60, "val_checks": 0},
                          export={"quantization": "none"})  # fmt: skip
    # jobs earlier tests left in the queue would be claimed before this one
    db[JOBS].update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})
    job_id = new_job(db, cfg)
    worker = Worker(settings, executor=ModalExecutor(settings, lookup=fake.lookup, call_from_id=fake.from_id, poll_s=0.05),
                    worker_id="orchestrator-capped")  # fmt: skip
    running = threading.Thread(target=worker.run_once)
    running.start()
    # Once the domain stage trains, the cap drops below what the job has spent (PUT /api/jobs/{id}/caps).
    wait_for(lambda: (j := db[JOBS].find_one({"_id": job_id}))["stage"] == "domain" and j["progress"] > 45,
             every=0.05, what="domain training")  # fmt: skip
    db[JOBS].update_one({"_id": job_id}, {"$set": {"caps": {"wall_minutes": 0.001}}})
    running.join(120)
    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "paused" and doc["paused"]["stage"] == "domain", (doc.get("error"), messages(db, job_id)[-5:])
    call = fake.calls[[c for c in fake.calls][-1]]
    assert call.get(timeout=0)["kind"] == "paused" and not call.cancelled  # it ended by itself, checkpointed
    out = settings.artifacts / job_id / "out"
    ckpts = sorted((out / "stages" / "domain.checkpoints").glob("checkpoint-*"))
    assert ckpts and 0 < int(ckpts[-1].name.split("-")[1]) < 60 and not (out / "stages" / "domain" / "DONE.json").exists()
    assert "modal_calls" not in doc or "domain" not in doc["modal_calls"]  # the resumed job spawns a new call

    async def raise_cap() -> list[str]:
        c = async_client(os.environ["MONGODB_URI"])
        try:
            adb = c[settings.db_name]
            await adb[JOBS].update_one({"_id": job_id}, {"$set": {"caps": {"wall_minutes": 30}}})  # PUT /api/jobs/{id}/caps
            return await budgets.resume_paused(adb, {"_id": job_id})
        finally:
            await c.close()

    assert asyncio.run(raise_cap()) == [job_id]
    assert worker.run_once()
    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "succeeded", (doc.get("error"), messages(db, job_id)[-5:])
    assert [name for name, _ in fake.spawns].count("domain") == 2 and fake.spawns[-1][0] == "evaluate"
    assert f"resuming stage domain from {ckpts[-1].name}" in messages(db, job_id)
    assert json.loads((out / "stages" / "domain" / "DONE.json").read_text())["steps"] == 60
