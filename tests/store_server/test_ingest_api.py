"""The scanners' ingest API as an attacker and a flaky network would use it: every bad request gets
its 4xx with a JSON reason and writes nothing anywhere; a retried batch is counted once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from beacons import signing
from store_server import ingest
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.conftest import free_port
from tests.faults.support import (
    Stack,
    batch_body,
    eid_rows,
    make_stack,
    redis_state,
    signed,
    sql_state,
    stranger_rows,
)
from tests.helpers import ingest_rows

SCANNER = "demo-salon-scanner-1"
URL = "/api/v1/sightings"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store server of this module's own: no background jobs touch its keys."""
    s = make_stack(tmp_path_factory.mktemp("ingest_api"))
    yield s
    s.close()


@pytest.fixture
def client(stack: Stack):  # type: ignore[no-untyped-def]
    """HTTP test client of the module's app."""
    return stack.app.test_client()


class Snapshot:
    """Every key under the app's Redis prefix and every SQL row: proof a request left no trace."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.redis, self.sql = self._take()

    def _take(self) -> tuple[dict[str, Any], dict[str, list[str]]]:
        app = self.stack.app
        keys = get_keys(app)
        state = redis_state(get_redis(app), keys.pattern())
        # Rate-limit windows count requests (refused ones too); they hold no data.
        limits = keys.ratelimit("")
        return {k: v for k, v in state.items() if not k.startswith(limits)}, sql_state(app)

    def assert_unchanged(self) -> None:
        """Fail if anything was written since the snapshot."""
        redis_now, sql_now = self._take()
        assert redis_now == self.redis
        assert sql_now == self.sql


def post(client, body: bytes, headers: dict[str, str], url: str = URL):  # type: ignore[no-untyped-def]
    """POST raw bytes."""
    return client.post(url, data=body, headers=headers)


def assert_refused(resp, status: int, fragment: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The response is `status` with a JSON error mentioning `fragment`."""
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/json"
    doc = resp.get_json()
    assert fragment in doc["error"], doc
    return doc


def good_rows(stack: Stack, n: int = 3) -> list[dict[str, Any]]:
    """Sightings of alice (consented) plus one stranger."""
    now = time.time()
    return eid_rows(stack.world.emitters["alice"], now, n) + stranger_rows(now - 1, 1)


# --- authentication -------------------------------------------------------------------------


def test_bad_signature_refused_without_trace(stack, client):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    headers[signing.HEADER_SIGNATURE] = "0" * 64
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers), 401, "bad signature")
    snap.assert_unchanged()


def test_body_changed_after_signing_refused(stack, client):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    snap = Snapshot(stack)
    assert_refused(post(client, body.replace(b"-55", b"-45"), headers), 401, "bad signature")
    snap.assert_unchanged()


def test_signed_with_another_scanners_secret_refused(stack, client):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret("demo-car-scanner"), body)
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers), 401, "bad signature")
    snap.assert_unchanged()


def test_unknown_scanner_answers_like_a_bad_signature(stack, client):
    body = batch_body(good_rows(stack))
    headers = signed("no-such-scanner", stack.secret(SCANNER), body)
    snap = Snapshot(stack)
    doc = assert_refused(post(client, body, headers), 401, "bad signature or unknown scanner")
    snap.assert_unchanged()
    assert doc == {"error": "bad signature or unknown scanner"}


# 302, not 301: the signed timestamp is truncated to whole seconds and the request takes time.
@pytest.mark.parametrize("skew", [-3600, -302, 302, 86400])
def test_timestamp_outside_window_refused_with_its_skew(stack, client, skew):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body, now=time.time() + skew)
    snap = Snapshot(stack)
    doc = assert_refused(post(client, body, headers), 401, "timestamp outside the accepted window")
    snap.assert_unchanged()
    assert doc["window_s"] == stack.app.config["INGEST_MAX_SKEW_S"]
    # The reason a scanner logs: how far off its clock is, and in which direction.
    assert doc["skew_s"] == pytest.approx(skew, abs=2)


@pytest.mark.parametrize("skew", [-290, 290])
def test_timestamp_inside_window_accepted(stack, client, skew):
    body = batch_body(good_rows(stack))
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body, now=time.time() + skew))
    assert resp.status_code == 200, resp.data


@pytest.mark.parametrize(
    "header",
    [
        signing.HEADER_SCANNER,
        signing.HEADER_TIMESTAMP,
        signing.HEADER_NONCE,
        signing.HEADER_SIGNATURE,
    ],
)
def test_missing_signature_header_refused(stack, client, header):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    del headers[header]
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers), 401, "missing signature headers")
    snap.assert_unchanged()


@pytest.mark.parametrize(
    ("header", "value", "fragment"),
    [
        (signing.HEADER_TIMESTAMP, "12.5", "integer unix seconds"),
        (signing.HEADER_TIMESTAMP, "-5", "integer unix seconds"),
        (signing.HEADER_TIMESTAMP, "1e9", "integer unix seconds"),
        (signing.HEADER_NONCE, "short", "nonce must be"),
        (signing.HEADER_NONCE, "A" * 32, "nonce must be"),
        (signing.HEADER_NONCE, "0" * 65, "nonce must be"),
        # A digit to str.isdigit that int() refuses; numbers past int's digit limit or the
        # clock maths; a signature compare_digest cannot take (a 500 once, for known names).
        pytest.param(signing.HEADER_TIMESTAMP, "\u00b2", "integer unix", id="superscript-digit"),
        pytest.param(signing.HEADER_TIMESTAMP, "9" * 400, "integer unix", id="400-digits"),
        pytest.param(signing.HEADER_TIMESTAMP, "9" * 5000, "integer unix", id="5000-digits"),
        pytest.param(signing.HEADER_SIGNATURE, "\u00e9" * 64, "signature must be", id="latin-1"),
        pytest.param(signing.HEADER_SIGNATURE, "A" * 64, "signature must be", id="uppercase"),
        pytest.param(signing.HEADER_SIGNATURE, "0" * 63, "signature must be", id="short"),
    ],
)
def test_malformed_signature_header_refused(stack, client, header, value, fragment):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    headers[header] = value
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers), 401, fragment)
    snap.assert_unchanged()


def test_replayed_request_refused_and_changes_nothing(stack, client):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    first = post(client, body, headers)
    assert first.status_code == 200 and first.get_json() == {"accepted": 4, "duplicate": False}
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers), 409, "nonce already used")
    snap.assert_unchanged()


# --- body and batch validation --------------------------------------------------------------


@pytest.mark.parametrize("url", [URL, "/api/v1/heartbeat"])
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"Content-Type": "text/plain"}, "Content-Type must be application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type must be"),
        ({"Content-Type": None}, "Content-Type must be"),
        ({"Content-Encoding": "gzip"}, "Content-Encoding is not supported"),
    ],
)
def test_a_body_that_is_not_plain_json_is_415_without_trace(stack, client, url, change, fragment):
    body = batch_body(good_rows(stack))
    headers = {**signed(SCANNER, stack.secret(SCANNER), body), **change}
    headers = {k: v for k, v in headers.items() if v is not None}
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers, url), 415, fragment)
    snap.assert_unchanged()


def test_oversize_body_is_413_json_without_trace(stack, client):
    limit = stack.app.config["INGEST_MAX_BODY"]
    body = batch_body(good_rows(stack)) + b" " * limit
    snap = Snapshot(stack)
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert resp.status_code == 413
    assert resp.mimetype == "application/json" and resp.get_json()["error"]
    snap.assert_unchanged()


def test_oversize_body_is_413_over_real_http(stack):
    # Served without background jobs, which would write under this module's prefix.
    port = free_port()
    server = make_server("127.0.0.1", port, stack.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = b"{" + b" " * (stack.app.config["INGEST_MAX_BODY"] + 10) + b"}"
        resp = requests.post(
            f"http://127.0.0.1:{port}{URL}",
            data=body,
            headers=signed(SCANNER, stack.secret(SCANNER), body),
            timeout=10,
        )
        assert resp.status_code == 413
        assert resp.json()["error"]
    finally:
        server.shutdown()


@pytest.fixture
def served(stack: Stack) -> Iterator[str]:
    """The module's app over real HTTP (Werkzeug's server, which dechunks request bodies)."""
    port = free_port()
    server = make_server("127.0.0.1", port, stack.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def _chunks(data: bytes, size: int = 16384) -> Iterator[bytes]:
    """A body requests sends chunked (no Content-Length), as a proxy may forward one."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_chunked_batch_is_accepted(stack, served):
    body = batch_body(good_rows(stack))
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    resp = requests.post(served + URL, data=_chunks(body), headers=headers, timeout=10)
    assert resp.status_code == 200 and resp.json() == {"accepted": 4, "duplicate": False}


def test_a_chunked_body_past_the_limit_is_413_not_cut_short(stack, served):
    # The server's stream stops at the limit without an error: the part read is a valid batch
    # signed on its own, and what follows it would be dropped unseen.
    limit = stack.app.config["INGEST_MAX_BODY"]
    head = batch_body(good_rows(stack))
    head += b" " * (limit - len(head))
    headers = signed(SCANNER, stack.secret(SCANNER), head)
    snap = Snapshot(stack)
    resp = requests.post(
        served + URL, data=_chunks(head + b"GARBAGE" * 20000), headers=headers, timeout=10
    )
    assert resp.status_code == 413 and "limit" in resp.json()["error"]
    snap.assert_unchanged()


def test_batch_longer_than_the_limit_refused(stack, client):
    limit = stack.app.config["INGEST_MAX_BATCH"]
    rows = stranger_rows(time.time() - 5, limit + 1, step=0.001)
    body = batch_body(rows)
    assert len(body) < stack.app.config["INGEST_MAX_BODY"]  # refused for its length, not size
    snap = Snapshot(stack)
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert_refused(resp, 400, f"the limit is {limit}")
    snap.assert_unchanged()


def test_batch_at_the_limit_accepted(stack, client):
    limit = stack.app.config["INGEST_MAX_BATCH"]
    body = batch_body(stranger_rows(time.time() - 5, limit, step=0.001))
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert resp.status_code == 200 and resp.get_json()["accepted"] == limit


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"batch"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
)
def test_non_json_or_non_object_body_refused(stack, client, raw, fragment):
    snap = Snapshot(stack)
    assert_refused(post(client, raw, signed(SCANNER, stack.secret(SCANNER), raw)), 400, fragment)
    snap.assert_unchanged()


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"ts": time.time() - 1, "kind": "eid", "id": "0123456789abcdef"}
    row["rssi"] = -60
    row.update(over)
    return {k: v for k, v in row.items() if v is not ...}


BAD_DOCS: list[tuple[str, Any, str]] = [
    ("batch_id missing", {"batch_id": ...}, "batch_id must be"),
    ("batch_id int", {"batch_id": 12345678, "sightings": []}, "batch_id must be"),
    ("batch_id short", {"batch_id": "abc", "sightings": []}, "batch_id must be"),
    ("batch_id long", {"batch_id": "a" * 65, "sightings": []}, "batch_id must be"),
    ("batch_id chars", {"batch_id": "abc/../defgh", "sightings": []}, "batch_id must be"),
    ("batch_id newline", {"batch_id": "abcdefgh\n", "sightings": []}, "batch_id must be"),
    ("sightings missing", {"sightings": ...}, "sightings must be a list"),
    ("sightings object", {"sightings": {}}, "sightings must be a list"),
    ("row not object", {"sightings": [[1, 2]]}, "sightings[0] must be an object"),
    ("ts missing", {"sightings": [_row(ts=...)]}, "ts must be a number"),
    ("ts string", {"sightings": [_row(ts="now")]}, "ts must be a number"),
    ("ts bool", {"sightings": [_row(ts=True)]}, "ts must be a number"),
    ("ts far future", {"sightings": [_row(ts=time.time() + 3600)]}, "outside the accepted"),
    ("ts 8 days old", {"sightings": [_row(ts=time.time() - 8 * 86400)]}, "outside the accepted"),
    ("kind unknown", {"sightings": [_row(kind="mac")]}, "kind must be one of"),
    ("kind missing", {"sightings": [_row(kind=...)]}, "kind must be one of"),
    ("id uppercase", {"sightings": [_row(id="0123456789ABCDEF")]}, "not a valid eid"),
    ("id short", {"sightings": [_row(id="0123")]}, "not a valid eid"),
    ("id int", {"sightings": [_row(id=12)]}, "not a valid eid"),
    ("id newline", {"sightings": [_row(id="0123456789abcdef\n")]}, "not a valid eid"),
    ("ibeacon id as eid", {"sightings": [_row(kind="ibeacon")]}, "not a valid ibeacon"),
    ("mac address", {"sightings": [_row(id="aa:bb:cc:dd:ee:ff")]}, "not a valid eid"),
    ("rssi too low", {"sightings": [_row(rssi=-131)]}, "rssi must be"),
    ("rssi too high", {"sightings": [_row(rssi=21)]}, "rssi must be"),
    ("rssi string", {"sightings": [_row(rssi="-60")]}, "rssi must be"),
    ("rssi bool", {"sightings": [_row(rssi=False)]}, "rssi must be"),
    ("rssi null", {"sightings": [_row(rssi=None)]}, "rssi must be"),
    ("second row bad", {"sightings": [_row(), _row(rssi=99)]}, "sightings[1].rssi"),
]


@pytest.mark.parametrize(
    ("doc", "fragment"), [c[1:] for c in BAD_DOCS], ids=[c[0] for c in BAD_DOCS]
)
def test_wrong_types_and_ranges_refused_without_trace(stack, client, doc, fragment):
    doc = {k: v for k, v in {"batch_id": uuid.uuid4().hex, "sightings": [], **doc}.items()}
    doc = {k: v for k, v in doc.items() if v is not ...}
    body = json.dumps(doc).encode()
    snap = Snapshot(stack)
    assert_refused(post(client, body, signed(SCANNER, stack.secret(SCANNER), body)), 400, fragment)
    snap.assert_unchanged()


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_refused(stack, client, literal):
    # Python's json accepts these non-standard literals, so the range checks must catch them.
    for field in (b'"ts"', b'"rssi"'):
        row = {"ts": 1, "kind": "eid", "id": "0123456789abcdef", "rssi": -60}
        text = json.dumps({"batch_id": uuid.uuid4().hex, "sightings": [row]}).encode()
        value = b"1" if field == b'"ts"' else b"-60"
        body = text.replace(field + b": " + value, field + b": " + literal)
        assert literal in body
        snap = Snapshot(stack)
        resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
        assert resp.status_code == 400, resp.data
        snap.assert_unchanged()


def test_wrong_method_and_unknown_path_are_json(stack, client):
    assert_refused(client.get(URL), 405, "")
    assert_refused(client.post("/api/v1/sighting"), 404, "")
    # Not a redirect page: a doubled slash is just a path nobody serves.
    assert_refused(client.post("/api/v1//sightings"), 404, "")


# --- idempotency and counting ---------------------------------------------------------------


def test_retried_batch_acknowledged_as_duplicate_and_counted_once(stack, client):
    app, r, keys = stack.app, get_redis(stack.app), get_keys(stack.app)
    rows = good_rows(stack) + stranger_rows(time.time() - 2, 2)
    body = batch_body(rows)
    first = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert first.get_json() == {"accepted": len(rows), "duplicate": False}
    assert list(r.scan_iter(match=f"{keys.prefix}dropped:*"))
    after_first = Snapshot(stack)
    for _ in range(3):
        # The scanner never got the answer and retries: same body, new signature and nonce.
        again = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
        assert again.status_code == 200
        assert again.get_json() == {"accepted": len(rows), "duplicate": True}
    # Only the retries' nonces are new; the counters, tracks and audit log did not move.
    redis_now = Snapshot(stack).redis
    new = {k for k in redis_now if k not in after_first.redis}
    assert all(k.startswith(f"{keys.prefix}nonce:") for k in new) and len(new) == 3
    assert {k: v for k, v in redis_now.items() if k not in new} == after_first.redis
    assert sql_state(app) == after_first.sql


def test_a_retry_serialised_anew_is_still_the_same_batch(stack, client):
    rows = good_rows(stack)
    batch_id = uuid.uuid4().hex
    first = batch_body(rows, batch_id)
    assert post(client, first, signed(SCANNER, stack.secret(SCANNER), first)).status_code == 200
    # Another sent_at, keys in another order, other spacing: the same sightings.
    again = {"sightings": [dict(reversed(r.items())) for r in rows], "batch_id": batch_id}
    body = json.dumps(again, indent=1).encode()
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert resp.get_json() == {"accepted": len(rows), "duplicate": True}


def test_another_batch_under_a_used_batch_id_is_refused_not_acknowledged(stack, client):
    keys = get_keys(stack.app)
    batch_id = uuid.uuid4().hex
    first = batch_body(good_rows(stack), batch_id)
    resp = post(client, first, signed(SCANNER, stack.secret(SCANNER), first))
    assert resp.get_json() == {"accepted": 4, "duplicate": False}
    other = batch_body(stranger_rows(time.time() - 1, 5), batch_id)
    snap = Snapshot(stack)
    resp = post(client, other, signed(SCANNER, stack.secret(SCANNER), other))
    # Acknowledged, the scanner would delete sightings nobody ever read.
    assert_refused(resp, 422, "already used for a different batch")
    redis_now = Snapshot(stack).redis
    new = {k for k in redis_now if k not in snap.redis}
    assert len(new) == 1 and next(iter(new)).startswith(f"{keys.prefix}nonce:")
    assert {k: v for k, v in redis_now.items() if k not in new} == snap.redis
    assert sql_state(stack.app) == snap.sql
    retry = post(client, first, signed(SCANNER, stack.secret(SCANNER), first))
    assert retry.get_json() == {"accepted": 4, "duplicate": True}


def test_same_batch_id_from_another_scanner_is_its_own_batch(stack, client):
    batch_id = uuid.uuid4().hex
    for scanner in (SCANNER, "demo-salon-scanner-2"):
        body = batch_body(stranger_rows(time.time() - 1, 1), batch_id)
        resp = post(client, body, signed(scanner, stack.secret(scanner), body))
        assert resp.get_json() == {"accepted": 1, "duplicate": False}


def test_dropped_sightings_are_counted_not_kept(stack, client):
    r, keys = get_redis(stack.app), get_keys(stack.app)
    rows = stranger_rows(time.time() - 3, 3)
    body = batch_body(rows)
    counter_keys = sorted(r.scan_iter(match=f"{keys.prefix}dropped:*"))
    before = {k: int(r.get(k)) for k in counter_keys}
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body))
    assert resp.status_code == 200
    after = {k: int(r.get(k)) for k in r.scan_iter(match=f"{keys.prefix}dropped:*")}
    assert sum(after.values()) - sum(before.values()) == 3
    dump = json.dumps(redis_state(r, keys.pattern())) + json.dumps(sql_state(stack.app))
    for row in rows:
        assert row["id"] not in dump


# --- heartbeats -----------------------------------------------------------------------------

HEARTBEAT = "/api/v1/heartbeat"


def _scanner_id(stack: Stack, name: str) -> int:
    info = get_topology(stack.app).scanner(name)
    assert info is not None
    return info.id


def test_heartbeat_stored(stack, client):
    doc = {
        "uptime_s": 12.5,
        "queue_depth": 3,
        "queue_dropped": 0,
        "frames_heard": 1000,
        "frames_forwarded": 40,
        "frames_dropped": 960,
        "batches_sent": 7,
        "batches_rejected": 1,
        "adapter": "up",
        "version": "1.2.3",
    }
    body = json.dumps(doc).encode()
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body), HEARTBEAT)
    assert resp.status_code == 200 and resp.get_json() == {"ok": True}
    health = get_redis(stack.app).hgetall(
        get_keys(stack.app).scanner_health(_scanner_id(stack, SCANNER))
    )
    assert float(health["at"]) == pytest.approx(time.time(), abs=5)
    assert int(health["queue_depth"]) == 3 and float(health["uptime_s"]) == 12.5
    assert health["adapter"] == "up" and health["version"] == "1.2.3"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"queue_depth": -1}, "queue_depth must be a non-negative number"),
        ({"queue_depth": "3"}, "queue_depth must be a non-negative number"),
        ({"frames_heard": True}, "frames_heard must be a non-negative number"),
        ({"uptime_s": None}, "uptime_s must be a non-negative number"),
        ({"adapter": "hacked"}, "adapter must be"),
        ({"version": ["1.2.3"]}, "version must be a string"),
        ({"version": 3}, "version must be a string"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_heartbeat_refused_without_trace(stack, client, doc, fragment):
    body = json.dumps(doc).encode()
    snap = Snapshot(stack)
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body), HEARTBEAT)
    assert_refused(resp, 400, fragment)
    snap.assert_unchanged()


def test_a_deeply_nested_heartbeat_field_is_400_not_a_crash(stack, client):
    # orjson decodes up to 1,024 levels; turning that into text once recursed past Python's limit.
    body = b'{"version":' + b"[" * 1000 + b"]" * 1000 + b"}"
    snap = Snapshot(stack)
    resp = post(client, body, signed(SCANNER, stack.secret(SCANNER), body), HEARTBEAT)
    assert_refused(resp, 400, "version must be a string")
    snap.assert_unchanged()


def test_heartbeat_needs_a_signature_and_a_fresh_nonce(stack, client):
    body = b"{}"
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    bad = {**headers, signing.HEADER_SIGNATURE: "f" * 64}
    snap = Snapshot(stack)
    assert_refused(post(client, body, bad, HEARTBEAT), 401, "bad signature")
    snap.assert_unchanged()
    assert post(client, body, headers, HEARTBEAT).status_code == 200
    snap = Snapshot(stack)
    assert_refused(post(client, body, headers, HEARTBEAT), 409, "nonce already used")
    snap.assert_unchanged()


def test_retry_racing_the_first_attempt_is_not_counted_twice(stack):
    app, keys = stack.app, get_keys(stack.app)
    scanner = get_topology(app).scanner(SCANNER)
    rows = eid_rows(stack.world.emitters["alice"], time.time(), 4)
    rows += stranger_rows(time.time() - 2, 2)
    batch_id = uuid.uuid4().hex
    outcomes = []

    client = get_redis(app)

    class RetryArrives(type(client)):  # type: ignore[misc]
        """The app's own client class; the retry lands between the first attempt's read of the
        tracking states and its write (the write script), as a scanner that timed out
        would make it land from another worker."""

        fired = False

        def evalsha(self, sha, *args):  # type: ignore[no-untyped-def]
            if sha == ingest.WRITE_SHA and not RetryArrives.fired:
                RetryArrives.fired = True
                outcomes.append(run(get_redis(app)))
            return super().evalsha(sha, *args)

    def run(r):  # type: ignore[no-untyped-def]
        return ingest_rows(r, keys, get_topology(app), scanner, rows, batch_id=batch_id).duplicate

    racing = RetryArrives(connection_pool=get_redis(app).connection_pool)
    dropped_before = _dropped_total(stack)
    outcomes.append(run(racing))
    assert RetryArrives.fired
    assert sorted(outcomes) == [False, True]
    assert _dropped_total(stack) - dropped_before == 2


def _dropped_total(stack: Stack) -> int:
    r, keys = get_redis(stack.app), get_keys(stack.app)
    return sum(int(r.get(k)) for k in r.scan_iter(match=f"{keys.prefix}dropped:*"))
