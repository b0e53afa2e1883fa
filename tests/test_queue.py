"""The queue's guarantees against a real MongoDB-wire server (SecantusDB): atomic claims,
fenced writes after a takeover, reaping, retry budgets, dead letters and requeue."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from dreamforge.jobs import queue, streams, wakeup
from dreamforge.local import embedded_db
from dreamforge.store import JOBS, LOGS, client, ensure_indexes


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    with embedded_db.running(tmp_path_factory.mktemp("qdb")) as server, client(server.uri) as c:
        ensure_indexes(c["q"])
        yield c["q"]


@pytest.fixture(autouse=True)
def empty(db):
    db[JOBS].delete_many({})
    db[LOGS].delete_many({})


def add_jobs(db, n: int) -> list[str]:
    docs = [queue.new_job("p", {"task": "detect"}, "h", source={}) for _ in range(n)]
    db[JOBS].insert_many(docs)
    return [d["_id"] for d in docs]


def test_four_racing_workers_claim_each_job_exactly_once(db):
    ids = add_jobs(db, 40)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}

    def work(name: str) -> None:
        while (job := queue.claim(db, name, 30)) is not None:
            claimed[name].append(job["_id"])

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [j for js in claimed.values() for j in js]
    assert sorted(got) == sorted(ids)  # every job once, none twice
    assert sum(bool(js) for js in claimed.values()) >= 2  # they really raced
    assert db[JOBS].count_documents({"attempt": 1, "status": "running"}) == 40


def test_claims_in_submission_order_and_respect_backoff(db):
    first, second = add_jobs(db, 2)
    job = queue.claim(db, "w", 30)
    assert job["_id"] == first
    queue.retry_later(db, first, job["attempt"], "warm_start", "node lost", limit=3, backoff_s=60)
    assert queue.claim(db, "w", 30)["_id"] == second  # the failed one waits for its backoff
    assert queue.claim(db, "w", 30) is None


def test_a_stale_worker_cannot_write_after_a_takeover(db):
    (job_id,) = add_jobs(db, 1)
    old = queue.claim(db, "old", 0.2)
    streams.append(db, job_id, old["attempt"], "logs", [{"t": 0, "message": "from old"}])
    time.sleep(0.3)
    assert queue.reap(db, limit=3) == [job_id]
    new = queue.claim(db, "new", 30)
    assert new["attempt"] == old["attempt"] + 1
    # the old worker wakes up: every kind of write is refused and changes nothing
    for write in (
        lambda: queue.heartbeat(db, job_id, old["attempt"], 30),
        lambda: queue.stage_started(db, job_id, old["attempt"], "domain"),
        lambda: queue.set_progress(db, job_id, old["attempt"], "domain", 50),
        lambda: queue.finish(db, job_id, old["attempt"], "succeeded"),
        lambda: streams.append(db, job_id, old["attempt"], "logs", [{"t": 0, "message": "stale"}]),
    ):
        with pytest.raises(queue.LostLease):
            write()
    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "running" and doc["worker"] == "new" and doc["progress"] == 0.0
    rows = streams.read_rows(list(db[LOGS].find({"job_id": job_id})), 0, 100)
    assert [r["message"] for r in rows] == ["from old"]
    streams.append(db, job_id, new["attempt"], "logs", [{"t": 1, "message": "from new"}])
    assert [r["seq"] for r in streams.read_rows(list(db[LOGS].find({"job_id": job_id})), 0, 100)] == [1, 2]


def test_infra_failures_back_off_then_dead_letter_then_requeue(db):
    (job_id,) = add_jobs(db, 1)
    for n in range(1, 4):
        job = queue.claim(db, "w", 30)
        assert job is not None, n
        queue.stage_started(db, job_id, job["attempt"], "reward")
        assert queue.retry_later(db, job_id, job["attempt"], "reward", "preempted", limit=2, backoff_s=0) == (
            "queued" if n <= 2 else "dead"
        )
    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "dead" and "3 times" in doc["error"]["message"] and doc["error"]["stage"] == "reward"
    assert doc["stages"]["reward"]["status"] == "failed"  # not left "running" (issue 14, finding 11)
    assert queue.claim(db, "w", 30) is None
    assert queue.requeue(db, job_id, "other-project") is False  # tenants again
    assert queue.requeue(db, job_id, "p") is True
    assert queue.claim(db, "w", 30)["_id"] == job_id


def test_expired_leases_count_against_the_running_stage(db):
    (job_id,) = add_jobs(db, 1)
    for _ in range(2):
        job = queue.claim(db, "w", 0.05)
        queue.stage_started(db, job_id, job["attempt"], "domain")
        time.sleep(0.1)
        queue.reap(db, limit=1)
    doc = db[JOBS].find_one({"_id": job_id})
    assert doc["status"] == "dead" and doc["infra_failures"] == {"domain": 2}
    assert doc["stages"]["domain"]["status"] == "failed"


def test_temporary_artifacts_expire_final_models_stay(db, tmp_path, monkeypatch):
    from dreamforge.settings import Settings
    from dreamforge.worker import cleanup_temporary

    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))  # empty: only the job folders count here

    settings = Settings(mongodb_uri="unused", home=tmp_path, temp_retention_s=0)
    done, running = add_jobs(db, 2)
    queue.finish(db, done, queue.claim(db, "w", 30)["attempt"], "succeeded")
    queue.claim(db, "w", 30)
    for job_id in (done, running):
        for sub in ("out/stages/domain/model", "out/model", "out/model-4bit"):
            (tmp_path / "artifacts" / job_id / sub).mkdir(parents=True)
        (tmp_path / "artifacts" / job_id / "dataset.zip").write_bytes(b"zip")
    removed = cleanup_temporary(settings, db)
    job_dir = tmp_path / "artifacts" / done
    assert sorted(removed) == sorted([str(job_dir / "out" / "stages"), str(job_dir / "dataset.zip")])
    assert (tmp_path / "artifacts" / done / "out" / "model-4bit").exists()
    assert (tmp_path / "artifacts" / running / "out" / "stages").exists()  # a running job keeps everything


def uri_of(db) -> str:
    host, port = db.client.address
    return embedded_db.uri_for(port) if host == "127.0.0.1" else f"mongodb://{host}:{port}/"


def keyed_jobs(db, ready_at: list) -> list[str]:
    """Queued jobs whose ready times are ``ready_at`` (a backlog from the past, retries due later)."""
    docs = [queue.new_job("p", {"task": "detect"}, "h", source={}) for _ in ready_at]
    for d, t in zip(docs, ready_at, strict=True):
        d["queue_key"] = queue.queue_key(t, d["_id"])
    db[JOBS].insert_many(docs)
    return [d["_id"] for d in docs]


def test_claims_take_the_oldest_ready_key_across_gaps_stragglers_and_processes(db, tmp_path):
    from datetime import timedelta

    t = queue.now()
    # an old backlog with hour-long gaps, a burst, and a job not due for a minute
    old = keyed_jobs(db, [t - timedelta(hours=h) for h in (5, 3, 3, 1)] + [t - timedelta(seconds=30, microseconds=i) for i in range(20)])
    later = keyed_jobs(db, [t + timedelta(minutes=1)])
    expect = [d["_id"] for d in db[JOBS].find({"_id": {"$in": old}}).sort("queue_key", 1)]
    got = [queue.claim(db, "w", 30)["_id"] for _ in range(6)]
    assert got == expect[:6]
    # a straggler: stamped before the head but written only now; it is the oldest, so it is next
    (straggler,) = keyed_jobs(db, [t - timedelta(hours=2)])
    assert queue.claim(db, "w", 30)["_id"] == straggler
    # another process starts from the head the first one saved, and goes on in order
    time.sleep(queue._SAVE_EVERY_S)
    assert queue.claim(db, "w", 30)["_id"] == expect[6]  # and saves the head (at most once a second)
    with client(uri_of(db)) as c2:
        other = c2[db.name]
        assert db[queue.QUEUE_HEAD].find_one({"_id": "head"})["key"] > queue.queue_key(t - timedelta(hours=2), "")
        rest = [j["_id"] for j in iter(lambda: queue.claim(other, "w2", 30), None)]
    assert rest == expect[7:]
    assert db[JOBS].find_one({"_id": later[0]})["status"] == "queued"  # not due yet: untouched
    assert db[JOBS].count_documents({"status": "running"}) == len(old) + 1


def test_racing_processes_with_their_own_heads_claim_each_job_once(db):
    ids = add_jobs(db, 60)
    uri = uri_of(db)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}

    def work(name: str) -> None:
        with client(uri) as c:  # a client per racer: each keeps its own head, as separate workers do
            while (job := queue.claim(c[db.name], name, 30)) is not None:
                claimed[name].append(job["_id"])

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = [j for js in claimed.values() for j in js]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))


def test_a_claim_at_a_large_backlog_reads_a_few_keys_not_the_backlog(db):
    import statistics

    add_jobs(db, 10)
    for _ in range(10):
        queue.claim(db, "w", 30)
    add_jobs(db, 3000)
    top = queue.queue_key(queue.now(), "~")
    full = []
    for _ in range(3):  # what the claim read before: every ready key, then the limit
        t0 = time.perf_counter()
        list(db[JOBS].find({"queue_key": {"$lte": top}}, {"queue_key": 1}).sort("queue_key", 1).limit(8))
        full.append(time.perf_counter() - t0)
    claims = []
    for _ in range(15):
        t0 = time.perf_counter()
        assert queue.claim(db, "w", 30) is not None
        claims.append(time.perf_counter() - t0)
    # relative, so a busy machine slows both alike: the full read fetches 3000 jobs, a claim ~20
    assert statistics.median(claims) < statistics.median(full) / 4, (claims, full)


def test_wakeup_fires_when_a_job_becomes_ready_and_not_for_other_writes(db):
    w = wakeup.Wakeup(db)
    try:
        assert w.wait(0.05) is False  # opens the stream; nothing queued yet
        (job_id,) = add_jobs(db, 1)
        t0 = time.perf_counter()
        assert w.wait(5) is True and time.perf_counter() - t0 < 1
        job = queue.claim(db, "w", 30)
        queue.set_progress(db, job_id, job["attempt"], "domain", 10)  # a running job's writes do not wake anyone
        assert w.wait(0.5) is False
        queue.retry_later(db, job_id, job["attempt"], "domain", "node lost", limit=3, backoff_s=0)  # back in the queue
        assert w.wait(5) is True
        stop = threading.Event()
        stop.set()
        t0 = time.perf_counter()
        assert wakeup.Wakeup(db, stop).wait(5) is False and time.perf_counter() - t0 < 1  # a stopping worker does not wait
    finally:
        w.close()


def test_an_idle_worker_picks_up_a_new_job_at_once_not_at_its_next_poll(db, tmp_path):
    from dreamforge.settings import Settings
    from dreamforge.worker import Worker

    # A poll every 30 s: only the change stream can make the pickup quick.
    w = Worker(Settings(mongodb_uri=uri_of(db), db_name=db.name, home=tmp_path, poll_s=30), worker_id="idle")
    th = threading.Thread(target=w.run_forever, daemon=True)
    th.start()
    try:
        time.sleep(2)  # idle, waiting
        doc = queue.new_job("p", {"task": "detect"}, "h", source={}, reward_ref="rw_gone")  # fails at once: no stage runs
        db[JOBS].insert_one(doc)
        deadline = time.monotonic() + 10
        while (job := db[JOBS].find_one({"_id": doc["_id"]}))["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job["status"] in ("running", "failed"), job["status"]
        assert (job["claimed_at"] - job["created_at"]).total_seconds() < 2, job
    finally:
        w.stop()
        th.join(10)
    assert not th.is_alive()


def test_cached_datasets_not_read_within_the_retention_are_deleted(tmp_path, monkeypatch):
    import os

    from dreamforge.worker import cleanup_dataset_cache
    from pipeline.data import load_dataset
    from pipeline.data.synthetic import generate, write_coco

    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))
    zips = []
    for seed in (1, 2):
        folder = write_coco(generate("generic", 6, seed=seed), tmp_path / f"set{seed}")
        zips.append(shutil.make_archive(str(tmp_path / f"set{seed}"), "zip", folder))
    for z in zips:
        load_dataset(z, "detect")  # extracted into the cache
    entries = sorted((tmp_path / "cache" / "zips").iterdir())
    assert len(entries) == 2
    week_ago = time.time() - 7 * 86400
    for e in entries:  # as if extracted a week ago
        for p in [e, *e.rglob("*")]:
            os.utime(p, (week_ago, week_ago))
    load_dataset(zips[0], "detect")  # read again today: marked as used, from the cache
    assert sorted((tmp_path / "cache" / "zips").iterdir()) == entries
    removed = cleanup_dataset_cache(time.time() - 86400)
    kept = [e for e in entries if e.exists()]
    assert len(removed) == 1 and len(kept) == 1 and removed[0] not in map(str, kept)
    assert load_dataset(zips[0], "detect").splits["train"]  # the kept one still loads
    assert load_dataset(zips[1], "detect").splits["train"]  # the deleted one is extracted again
