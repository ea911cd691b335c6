"""Schemathesis over the app's own OpenAPI document, against the real processes.

Every operation and method in /openapi.json, with generated valid and invalid requests (bodies,
path parameters, headers), once with a valid API key and once with none, plus stateful sequences
that follow the document's links (submit, then poll or cancel the job it made). Each answer must be
documented: its status listed for the operation, problem+json bodies matching ``ProblemDetails``,
required headers present (``Location``, ``WWW-Authenticate``, ``Retry-After``), undocumented
methods answered 405 with an ``Allow`` that lists the path's methods, no 5xx ever. Every request
sent is counted; the run must send at least ``MIN_REQUESTS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks
from sqlalchemy import Engine

from testkit.services import Live

MIN_REQUESTS = 1000
# With and without a key; the stateful phase counts on top.
EXAMPLES_WITH_KEY = 250
EXAMPLES_WITHOUT_KEY = 60

# Every check Schemathesis has for OpenAPI, but one: DELETE cancels a job, it does not remove it
# (the contract: a cancelled job stays visible as "cancelled" until it expires).
CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.ignored_auth,
]

sent: dict[str, int] = {"with key": 0, "without key": 0, "stateful": 0}


@pytest.fixture(scope="module")
def live(start_live: Any) -> Iterator[tuple[Live, Engine]]:
    # A rate limit high enough for the fuzzer, so that the limiter is on the path and a 429 is
    # still possible (and then must be documented).
    with start_live(rate_limit="2000/second") as started:
        live_key["key"] = started[0].key
        yield started


def _document() -> dict[str, Any]:
    """The OpenAPI document of an app with the default settings (no connection is made).

    Built at import because Schemathesis generates the tests from it at collection (its
    fixture-based loader does not work with this pytest); the live server must serve the same.
    """
    from api.app import create_app
    from tests.helpers import make_settings

    nowhere = make_settings("mysql+pymysql://nobody@127.0.0.1:1/none", "redis://127.0.0.1:1/0")
    return create_app(nowhere).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
keyless = schemathesis.openapi.from_dict(DOCUMENT)
# Cases are generated before the service starts (explicit examples at collection), so they carry
# this placeholder, swapped for the live service's key just before each request.
PLACEHOLDER = "Key=live-key-placeholder"
live_key: dict[str, str] = {}


@schema.auth()
class LiveKey:
    """The valid key, on every case except those where the fuzzer leaves it out on purpose."""

    def get(self, case: Any, context: Any) -> str:
        return PLACEHOLDER

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


# Headers that frame the HTTP message itself: a random value makes it invalid HTTP, which the
# server (uvicorn) refuses with a plain 400 before the API sees it. The fuzzer's random extra
# headers are about the API; the framing is tested by hand (tests/hostile/test_big_bodies.py).
FRAMING = {"transfer-encoding", "content-length", "connection", "host", "te", "trailer", "upgrade"}


@schemathesis.hook
def before_call(_context: Any, case: Any, _kwargs: Any) -> None:
    if case.headers:
        for name in [n for n in case.headers if n.lower() in FRAMING]:
            del case.headers[name]
    if case.headers and case.headers.get("Authorization") == PLACEHOLDER:
        case.headers["Authorization"] = f"Key={live_key['key']}"


def test_the_live_server_serves_the_document_fuzzed(live: tuple[Live, Engine]) -> None:
    service, _ = live
    client = service.client({})
    try:
        served = client.request("GET", "/openapi.json").json()
    finally:
        client.close()

    assert served == DOCUMENT
    assert set(DOCUMENT["paths"]) == {
        "/vicidial/leads/archive",
        "/vicidial/leads/archive/{job_id}",
        "/vicidial/leads/archive/selection",
        "/vicidial/leads/dearchive",
        "/vicidial/leads/dearchive/{job_id}",
        "/healthz",
        "/readyz",
    }


@schemathesis.hook
def filter_body(_context: Any, body: Any) -> bool:
    # JSON Schema calls 1.0 an integer; the contract refuses it (a test in test_hostile_input
    # proves the refusal for lead IDs, test_selection_api for list IDs). Leave such bodies out of
    # the positive cases' "must be accepted".
    return not (
        isinstance(body, dict)
        and any(
            isinstance(body.get(name), list) and any(isinstance(x, float) for x in body[name])
            for name in ("lead_ids", "list_ids")
        )
    )


def _validate(case: Any, response: Any) -> None:
    excluded = []
    if response.status_code == 422 and "idempotency-conflict" in response.text:
        # A valid body refused because its Idempotency-Key was used before with another body:
        # the documented answer, which depends on what the fuzzer sent earlier.
        excluded.append(checks.positive_data_acceptance)
    case.validate_response(response, checks=[c for c in CHECKS if c not in excluded])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_WITH_KEY,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_with_a_valid_key_every_answer_is_documented(case: Any, live: tuple[Live, Engine]) -> None:
    service, _ = live
    response = case.call(base_url=service.base_url)
    sent["with key"] += 1
    _validate(case, response)


@keyless.parametrize()
@settings(
    max_examples=EXAMPLES_WITHOUT_KEY,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_without_a_key_every_answer_is_documented(case: Any, live: tuple[Live, Engine]) -> None:
    service, _ = live
    if case.headers:
        case.headers.pop("Authorization", None)
    response = case.call(base_url=service.base_url)
    sent["without key"] += 1
    _validate(case, response)
    # (The coverage phase also sends methods the path does not serve: 405 comes first then.)
    if case.operation.definition.raw.get("security") and case.method == case.operation.method:
        assert response.status_code == 401, response.text
        assert json.loads(response.text)["status"] == 401


def test_stateful_submit_poll_cancel(live: tuple[Live, Engine]) -> None:
    service, _ = live
    state_machine = schema.as_state_machine()

    class Machine(state_machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": service.base_url}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            sent["stateful"] += 1
            _validate(case, response)

    Machine.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_the_fuzzers_sent_enough_requests_and_nothing_broke(live: tuple[Live, Engine]) -> None:
    service, _ = live
    total = sum(sent.values())

    print(f"fuzz requests sent: {sent}, total {total}")
    # Never skipped: fewer than the minimum (the fuzz tests deselected, or generating fewer
    # cases) fails, so a green run always means at least MIN_REQUESTS requests were judged.
    assert total >= MIN_REQUESTS, f"{sent}: run the whole file, at least {MIN_REQUESTS} needed"
    assert all(sent.values()), f"a fuzz phase sent nothing: {sent}"
    # Nothing the fuzzers sent made the service log an unexpected error.
    log = service.log_text()
    assert "unexpected error" not in log
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 1500) :][:5000]
