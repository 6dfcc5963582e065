"""The OpenAPI document describes what is served, and schemathesis finds no 5xx and no response
that breaks it; scanner requests are signed as a real scanner signs them, so the accepted paths
are exercised too, not only the refusals."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet

from beacons.signing import signed_headers
from tests.faults.support import Stack, make_stack

SCANNER = "demo-salon-scanner-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store server of this module's own."""
    s = make_stack(tmp_path_factory.mktemp("openapi"))
    yield s
    s.close()


# Refusing an oversize body with 413 is rejecting it too (the default list lacks 413).
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413"),
                    *("415", "422", "428", "429", "5xx"),
                ]
            }
        }
    }
)


@pytest.fixture(scope="module")
def api_schema(stack: Stack):  # type: ignore[no-untyped-def]
    """The served document, loaded by schemathesis against the app in process."""
    return schemathesis.openapi.from_wsgi("/openapi.json", stack.app, config=CONFIG)


def test_document_lists_the_served_apis(stack):
    doc = stack.app.test_client().get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/sightings", "/api/v1/heartbeat", "/healthz", "/readyz", "/metrics"} <= set(
        doc["paths"]
    )
    params = doc["paths"]["/api/v1/sightings"]["post"]["parameters"]
    names = {doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"] for p in params}
    assert names == {"X-CM-Scanner", "X-CM-Timestamp", "X-CM-Nonce", "X-CM-Signature"}
    batch = doc["components"]["schemas"]["Batch"]
    assert batch["properties"]["sightings"]["maxItems"] == stack.app.config["INGEST_MAX_BATCH"]
    # The portal is not mounted on a store server alone, so it is not described.
    assert not any(p.startswith("/portal") for p in doc["paths"])


# Every operation a store server alone serves; the document must list exactly these. Negative
# data needs something to make invalid: a body or a parameter.
OPERATIONS = [
    ("POST", "/api/v1/sightings", True),
    ("POST", "/api/v1/heartbeat", True),
    ("GET", "/healthz", False),
    ("GET", "/readyz", False),
    ("GET", "/metrics", False),
    ("GET", "/openapi.json", False),
    ("GET", "/optin/receipts/key", False),
    ("GET", "/optin/receipts/{receipt_id}.json", True),
    ("GET", "/me/export.json", False),
]
CASES = [
    (method, path, mode)
    for method, path, has_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_input or mode is GenerationMode.POSITIVE
]


def test_operations_under_test_are_the_documented_ones(stack):
    doc = stack.app.test_client().get("/openapi.json").get_json()
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == {(m, p) for m, p, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=str)
def test_api_conforms(api_schema, stack, method, path, mode):
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):  # type: ignore[no-untyped-def]
        if path.startswith("/api/v1/") and mode is GenerationMode.POSITIVE:
            # Signed as a scanner signs, over the exact bytes sent, so acceptance is exercised.
            # Sighting times are relative to the server's clock, and a batch id names one batch
            # only (another batch under a used id is refused, 422): neither can a schema say.
            if isinstance(case.body, dict) and isinstance(case.body.get("sightings"), list):
                case.body["batch_id"] = uuid.uuid4().hex
                for row in case.body["sightings"]:
                    if isinstance(row, dict):
                        row["ts"] = time.time() - 1
            body = b"" if isinstance(case.body, NotSet) else json.dumps(case.body).encode()
            headers = signed_headers(SCANNER, stack.secret(SCANNER), body)
            statuses.append(case.call_and_validate(data=body, headers=headers).status_code)
        else:
            statuses.append(case.call_and_validate().status_code)

    run()
    assert not [s for s in statuses if s >= 500]
    if path.startswith("/api/v1/") and mode is GenerationMode.POSITIVE:
        assert 200 in statuses  # the accepting path ran, not only refusals


def test_composed_portal_json_endpoints_documented_and_conforming(stack, tmp_path):
    """Served with the merchant portal (wsgi.build_app), its JSON endpoints join the document
    and answer as documented: anonymous callers are told to sign in (401), bad codes refused."""
    from tests.conftest import make_config
    from wsgi import build_app

    cfg = make_config(tmp_path, stack.app.config["DATABASE_URL"], stack.app.config["REDIS_URL"])
    app = build_app(cfg)
    try:
        doc = app.test_client().get("/openapi.json").get_json()
        assert {"/portal/venues/{venue_id}/present.json", "/portal/device/pair"} <= set(
            doc["paths"]
        )
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)
        for path, method, modes, expected in (
            ("/portal/venues/{venue_id}/present.json", "GET", ["positive"], {401, 404}),
            ("/portal/device/pair", "POST", ["positive", "negative"], {400, 404, 413, 429}),
        ):
            for mode in modes:
                fuzz(
                    schema[path][method].as_strategy(generation_mode=GenerationMode(mode)), expected
                )
    finally:
        app.extensions["cm_engine"].dispose()


def fuzz(strategy, expected: set[int]) -> None:  # type: ignore[no-untyped-def]
    """Run bounded schemathesis cases; each must conform and answer one of `expected`."""

    @given(case=strategy)
    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case):  # type: ignore[no-untyped-def]
        assert case.call_and_validate().status_code in expected

    run()
