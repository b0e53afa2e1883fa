"""Schemathesis against the live API: every operation of the served /openapi.json, fuzzed with
valid and invalid inputs, answers no 5xx and nothing outside its documented responses (status
code, content type and body schema).

The stack runs without a worker, so the jobs the fuzzer submits stay queued and train nothing.
Examples per operation are bounded to keep the test well under a minute and a half.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from conftest import tiny_job_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dreamforge.local.stack import start_stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("fuzz-stack"), workers=0)
    yield s
    s.stop()


# Examples per operation and kind of input (valid, invalid, valid about a real job): ~700
# requests in all, about half a minute here.
EXAMPLES = 12


def strategies(op, job_id: str):
    """Valid and invalid requests, plus valid ones about a real job of the project, so routes
    are exercised past their 404 (logs, cancel, requeue, samples …)."""
    out = [op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)]
    if "{job_id}" in op.path and not op.path.endswith("/stream"):  # a queued job's stream never ends
        out.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters={"job_id": job_id}))
    elif op.path == "/api/train/status":
        out.append(op.as_strategy(GenerationMode.POSITIVE, query={"jobId": job_id}))
    return st.one_of(out)


def fuzz(op, stack, job_id: str) -> str | None:
    """The first failure Schemathesis reports for ``op``, or None."""
    auth = {"Authorization": f"Bearer {stack.dev_key}"}
    found: list[str] = []

    # @schema.parametrize() does not run under pytest 9 (it renames the test node): drive Hypothesis here.
    @given(case=strategies(op, job_id))
    @settings(max_examples=3 * EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])  # fmt: skip
    def run(case):
        if found:
            return
        try:
            case.call_and_validate(base_url=stack.api_url, headers=auth, checks=CHECKS, timeout=30)
        except FailureGroup as e:
            found.append(str(e))

    run()
    return found[0] if found else None


def test_api_conforms_to_its_schema(stack):
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"}) as c:
        r = c.post("/api/train", json={"config": tiny_job_config()})
        assert r.status_code == 201, r.text
        job_id = r.json()["jobId"]
    schema = schemathesis.openapi.from_url(stack.api_url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = {op.label: f for op in operations if (f := fuzz(op, stack, job_id))}
    assert not failures, "\n\n".join(failures.values())
