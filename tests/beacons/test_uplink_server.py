"""A real local ingest server for the uplink tests (and bench/uplink.py), and its own checks.

It speaks the store server's wire protocol: verifies the HMAC signature with beacons.signing,
enforces the timestamp window and nonce uniqueness, deduplicates by batch id, and can be made to
fail (HTTP status) or go away entirely (socket closed) and come back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from beacons import signing


class IngestServer:
    """POST /api/v1/sightings and /api/v1/heartbeat, in a thread, on 127.0.0.1."""

    def __init__(self, secrets: dict[str, str], port: int = 0) -> None:
        self.secrets = secrets
        self.batches: dict[str, list[dict[str, Any]]] = {}
        self.heartbeats: list[dict[str, Any]] = []
        self.posts = 0
        self.duplicates = 0
        self.refused: list[str] = []
        self.fail_status: int | None = None
        self.fail_body: dict[str, Any] | bytes = {}  # bytes: sent as they are
        self.lose_responses = 0  # store the next N batches but drop the connection unanswered
        self.retry_after: str | None = None
        self.nonces: set[str] = set()
        self.bodies: list[bytes] = []
        self.cond = threading.Condition()
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> IngestServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, reply, headers = server.handle(self.path, dict(self.headers), body)
                if status == 0:  # the server has the batch but the reply is lost on the way
                    self.close_connection = True
                    return
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: clients now get connection refused."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _auth(self, headers: dict[str, str], body: bytes) -> str | None:
        scanner = headers.get(signing.HEADER_SCANNER, "")
        secret = self.secrets.get(scanner)
        if secret is None:
            return "unknown scanner"
        try:
            ts = int(headers[signing.HEADER_TIMESTAMP])
            nonce = headers[signing.HEADER_NONCE]
            sig = headers[signing.HEADER_SIGNATURE]
        except (KeyError, ValueError):
            return "missing signature headers"
        if abs(time.time() - ts) > 300:
            return "timestamp outside window"
        if not signing.verify(secret, ts, nonce, body, sig):
            return "bad signature"
        if nonce in self.nonces:
            return "nonce replayed"
        self.nonces.add(nonce)
        return None

    def handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.cond:
            try:
                self.posts += 1
                self.bodies.append(body)
                if self.fail_status is not None:
                    extra = {"Retry-After": self.retry_after} if self.retry_after else {}
                    return self.fail_status, self.fail_body, extra
                reason = self._auth(headers, body)
                if reason:
                    self.refused.append(reason)
                    return 401, {"error": reason}, {}
                doc = json.loads(body)
                if path == "/api/v1/heartbeat":
                    self.heartbeats.append(doc)
                    return 200, {"ok": True}, {}
                if path != "/api/v1/sightings":
                    return 404, {"error": "no route"}, {}
                bid = doc["batch_id"]
                if bid in self.batches:
                    self.duplicates += 1
                    return 200, {"accepted": 0, "duplicate": True}, {}
                self.batches[bid] = doc["sightings"]
                if self.lose_responses > 0:
                    self.lose_responses -= 1
                    return 0, {}, {}
                return 200, {"accepted": len(doc["sightings"]), "duplicate": False}, {}
            finally:
                self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Block until predicate() holds (re-checked on every request)."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def sightings(self) -> list[dict[str, Any]]:
        with self.cond:
            return [s for batch in self.batches.values() for s in batch]


SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def test_server_accepts_a_signed_batch_and_deduplicates() -> None:
    srv = IngestServer({"s1": SECRET}).start()
    try:
        body = json.dumps({"batch_id": "a" * 32, "sent_at": time.time(), "sightings": []}).encode()
        for _ in range(2):
            headers = signing.signed_headers("s1", SECRET, body)
            r = requests.post(srv.url + "/api/v1/sightings", data=body, headers=headers, timeout=5)
            assert r.status_code == 200
        assert r.json() == {"accepted": 0, "duplicate": True}
    finally:
        srv.stop()


def test_server_refuses_a_wrong_secret_and_a_replayed_nonce() -> None:
    srv = IngestServer({"s1": SECRET}).start()
    try:
        body = b'{"batch_id": "b", "sightings": []}'
        bad = signing.signed_headers("s1", "ff" * 32, body)
        r = requests.post(srv.url + "/api/v1/sightings", data=body, headers=bad, timeout=5)
        assert (r.status_code, r.json()["error"]) == (401, "bad signature")
        good = signing.signed_headers("s1", SECRET, body)
        for expected in (200, 401):
            r = requests.post(srv.url + "/api/v1/sightings", data=body, headers=good, timeout=5)
            assert r.status_code == expected
    finally:
        srv.stop()
