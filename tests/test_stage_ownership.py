"""One owner per stage: a stage process never outlives its worker's hold on the job.

The fault tests drive the real stack (SecantusDB, the API, worker processes with their forked
stage processes) and break it the way production breaks: a worker paused past its lease while
another takes over, the database killed mid-stage and started again. Each ends with one trainer
per stage and the stage's metric series stored complete and once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_job_config
from dbserver import running_secantus
from service_helpers import api, wait_for, wait_job

from dreamforge.jobs import queue, streams
from dreamforge.jobs.sink import MongoSink
from dreamforge.local import embedded_db
from dreamforge.local.stack import start_stack
from dreamforge.store import JOBS, METRICS, client, ensure_indexes
from pipeline.config import build_config
from pipeline.fence import Fence, FenceLost, take_ownership
from pipeline.reporter import BaseReporter


# -- the fence, alone ------------------------------------------------------------------------
def test_a_newer_attempt_takes_the_folder_and_a_stale_one_cannot_take_it_back(tmp_path):
    owner = tmp_path / ".owner"
    assert take_ownership(owner, 1)
    old = Fence(owner, 1)
    assert old.held() and not old.should_stop()
    with old.publishing():
        pass
    assert take_ownership(owner, 2)
    assert not old.held()
    with pytest.raises(FenceLost, match="attempt 2"), old.publishing():
        raise AssertionError("a stale attempt published")
    assert not take_ownership(owner, 1)  # its worker woke up from a pause: too late
    assert Fence(owner, 2).held()


def test_a_publish_in_progress_holds_off_the_new_owner_until_it_is_written(tmp_path):
    owner = tmp_path / ".owner"
    take_ownership(owner, 1)
    inside, release = threading.Event(), threading.Event()

    def publish() -> None:
        with Fence(owner, 1).publishing():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=publish)
    t.start()
    inside.wait(5)
    with pytest.raises(TimeoutError, match="stage lock"):
        take_ownership(owner, 2, timeout_s=0.3)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    assert take_ownership(owner, 2, timeout_s=5)
    assert time.monotonic() - t0 >= 0.2
    t.join()


class Recorder(BaseReporter):
    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []

    def stage_state(self, stage: str, state: str, **info) -> None:
        self.states.append((stage, state))


def test_a_stage_process_reports_only_its_own_stage(tmp_path):
    """The service runs one stage per process; each used to report every other stage as
    skipped, so the job's log read "domain skipped" just before "domain starting"."""
    from pipeline.job import run_job

    cfg = build_config(tiny_job_config(warm_start={"enabled": False}))
    rec = Recorder()
    run_job(cfg, tmp_path / "out", stages=[1], reporter=rec)
    assert rec.states == [("warm_start", "skipped")]  # disabled: a real state change, said once


# -- metric points stored once, through outages ---------------------------------------------
@pytest.fixture(scope="module")
def qdb(tmp_path_factory):
    with running_secantus(tmp_path_factory.mktemp("qdb")) as uri, client(uri) as c:
        ensure_indexes(c["q"])
        yield c["q"]


def metric(stage: str, step: int, loss: float) -> dict:
    return {"type": "metric", "stage": stage, "step": step, "loss": loss, "attempt": 1}


def test_a_resumed_stage_does_not_store_its_earlier_steps_twice(qdb):
    doc = queue.new_job("p", {"task": "detect"}, "h", source={})
    qdb[JOBS].insert_one(doc)
    job = queue.claim(qdb, "w1", 30)
    sink = MongoSink(qdb, job["_id"], job["attempt"], stored_steps=job.get("metric_steps"))
    for step in (10, 20, 30):
        sink.event(metric("domain", step, 1.0 / step))
    sink.flush(strict=True)
    # taken over after step 30; the new attempt resumes from its checkpoint at step 20
    qdb[JOBS].update_one({"_id": job["_id"]}, {"$set": {"status": "queued", "queue_key": "0"}})
    job2 = queue.claim(qdb, "w2", 30)
    assert job2["attempt"] == 2 and job2["metric_steps"] == {"domain": 30}
    sink2 = MongoSink(qdb, job2["_id"], job2["attempt"], stored_steps=job2.get("metric_steps"))
    for step in (30, 40):
        sink2.event(metric("domain", step, 0.5 / step))
    sink2.event({"type": "metric", "stage": "domain", "step": 40, "train_runtime": 9.0, "train_loss": 0.1})
    sink2.flush(strict=True)
    # a flush repeated after an unacknowledged insert stores nothing twice
    streams.insert_chunks(qdb, "metrics", [c for c in qdb[METRICS].find({"job_id": job["_id"]}, {"_id": 0})])
    rows = streams.read_rows(list(qdb[METRICS].find({"job_id": job["_id"]})), 0, 100)
    assert [(r["step"], "train_runtime" in r["values"]) for r in rows] == [
        (10, False), (20, False), (30, False), (40, False), (40, True)]  # fmt: skip
    assert rows[2]["values"]["loss"] == pytest.approx(1 / 30)  # the first attempt's point stays
    assert "attempt" not in rows[0]["values"]


def test_a_validation_point_at_a_training_step_is_its_own_series(qdb):
    """The domain stage's validation check reports at a step its loss log reports too: both are
    stored, a resume still skips each series' stored steps, and the job's latest keeps the loss."""
    doc = queue.new_job("p", {"task": "detect"}, "h", source={})
    qdb[JOBS].insert_one(doc)
    job = queue.claim(qdb, "w1", 30)
    sink = MongoSink(qdb, job["_id"], job["attempt"], stored_steps=job.get("metric_steps"))
    sink.event(metric("domain", 20, 0.5))
    sink.event({"type": "metric", "stage": "domain", "step": 20, "val_mean_iou": 0.3, "val_parse_rate": 1.0})
    sink.flush(strict=True)
    stored = qdb[JOBS].find_one({"_id": job["_id"]})
    assert stored["metric_steps"] == {"domain": 20, "domain:val": 20}
    assert stored["metrics"]["domain"] == {"step": 20, "loss": 0.5, "val_mean_iou": 0.3, "val_parse_rate": 1.0}
    resumed = MongoSink(qdb, job["_id"], job["attempt"], stored_steps=stored["metric_steps"])
    resumed.event({"type": "metric", "stage": "domain", "step": 20, "val_mean_iou": 0.3, "val_parse_rate": 1.0})
    resumed.event({"type": "metric", "stage": "domain", "step": 40, "val_mean_iou": 0.4, "val_parse_rate": 1.0})
    resumed.flush(strict=True)
    rows = streams.read_rows(list(qdb[METRICS].find({"job_id": job["_id"]})), 0, 100)
    assert [(r["step"], sorted(r["values"])) for r in rows] == [
        (20, ["loss"]), (20, ["val_mean_iou", "val_parse_rate"]), (40, ["val_mean_iou", "val_parse_rate"])]  # fmt: skip


# -- the live stack ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """No workers: each test starts the ones it needs (``workers``)."""
    s = start_stack(tmp_path_factory.mktemp("stack"), workers=0, extra_env={
        "DREAMFORGE_BACKOFF_S": "0.2", "DREAMFORGE_POLL_S": "0.1",
        # resumable checkpoints every 10 steps, so a takeover repeats at most 10
        "DREAMFORGE_CHECKPOINT_STEPS": "10"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture
def workers(stack):
    started: list[subprocess.Popen] = []

    def start(n: int = 1, **env: str) -> list[subprocess.Popen]:
        new = [stack.start_worker(**env) for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
    for p in started:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        stack.workers.remove(p)


def _procs() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, process group, state, command line) for every process on the machine."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(d.name)] = (int(fields[1]), int(fields[2]), fields[0], cmd)
    return out


def stage_pids(workers: list[subprocess.Popen]) -> set[int]:
    """The live stage processes of these workers: forked by a worker's stage template, or
    started cold by the worker (``pipeline.run``); each leads its own process group."""
    procs = _procs()
    ids = {w.pid for w in workers}
    templates = {p for p, (pp, _, _, cmd) in procs.items() if pp in ids and "dreamforge.executors.forkserver" in cmd}
    return {p for p, (pp, grp, st, cmd) in procs.items() if grp == p and st != "Z"
            and (pp in templates or (pp in ids and "pipeline.run" in cmd))}  # fmt: skip


def alive(pid: int) -> bool:
    try:
        return _procs()[pid][2] != "Z"
    except KeyError:
        return False


# A job of one stage (stage 2) that trains for a time, not a number of steps: the fault lands
# mid-stage on a fast machine as on a slow one, and each test stays short. Epochs high enough that
# the time ends the stage, and no validation checks, which could stop it early.
def long_domain(seconds: float) -> dict:
    return tiny_job_config(warm_start={"enabled": False}, rl={"enabled": False}, evaluate={"enabled": False},
                           domain={"max_steps": None, "max_seconds": seconds, "epochs": 10_000, "batch_size": 4,
                                   "val_checks": 0})  # fmt: skip


def assert_complete(steps: list[int]) -> None:
    """Every 10th step (the trainer's logging interval) from the first to the last, each once."""
    assert len(steps) >= 3 and steps == list(range(10, steps[-1] + 1, 10)), steps


def stored_points(db, job_id: str, stage: str) -> list[dict]:
    rows = streams.read_rows(list(db[METRICS].find({"job_id": job_id})), 0, 100_000)
    return [r for r in rows if r["stage"] == stage and "train_runtime" not in r["values"]]


def events(stack, job_id: str) -> list[dict]:
    path = stack.home / "artifacts" / job_id / "out" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cancel_stops_the_running_stage_within_seconds(stack, workers, db):
    # A long lease: the cancel must not wait for the next lease renewal (README: "a second or two").
    (w,) = workers(1, DREAMFORGE_LEASE_S="120")
    with api(stack) as c:
        job_id = c.post("/api/train", json={"config": long_domain(600)}).json()["jobId"]
        wait_for(lambda: stored_points(db, job_id, "domain"), timeout=60, what="training steps")
        (pid,) = stage_pids([w])
        t0 = time.monotonic()
        assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 202
        wait_for(lambda: not alive(pid), timeout=10, every=0.05, what="the stage process to stop")
        gone = time.monotonic() - t0
        job = wait_job(c, job_id, timeout=10)
        took = time.monotonic() - t0
    assert gone < 5.0, f"the stage ran {gone:.1f} s after the cancel"
    assert job["status"] == "cancelled" and took < 6.0, (job["status"], took)


def test_a_worker_paused_past_its_lease_leaves_one_trainer(stack, workers, db):
    first, second = workers(2, DREAMFORGE_LEASE_S="4")
    with api(stack) as c:
        job_id = c.post("/api/train", json={"config": long_domain(14)}).json()["jobId"]
        wait_for(lambda: stored_points(db, job_id, "domain"), timeout=60, what="training steps")
        owner = db.jobs.find_one({"_id": job_id})["worker"]
        paused = first if owner.endswith(f"-{first.pid}") else second
        other = second if paused is first else first
        (old_stage,) = stage_pids([paused])
        paused.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: stage_pids([other]), timeout=30, every=0.1, what="the other worker's stage")
            t_new = time.monotonic()
            # Its worker is still paused: the stale stage stops by itself, seeing the new owner.
            wait_for(lambda: not alive(old_stage), timeout=10, every=0.1, what="the stale stage to stop")
            stale_for = time.monotonic() - t_new
        finally:
            paused.send_signal(signal.SIGCONT)
        job = wait_job(c, job_id, timeout=120)
    assert stale_for < 5.0
    assert job["status"] == "succeeded" and job["attempt"] == 2, (job["status"], job["error"])
    done = stack.home / "artifacts" / job_id / "out" / "stages" / "domain" / "DONE.json"
    mark = done.stat().st_mtime_ns
    assert json.loads(done.read_text())["attempt"] == 2
    # Trainers in the shared events file: once the new owner has trained its first steps, the
    # old one is silent (not one point of a second trainer in between).
    evs = [e for e in events(stack, job_id) if e.get("stage") == "domain"]
    trained2 = next(i for i, e in enumerate(evs) if e.get("attempt") == 2 and e["type"] == "metric")
    assert not [e for e in evs[trained2:] if e.get("attempt") == 1]
    assert_complete([p["step"] for p in stored_points(db, job_id, "domain")])
    time.sleep(2)  # the paused worker is running again: nothing of its attempt writes the model now
    assert done.stat().st_mtime_ns == mark and not stage_pids([paused])


def test_database_killed_mid_stage_stops_the_stage_and_loses_no_points(stack, workers, db):
    (w,) = workers(1, DREAMFORGE_LEASE_S="6")  # the stage trains on for 5 s without the database
    with api(stack) as c:
        job_id = c.post("/api/train", json={"config": long_domain(14)}).json()["jobId"]
        wait_for(lambda: stored_points(db, job_id, "domain"), timeout=60, what="training steps")
        (stage,) = stage_pids([w])
        port, storage = stack.db.port, stack.db.storage
        t_kill = time.time()
        stack.db.kill()
        try:
            # It cannot renew its lease: the stage stops before the lease runs out.
            wait_for(lambda: not alive(stage), timeout=10, every=0.1, what="the stage to stop")
            stopped = time.time() - t_kill
            assert not (stack.home / "artifacts" / job_id / "out" / "stages" / "domain" / "DONE.json").exists()
            time.sleep(1.0)
            assert not stage_pids([w])  # and nothing restarted it while the database is away
        finally:
            stack.db = embedded_db.start(storage, port, log=stack.home / "logs" / "db.log")
        job = wait_job(c, job_id, timeout=120)
    assert stopped < 6.0 + 2.0, stopped
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1  # nobody took the job over meanwhile: the same attempt went on
    points = stored_points(db, job_id, "domain")
    assert_complete([p["step"] for p in points])
    # the points the stage logged while the database was away were buffered, then stored
    outage = [e for e in events(stack, job_id) if e.get("type") == "metric" and e["t"] >= t_kill
              and e["t"] <= t_kill + stopped and "train_runtime" not in e]  # fmt: skip
    stored = {p["step"]: p["values"]["loss"] for p in points}
    assert outage
    for e in outage:
        assert stored[e["step"]] == pytest.approx(e["loss"])
    logs = [r["message"] for chunk in db.logs.find({"job_id": job_id}) for r in chunk["rows"]]
    assert any("database is back" in m for m in logs)
