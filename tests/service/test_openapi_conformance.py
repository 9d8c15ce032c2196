"""The schema says what the server does: schemathesis generates requests for every operation of
/openapi.json (with a write key) and checks that none is a 5xx and that every status is documented."""
from __future__ import annotations

import dataclasses

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from helpers import serving  # noqa: E402

pytestmark = pytest.mark.slow  # schemathesis generates requests for every operation


@pytest.fixture(scope="module")
def served(settings, pipeline, tmp_path_factory):
    """A real server over the loaded pipeline, with one write key."""
    from rag.service.keys import KeyStore
    from rag.service.server import create_app

    served = dataclasses.replace(settings, data_dir=tmp_path_factory.mktemp("conformance"))
    token = KeyStore(served.data_dir).add("ops", "write")
    with serving(create_app(served, pipeline=pipeline, rebuild=False)) as base:
        yield base, token


EXAMPLES = int(__import__("os").environ.get("RAG_CONFORMANCE_EXAMPLES", "20"))  # more for a deeper run


def test_every_operation_answers_with_a_documented_status_and_never_a_5xx(served):
    base, token = served
    schema = schemathesis.openapi.from_url(base + "/openapi.json", headers={"Authorization": f"Bearer {token}"})
    failures, calls = [], []
    for result in schema.get_all_operations():
        _run(result.ok(), base, token, calls, failures)
    assert not failures, "\n".join(sorted(set(failures)))
    operations = {label for label, _ in calls}
    assert len(operations) >= 12 and len(calls) >= 10 * len(operations), (len(operations), len(calls))
    assert any(status < 300 for _, status in calls) and any(400 <= status < 500 for _, status in calls)


def _run(operation, base: str, token: str, calls: list, failures: list) -> None:
    """EXAMPLES generated requests of one operation, each checked: no 5xx, a documented status."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import status_code_conformance

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case):
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"})
        calls.append((operation.label, response.status_code))
        try:
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
        except Exception as err:  # noqa: BLE001 - collected, reported together by the test
            failures.append(f"{operation.label}: {str(err).splitlines()[0]}")
            raise

    try:
        check()
    except Exception:  # noqa: BLE001, S110 - the failure is in `failures`
        pass
