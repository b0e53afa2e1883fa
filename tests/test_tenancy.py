"""Tenancy and path safety at submit (issue 14): two projects against one production-like API
(no server paths, no private URLs), over real HTTP with the real database. No worker runs:
everything here must be refused, or stored correctly, before a job is ever claimed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from conftest import tiny_job_config
from service_helpers import api

from dreamforge.auth import create_project, revoke_key
from dreamforge.local.stack import start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("tenancy"), workers=0,
                    extra_env={"DREAMFORGE_ALLOW_LOCAL_PATHS": "0", "DREAMFORGE_ALLOW_PRIVATE_URLS": "0"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def two(stack, db):
    """Projects A and B, each with a key."""
    a, key_a = create_project(db, "tenant-a")
    b, key_b = create_project(db, "tenant-b")
    return {"a": (a, key_a), "b": (b, key_b)}


def train(c: httpx.Client, cfg: dict, **kw) -> httpx.Response:
    # json.dumps, not httpx's encoder: that one refuses NaN and Infinity, which attackers send
    return c.post("/api/train", content=json.dumps({"config": cfg, **kw}), headers={"Content-Type": "application/json"})


def problem_locs(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, (r.status_code, r.text)
    return [".".join(str(p) for p in e["loc"]) for e in r.json()["detail"]]


# -- 1: job lists stay inside the caller's project -----------------------------------------


def test_a_job_list_cursor_cannot_reach_another_projects_jobs(stack, two):
    (_, key_a), (_, key_b) = two["a"], two["b"]
    with api(stack, key_a) as a, api(stack, key_b) as b:
        mine = [train(a, tiny_job_config(name=f"a{i}")).json()["jobId"] for i in range(3)]
        theirs = train(b, tiny_job_config(name="b0")).json()["jobId"]
        page = a.get("/api/jobs", params={"limit": 2}).json()
        assert [j["jobId"] for j in page["jobs"]] == mine[:0:-1] and page["next_cursor"]
        rest = a.get("/api/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [j["jobId"] for j in rest["jobs"]] == [mine[0]]  # paging itself still works
        # the attack: a cursor above (or inside) another project's key range
        for cursor in ("~", "\x7f", page["next_cursor"], f"{two['a'][0]}|~", "", "prj_zzzz|2026-01-01T00:00:00.000000|job_1"):
            r = b.get("/api/jobs", params={"cursor": cursor})
            assert r.status_code == 422 and "cursor" in r.text, (cursor, r.status_code, r.text)
        assert [j["jobId"] for j in b.get("/api/jobs").json()["jobs"]] == [theirs]


# -- 2 and 3: every field naming data, a model or a reward goes through one gate -----------

REFUSED = [
    ("data.warm_start_dataset", {"data": {"warm_start_dataset": "gridfs://65a000000000000000000000"}}),
    ("data.warm_start_dataset", {"data": {"warm_start_dataset": "GridFS://65a000000000000000000000"}}),
    ("data.dataset", {"data": {"dataset": "GRIDFS://65a000000000000000000000"}}),
    ("data.warm_start_dataset", {"data": {"warm_start_dataset": "file:///etc/"}}),
    ("data.warm_start_dataset", {"data": {"warm_start_dataset": "/etc"}}),
    ("data.dataset", {"data": {"dataset": "/etc"}}),
    ("data.dataset", {"data": {"dataset": "ftp://example.com/x.zip"}}),
    ("model", {"model": "/etc"}),
    ("model", {"model": "../../etc/x"}),
    ("model", {"model": "file:///etc"}),
    ("reward", {"reward": "example:../../../../etc/passwd"}),
    ("reward", {"reward": "example:../js_prelude"}),
    ("reward", {"reward": "/etc/evil.js"}),
]

SSRF = [
    "https://127.0.0.1/x.zip",
    "https://2130706433/x.zip",  # 127.0.0.1 in decimal
    "https://0x7f000001/x.zip",  # hex
    "https://0177.0.0.1/x.zip",  # octal
    "https://[::1]/x.zip",
    "https://[::ffff:127.0.0.1]/x.zip",
    "https://localhost/x.zip",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/x.zip",
    "https://192.168.1.1/x.zip",
    "http://127.0.0.1/x.zip",  # plain http only where private URLs are allowed
    "https://user:pw@example.com/x.zip",
    "s3://bucket/key.zip?endpoint_url=http://169.254.169.254/",
    "s3://bucket:9000/key.zip",
]


@pytest.mark.parametrize(("loc", "over"), REFUSED, ids=[f"{loc}={json.dumps(o)[-40:]}" for loc, o in REFUSED])
def test_data_model_and_reward_fields_are_checked_at_submit(stack, db, two, loc, over):
    with api(stack, two["b"][1]) as b:
        before = db.jobs.count_documents({})
        r = train(b, tiny_job_config(**over))
        assert problem_locs(r) == [loc], r.text
        assert "/tmp" not in r.text and "Traceback" not in r.text
        assert db.jobs.count_documents({}) == before


def test_unsafe_urls_are_refused_at_submit_naming_the_field(stack, db, two):
    before = db.jobs.count_documents({})
    with api(stack, two["b"][1]) as b:
        for url in SSRF:
            for field in ("dataset", "warm_start_dataset"):
                r = train(b, tiny_job_config(data={field: url}))
                assert problem_locs(r) == [f"data.{field}"], (url, r.text)
            r = b.post("/api/train", json={"config": tiny_job_config(), "dataset": url})  # the shortcut too
            assert problem_locs(r) == ["data.dataset"], (url, r.text)
    assert db.jobs.count_documents({}) == before


def test_stored_datasets_resolve_only_for_their_own_project(stack, db, two):
    (a, key_a), (_, key_b) = two["a"], two["b"]
    db.datasets.insert_one({"_id": "ds_tenancy_a", "project_id": a, "name": "a", "gridfs_id": "65a0000000000000000000aa"})
    with api(stack, key_a) as ca, api(stack, key_b) as cb:
        for field in ("dataset", "warm_start_dataset"):
            assert train(cb, tiny_job_config(data={field: "ds_tenancy_a"})).status_code == 404
            r = train(ca, tiny_job_config(data={field: "ds_tenancy_a"}))
            assert r.status_code == 201, r.text
            assert db.jobs.find_one({"_id": r.json()["jobId"]})["config"]["data"][field] == "gridfs://65a0000000000000000000aa"


def test_hub_models_and_shipped_examples_are_accepted(stack, db, two):
    with api(stack, two["a"][1]) as a:
        for over in ({"model": "HuggingFaceTB/SmolVLM-256M-Instruct"}, {"model": "dreamforge-tiny"},
                     {"reward": "example:retail_facings"}, {"reward": "f1"}):  # fmt: skip
            r = train(a, tiny_job_config(**over))
            assert r.status_code == 201, (over, r.text)


def test_private_urls_pass_at_submit_where_the_operator_allows_them(monkeypatch):
    """The local stack and the tests fetch from loopback servers (moto, local https): the
    same setting that opens the fetch-time guard opens the submit-time one."""
    from dreamforge.jobs.submit import resolve_dataset

    url = "https://127.0.0.1:9/x.zip"
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")
    assert asyncio.run(resolve_dataset(None, "prj_x", url)) == url
    assert asyncio.run(resolve_dataset(None, "prj_x", "http://localhost:9/x.zip")) == "http://localhost:9/x.zip"
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="link-local"):  # metadata stays refused even then
        asyncio.run(resolve_dataset(None, "prj_x", "https://169.254.169.254/x", loc="data.warm_start_dataset"))
    monkeypatch.delenv("DREAMFORGE_ALLOW_PRIVATE_URLS")
    with pytest.raises(ConfigError, match="loopback"):
        asyncio.run(resolve_dataset(None, "prj_x", url))


# -- 4: revocation takes effect at once ------------------------------------------------------


def test_a_revoked_key_is_refused_on_the_next_request(stack, db):
    _, key = create_project(db, "to-revoke")
    with api(stack, key) as c:
        assert c.get("/api/jobs").status_code == 200  # now the key is known (and was cached before)
        assert revoke_key(db, key)
        r = c.get("/api/jobs")
        assert r.status_code == 401, r.text
        assert train(c, tiny_job_config()).status_code == 401
    assert not revoke_key(db, key)


# -- 11: bad numbers are 422s naming the field -----------------------------------------------

BAD_NUMBERS = [
    ("warm_start.epochs", {"warm_start": {"epochs": float("inf")}}),
    ("domain.max_seconds", {"domain": {"max_seconds": float("inf")}}),
    ("rl.beta", {"rl": {"beta": float("inf")}}),
    ("rl.reward_sample_timeout_ms", {"rl": {"reward_sample_timeout_ms": float("inf")}}),
    ("data.split.1", {"data": {"split": [0.5, float("nan"), 0.5]}}),
    ("domain.max_steps", {"domain": {"max_steps": 1e12}}),
    ("domain.max_steps", {"domain": {"max_steps": 2**70}}),
    ("seed", {"seed": 2**70}),
    ("domain.lr", {"domain": {"lr": float("nan")}}),
]


def test_non_finite_and_huge_numbers_are_422_naming_the_field(stack, db, two):
    before = db.jobs.count_documents({})
    with api(stack, two["a"][1]) as a:
        for loc, over in BAD_NUMBERS:
            r = train(a, tiny_job_config(**over))
            assert problem_locs(r) == [loc], (loc, r.text)
            assert "less than 1" not in r.text  # the old NaN-lr message
        r = train(a, tiny_job_config(), epochs=[1, float("inf")])  # the epochs shortcut
        assert problem_locs(r) == ["domain.epochs"], r.text
        r = a.post("/api/train", json={"config": tiny_job_config(), "source": {"kind": "api", "pr": 2**70}})
        assert r.status_code == 422, r.text
    assert db.jobs.count_documents({}) == before


# -- 13: an idempotency key stands for one request body --------------------------------------


def test_same_idempotency_key_with_another_body_is_a_conflict(stack, db, two):
    cfg = tiny_job_config(name="idem")
    with api(stack, two["a"][1]) as a:
        first = a.post("/api/train", json={"config": cfg}, headers={"Idempotency-Key": "k-13"})
        assert first.status_code == 201, first.text
        # the same body (keys in another order) is the same request: the first job, 200
        again = a.post("/api/train", content=json.dumps({"config": dict(reversed(list(cfg.items())))}),
                       headers={"Idempotency-Key": "k-13", "Content-Type": "application/json"})  # fmt: skip
        assert again.status_code == 200 and again.json()["jobId"] == first.json()["jobId"]
        other = a.post("/api/train", json={"config": {**cfg, "name": "other"}}, headers={"Idempotency-Key": "k-13"})
        assert other.status_code == 409, other.text
        assert first.json()["jobId"] in other.text and "different request body" in other.text
    with api(stack, two["b"][1]) as b:  # keys are per project: B's k-13 is B's own
        assert b.post("/api/train", json={"config": cfg}, headers={"Idempotency-Key": "k-13"}).status_code == 201
    assert db.jobs.count_documents({"idempotency_key": {"$regex": r"\|k-13$"}}) == 2
