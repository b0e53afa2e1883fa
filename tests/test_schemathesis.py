"""Schemathesis against the live API: every operation of the served /openapi.json, fuzzed with
valid and invalid inputs, answers no 5xx and nothing outside its documented responses (status
code, content type and body schema).

The stack runs without a worker, so the jobs the fuzzer submits stay queued and train nothing.
Examples per operation are bounded to keep the test well under a minute and a half.
"""

from __future__ import annotations

import pytest
import schemathesis
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

from dreamforge.stack import start_stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("fuzz-stack"), workers=0)
    yield s
    s.stop()


# 12 examples each of valid and of invalid input per operation: ~500 requests in all.
EXAMPLES = 12


def test_api_conforms_to_its_schema(stack):
    schema = schemathesis.openapi.from_url(stack.api_url + "/openapi.json")
    auth = {"Authorization": f"Bearer {stack.dev_key}"}
    failures: dict[str, str] = {}
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 20
    for op in operations:
        # pytest-style @schema.parametrize does not run under pytest 9; drive Hypothesis directly.
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=strategy)
        @settings(max_examples=2 * EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None, phases=[Phase.generate])  # fmt: skip
        def fuzz(case):
            if op.label in failures:
                return
            try:
                case.call_and_validate(base_url=stack.api_url, headers=auth, checks=CHECKS, timeout=30)
            except FailureGroup as e:
                failures[op.label] = str(e)

        fuzz()
    assert not failures, "\n\n".join(failures.values())
