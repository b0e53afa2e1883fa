"""GitHub Actions OIDC as the Action's credential: tokens signed with a locally generated RSA key,
its JWKS (and the runner's token endpoint) served on loopback, the API pointed at that issuer."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from conftest import tiny_job_config
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_github import send_json
from github_helpers import PUSH_FIXTURE, Proxy, action_body, link, run_action, sha

from dreamforge.auth import create_project
from dreamforge.local.stack import start_stack

REPO, REPO_ID = "acme/oidc", 555
REQUEST_TOKEN = "runner-request-token"
SHA = "a" * 40  # the commit of the tokens' push, unless a test says otherwise


class Issuer:
    """GitHub's token service in miniature: ``/.well-known/jwks`` and the runner's token URL."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-kid-1"
        self.jwks_hits = 0
        self.jwks_down = False  # GitHub's key endpoint failing
        self.token_failures = 0  # the runner's token endpoint answers 500 this many more times
        self.tokens_issued = 0
        self.claims: dict = {}  # extra claims for tokens from the runner endpoint
        issuer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path == "/.well-known/jwks":
                    issuer.jwks_hits += 1
                    if issuer.jwks_down:
                        return self._json(500, {"message": "unavailable"})
                    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key(), as_dict=True),
                           "kid": issuer.kid, "alg": "RS256", "use": "sig"}  # fmt: skip
                    return self._json(200, {"keys": [jwk]})
                if url.path == "/token":
                    q = parse_qs(url.query)
                    if self.headers.get("Authorization") != f"bearer {REQUEST_TOKEN}" or q.get("api-version") != ["2.0"]:
                        return self._json(401, {"message": "bad request token"})
                    if issuer.token_failures > 0:
                        issuer.token_failures -= 1
                        return self._json(500, {"message": "try again"})
                    issuer.tokens_issued += 1
                    return self._json(200, {"value": issuer.token(aud=q["audience"][0], **issuer.claims)})
                return self._json(404, {})

            def _json(self, status, body):
                send_json(self, status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, key=None, kid=None, **over) -> str:
        """A token shaped like GitHub's (claims per docs.github.com "About security hardening with OpenID Connect")."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": "dreamforge", "sub": f"repo:{REPO}:ref:refs/heads/main", "repository": REPO,
                  "repository_id": str(REPO_ID), "repository_owner": "acme", "event_name": "push", "ref": "refs/heads/main",
                  "sha": SHA, "run_id": "77", "job_workflow_ref": f"{REPO}/.github/workflows/dreamforge.yml@refs/heads/main",
                  "jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 300, **over}  # fmt: skip
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})


@pytest.fixture(scope="module")
def issuer():
    i = Issuer()
    yield i
    i.server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, issuer):
    s = start_stack(tmp_path_factory.mktemp("oidc-stack"), workers=0,
                    extra_env={"DREAMFORGE_OIDC_ISSUER": issuer.url, "DREAMFORGE_OIDC_WORKFLOWS": f"{REPO}/.github/workflows/"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def project(stack, db):
    pid, k = create_project(db, "acme-oidc")
    assert link(stack, k, [{"name": REPO, "id": REPO_ID}], secret=None).json()["webhook_secret_set"] is False
    return pid


def post(stack, token: str, body: dict) -> httpx.Response:
    return httpx.post(stack.api_url + "/api/webhooks/github-action", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def test_githubs_keys_out_of_reach_is_503_not_401(stack, db, project, issuer):
    # First in this module: the API has not fetched the key set yet, and now cannot.
    issuer.jwks_down = True
    try:
        r = post(stack, issuer.token(), action_body(REPO, "main", SHA, tiny_job_config()))
    finally:
        issuer.jwks_down = False
    assert r.status_code == 503 and "retry" in r.json()["detail"] and r.headers["retry-after"]


def test_a_valid_token_needs_no_secret_and_works_once(stack, db, project, issuer):
    c = sha()
    token = issuer.token(sha=c)
    body = action_body(REPO, "main", c, tiny_job_config(name="oidc"))
    r = post(stack, token, body)
    assert r.status_code == 201, r.text
    job = db.jobs.find_one({"_id": r.json()["jobId"]})
    assert job["project_id"] == project and job["source"]["repo"] == REPO
    again = post(stack, token, action_body(REPO, "main", c, tiny_job_config(name="oidc-replay")))
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    assert db.jobs.count_documents({"config.name": "oidc-replay"}) == 0
    # the same token with the same delivery: the Action retrying after a lost answer gets the job
    retry = post(stack, token, body)
    assert retry.status_code == 200 and retry.json()["jobId"] == r.json()["jobId"] and retry.json()["duplicate"]


def test_the_body_must_match_the_tokens_ref_sha_and_workflow(stack, db, project, issuer):
    before = db.jobs.count_documents({})
    c = sha()
    for what, token, body, says in [
        ("another branch", issuer.token(sha=c, ref="refs/heads/other"), action_body(REPO, "main", c, tiny_job_config()),
         "refs/heads/other"),
        ("another commit", issuer.token(), action_body(REPO, "main", c, tiny_job_config()), "commit"),
        ("an unpinned workflow", issuer.token(sha=c, job_workflow_ref=f"{REPO}/evil.yml@refs/heads/main"),
         action_body(REPO, "main", c, tiny_job_config()), "DREAMFORGE_OIDC_WORKFLOWS"),
    ]:  # fmt: skip
        r = post(stack, token, body)
        assert r.status_code == 403 and says in r.json()["detail"], (what, r.text)
    assert db.jobs.count_documents({}) == before
    # on pull_request the token's sha is the merge commit; the body's is the head
    pr = {**action_body(REPO, "feature", c, tiny_job_config(name="oidc-pr"), pr=4, head_repo=REPO, event="pull_request"),
          "ref": "refs/pull/4/merge"}
    r = post(stack, issuer.token(event_name="pull_request", ref="refs/pull/4/merge", sha=sha()), pr)
    assert r.status_code == 201, r.text


def test_bad_tokens_are_refused_and_create_nothing(stack, db, project, issuer):
    before = db.jobs.count_documents({})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    cases = {
        "wrong audience": (issuer.token(aud="someone-else"), 401, "audience"),  # fmt: skip
        "expired": (issuer.token(iat=now - 900, nbf=now - 900, exp=now - 600), 401, "expired"),
        "other issuer": (issuer.token(iss="https://token.actions.example.com"), 401, "issuer"),
        "forged signature": (issuer.token(key=other_key), 401, "Signature"),
        "unknown key id": (issuer.token(key=other_key, kid="nobody"), 401, "signing key"),
        "no jti": (issuer.token(jti=None), 401, "jti"),
        "pull_request_target": (issuer.token(event_name="pull_request_target"), 401, "pull_request_target"),
        "workflow_run": (issuer.token(event_name="workflow_run"), 401, "workflow_run"),
        "repository not pinned": (issuer.token(repository="acme/other", repository_id="556"), 403, "not linked"),
        "token for another repository": (issuer.token(repository="acme/other"), 403, "for acme/other"),
        "unsigned": (jwt.encode({"iss": issuer.url, "aud": "dreamforge", "repository_id": str(REPO_ID)}, None, algorithm="none"),
                     401, ""),
    }  # fmt: skip
    for what, (token, status, says) in cases.items():
        r = post(stack, token, action_body(REPO, "main", sha(), tiny_job_config(name="bad-token")))
        assert r.status_code == status, (what, r.text)
        assert says in r.json()["detail"], (what, r.text)
    assert db.jobs.count_documents({}) == before
    # the key set was fetched once and cached; only the unknown key id made it look again
    assert issuer.jwks_hits <= 2


def test_the_action_uses_the_runners_oidc_token(stack, db, project, issuer, tmp_path):
    ev = json.loads(PUSH_FIXTURE.read_text())
    ev["repository"] = {**ev["repository"], "full_name": REPO, "id": REPO_ID}
    ev["after"] = sha()
    issuer.claims = {"sha": ev["after"], "ref": ev["ref"]}
    issuer.token_failures, issued = 1, issuer.tokens_issued  # GitHub's token service fails once: retried
    # The first POST reaches the API but its answer is lost: the retry carries a fresh token
    # (each is spent once) and the same delivery, so it gets the same job.
    proxy = Proxy(stack.api_url, lose=1)
    try:
        r = run_action(tmp_path, endpoint=proxy.url, event_name="push", event=ev, config=tiny_job_config(name="via-oidc"),
                       inputs={}, env={"ACTIONS_ID_TOKEN_REQUEST_URL": f"{issuer.url}/token?api-version=2.0",
                                       "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN})  # fmt: skip
    finally:
        proxy.server.shutdown()
    assert r.rc == 0, r.stdout
    assert issuer.tokens_issued - issued == 2 and r.stdout.count("::add-mask::eyJ") == 2
    job = db.jobs.find_one({"_id": r.outputs["job-id"]})
    assert job["project_id"] == project and job["source"]["sha"] == ev["after"] and job["config"]["name"] == "via-oidc"
    assert db.jobs.count_documents({"source.sha": ev["after"]}) == 1
    assert r.outputs["status"] == "queued" and "## DreamForge preview" in r.summary
    # wait: true reads the job with an API key; without one the step says so
    issuer.claims["sha"] = sha()
    r = run_action(tmp_path / "w", endpoint=stack.api_url, event_name="push", event={**ev, "after": issuer.claims["sha"]},
                   config=tiny_job_config(), inputs={"wait": "true"},
                   env={"ACTIONS_ID_TOKEN_REQUEST_URL": f"{issuer.url}/token?api-version=2.0",
                        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN})  # fmt: skip
    assert r.rc == 1 and "`wait: true` reads the job with the `api-key` input" in r.stdout


def test_signed_tokens_with_absurd_numbers_are_401_not_500(stack, db, project, issuer):
    # Signed by the issuer, so only GitHub could send them; still a clear 401, never a crash.
    before = db.jobs.count_documents({})
    for what, token, says in [
        ("exp past year 9999", issuer.token(exp=10**15), "exp"),
        ("NaN repository id", issuer.token(repository_id="NaN"), "repository_id"),
        ("huge repository id", issuer.token(repository_id="9" * 40), "repository_id"),
    ]:
        r = post(stack, token, action_body(REPO, "main", SHA, tiny_job_config(name="absurd")))
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert says in r.json()["detail"], (what, r.text)
    assert db.jobs.count_documents({}) == before
