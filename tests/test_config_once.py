"""A curriculum is validated once, at submit, and travels sealed (``pipeline.sealed``): every later
hop (the job document, the worker, the stage process) opens it with a hash check instead of
validating it again, and a stored JavaScript reward keeps one form, its source under the sha256
the config names it by, from submit to the stage."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_job_config
from service_helpers import all_logs, api, wait_job

from pipeline.config import build_config
from pipeline.sealed import SealError, canonical, open_sealed, reward_ref, seal

SOURCE = "function reward(out, gt) { return 0.25 }"


def _validations(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_opening_a_sealed_config_validates_nothing_and_keeps_every_value(tmp_path, monkeypatch):
    log = tmp_path / "validations.log"
    monkeypatch.setenv("DREAMFORGE_VALIDATION_LOG", str(log))
    cfg = build_config(tiny_job_config(reward=reward_ref("mine.js", SOURCE)))
    cfg._reward_source = SOURCE
    assert len(_validations(log)) == 1  # the hook counts: a check that could not fail would be worthless
    sealed = json.loads(json.dumps(seal(cfg, SOURCE)))  # as MongoDB and config.json give it back
    opened = open_sealed(sealed)
    assert len(_validations(log)) == 1  # opened, not validated again
    # Every default was written out at submit: the opened config is the submitted one, field for field.
    assert canonical(opened) == canonical(cfg) == sealed["config"]
    assert opened.rl.lr == cfg.rl.lr and opened.data.split == (0.5, 0.17, 0.33)
    assert opened.reward_source == SOURCE and opened.stage("reward") is opened.rl


def test_a_changed_sealed_config_or_reward_is_refused_clearly():
    cfg = build_config(tiny_job_config(reward=reward_ref("mine.js", SOURCE)))
    sealed = seal(cfg, SOURCE)
    tampered = json.loads(json.dumps(sealed))
    tampered["config"]["rl"]["lr"] = 0.5
    with pytest.raises(SealError, match="does not match its sha256.*changed after it was validated at submit"):
        open_sealed(tampered, where="job job_1's config")
    # The reward swapped and the document's hash recomputed to match: the reference still names the old source.
    swapped = json.loads(json.dumps(sealed))
    swapped["reward_source"] = "function reward() { return 1 }"
    from pipeline.sealed import digest

    swapped["sha256"] = digest(swapped["config"], swapped["reward_source"])
    with pytest.raises(SealError, match="stored reward's source does not match the sha256"):
        open_sealed(swapped)
    stale = json.loads(json.dumps(sealed))
    del stale["config"]["rl"]["watch_stop"]
    stale["sha256"] = digest(stale["config"], SOURCE)
    with pytest.raises(SealError, match="another version of the config schema"):
        open_sealed(stale)
    with pytest.raises(SealError, match="not a sealed config"):
        open_sealed(sealed["config"])


@pytest.fixture(scope="module")
def validation_log(tmp_path_factory):
    return tmp_path_factory.mktemp("once") / "validations.log"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, validation_log):
    """A stack whose every process counts the config validations it runs."""
    from dreamforge.local.stack import start_stack

    s = start_stack(tmp_path_factory.mktemp("stack"), workers=1,
                    extra_env={"DREAMFORGE_VALIDATION_LOG": str(validation_log), "DREAMFORGE_POLL_S": "0.1"})  # fmt: skip
    yield s
    s.stop()


@pytest.mark.slow  # one real job through the stack: ~40 s on 2 shared cores
def test_a_job_is_validated_once_and_its_reward_reaches_the_stage_as_stored(stack, validation_log, db):
    """Also the old spelling of the reward stage's section (``reward: {…}``, today ``rl``): accepted,
    said in the API's answer and the job's log, and its settings are the ones the stage trains with."""
    log = validation_log
    with api(stack) as c:
        rid = c.post("/api/rewards", json={"name": "my reward.js", "source": SOURCE}).json()["id"]
        cfg = tiny_job_config(warm_start={"enabled": False})
        cfg["reward"] = {**cfg.pop("rl"), "max_steps": 1}  # the stage's section under the stage's name
        before = len(_validations(log))
        r = c.post("/api/train", json={"config": cfg, "reward": rid})
        assert r.status_code == 201, r.text
        (note,) = r.json()["warnings"]
        assert "'reward' section is deprecated" in note and "rename the section to 'rl'" in note
        assert r.headers["Warning"].startswith('299 - "config: a \'reward\' section is deprecated')
        job = wait_job(c, r.json()["jobId"])
        assert job["status"] == "succeeded", job
        assert job["warnings"] == [note]
        assert any(x["level"] == "warning" and x["message"] == note for x in all_logs(c, job["jobId"]))
        # The reward stage trained one GRPO step (its old section's max_steps) against the stored reward.
        m = c.get(f"/api/jobs/{job['jobId']}/metrics", params={"stage": "reward"}).json()["points"]
        (scored,) = [p for p in m if "reward" in p["values"]]
        assert scored["step"] == 1 and scored["values"]["reward"] == pytest.approx(0.25), m
        # The stage's old name in the API: the same points, and a deprecation, not an empty answer.
        old = c.get(f"/api/jobs/{job['jobId']}/metrics", params={"stage": "rl"})
        assert old.status_code == 200 and old.json()["points"] == m
        assert "stage 'rl' is deprecated" in old.json()["warnings"][0] and old.headers["Warning"].startswith("299 - ")
        bad = c.get(f"/api/jobs/{job['jobId']}/metrics", params={"stage": "grpo"})
        assert bad.status_code == 422 and "warm_start, domain, reward, evaluate" in bad.text
    lines = _validations(log)[before:]
    # Once, in the API process; not in the worker, nor in any of the three stage processes.
    assert len(lines) == 1, lines
    stored = db.jobs.find_one({"_id": job["jobId"]})
    ref = reward_ref("my_reward.js", SOURCE)
    assert stored["config"]["reward"] == ref and stored["reward_source"] == SOURCE
    assert stored["config"]["rl"]["max_steps"] == 1 and "reward" not in stored["config"]["rl"]
    # What the stage process ran: the same reference, and the reward scored under its file name.
    ran = json.loads((stack.home / "artifacts" / job["jobId"] / "out" / "config.json").read_text())
    assert ran["reward"] == ref
    assert job["result"]["reward"] == "my_reward.js"


def test_a_job_document_changed_after_submit_fails_with_a_clear_error(stack, db):
    from dreamforge.jobs import queue

    cfg = build_config(tiny_job_config())
    sealed = seal(cfg)
    doc = queue.new_job("prj_dev", {**sealed["config"], "seed": 5}, "h", source={})
    doc["config_sha256"] = sealed["sha256"]
    db.jobs.insert_one(doc)
    with api(stack) as c:
        job = wait_job(c, doc["_id"], timeout=60)
    assert job["status"] == "failed" and job["error"]["kind"] == "user", job
    assert "does not match its sha256" in job["error"]["message"] and "submit the job again" in job["error"]["message"]
