"""Scanner-facing HTTP API: signed sighting batches and heartbeats. A thin adapter over ingest."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from beacons import signing
from store_server import events, ingest, resolver, scanner_health
from store_server.db import sessions
from store_server.models import Scanner
from store_server.redis_store import get_keys, get_redis, run_script
from store_server.topology import ScannerInfo, get_topology

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)
# fullmatch, [0-9] not \d: a header is ASCII digits only, with no trailing newline ("²" is a
# digit to str.isdigit and int() refuses it; a 5,000-digit number overflows the clock maths).
NONCE = re.compile(r"[0-9a-f]{16,64}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"[0-9a-f]{64}")
VERSION_MAX = 32
# A heartbeat's `through` is seconds since the epoch, far short of this (year 5138): the bound
# keeps a number too big for a float out of the arithmetic.
THROUGH_MAX = 1e11
HEARTBEAT_FIELDS = {
    "uptime_s": float,
    "queue_depth": int,
    "queue_dropped": int,
    "frames_heard": int,
    "frames_forwarded": int,
    "frames_dropped": int,
    "batches_sent": int,
    "batches_rejected": int,
}


class ApiError(Exception):
    """An HTTP error with a JSON message for the client."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@bp.errorhandler(ApiError)
def _api_error(e: ApiError) -> ResponseReturnValue:
    headers = {"Retry-After": str(e.extra["retry_after_s"])} if "retry_after_s" in e.extra else {}
    return jsonify({"error": e.message, **e.extra}), e.status, headers


def authenticate() -> tuple[ScannerInfo, str, bytes]:
    """Check the scanner's signature, timestamp window and nonce format; returns the body too."""
    cfg = current_app.config
    body = request.get_data(cache=True)  # a chunked one reaching the limit is refused (app.py)
    name = request.headers.get(signing.HEADER_SCANNER, "")
    ts_raw = request.headers.get(signing.HEADER_TIMESTAMP, "")
    nonce = request.headers.get(signing.HEADER_NONCE, "")
    sig = request.headers.get(signing.HEADER_SIGNATURE, "")
    if not name or not ts_raw or not nonce or not sig:
        raise ApiError(401, "missing signature headers")
    if not TIMESTAMP.fullmatch(ts_raw):
        raise ApiError(401, "timestamp must be integer unix seconds")
    if not NONCE.fullmatch(nonce):
        raise ApiError(401, "nonce must be 16-64 lowercase hex digits")
    if not SIGNATURE.fullmatch(sig):
        raise ApiError(401, "signature must be 64 lowercase hex digits (HMAC-SHA256)")
    skew = int(ts_raw) - time.time()
    # How far the scanner's clock runs ahead of ours, as its signed send time tells.
    g.scanner_skew_s = skew
    if abs(skew) > cfg["INGEST_MAX_SKEW_S"]:
        raise ApiError(
            401,
            "timestamp outside the accepted window: check the scanner's clock",
            skew_s=round(skew, 1),
            window_s=cfg["INGEST_MAX_SKEW_S"],
        )
    scanner = get_topology(current_app).scanner(name)
    # Unknown scanner and bad signature answer alike, so names cannot be probed.
    if scanner is None or not signing.verify(scanner.secret, int(ts_raw), nonce, body, sig):
        raise ApiError(401, "bad signature or unknown scanner")
    # Checked once the sender is known: a stranger learns nothing but that it is not one.
    if request.mimetype != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise ApiError(415, "Content-Encoding is not supported: send the JSON as it is")
    return scanner, nonce, body


def _json_body(body: bytes) -> Any:
    # orjson: a batch of 200 sightings decodes about 3x faster than with json; it is also strict
    # JSON (no NaN or Infinity literals, valid UTF-8 only), which the validation wants anyway.
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "body is not valid JSON") from None


@bp.post("/sightings")
def sightings() -> ResponseReturnValue:
    """Accept one signed batch of sightings (idempotent by batch_id)."""
    cfg = current_app.config
    scanner, nonce, body = authenticate()
    doc = _json_body(body)
    try:
        batch_id, rows = ingest.parse_batch(
            doc, cfg["INGEST_MAX_BATCH"], time.time(), cfg["INGEST_MAX_SKEW_S"]
        )
    except ingest.BadBatch as e:
        raise ApiError(400, str(e)) from None
    rows = ingest.on_server_clock(rows, g.scanner_skew_s, ahead_s=cfg["INGEST_ROW_AHEAD_S"])
    outcome, occurrences, replayed = ingest.process(
        get_redis(),
        get_keys(),
        get_topology(current_app),
        scanner,
        nonce,
        2 * cfg["INGEST_MAX_SKEW_S"],
        batch_id,
        rows,
        cfg["BATCH_ID_TTL_S"],
        digest=ingest.batch_digest(doc),
        resolver_secret=resolver.lookup_secret(cfg["DATA_KEY"]),
        rate_limit=cfg["INGEST_RATE_PER_MIN"],
        # Devices forget a push at its expires_at (PUSH_TTL_S): a long visit is pushed again.
        renew_after_s=cfg["PUSH_TTL_S"] / 2,
    )
    if replayed:
        raise ApiError(409, "nonce already used: request replayed")
    if outcome.limited:
        raise ApiError(
            429,
            "too many batches from this scanner: slow down",
            retry_after_s=_next_minute_s(),
        )
    if outcome.conflict:
        # Never acknowledged as a duplicate: these sightings would be lost unseen.
        raise ApiError(422, "batch_id already used for a different batch: each batch needs its own")
    g.ingest_outcome = outcome
    if outcome.in_progress:
        raise ApiError(503, "this batch is being processed: retry shortly", retry_after_s=1)
    app = current_app._get_current_object()
    if outcome.duplicate:
        # A retry after a failed delivery: what that attempt committed is delivered now.
        events.flush(app, min_age_s=0)
    events.deliver_now(app, occurrences, outcome.event_ids)
    return jsonify({"accepted": outcome.accepted, "duplicate": outcome.duplicate})


def _next_minute_s() -> int:
    """Seconds until a scanner's per-minute window turns over (its Retry-After)."""
    return int(60 - time.time() % 60) + 1


# Heartbeats per scanner per minute, counted like sightings (ingest's per-minute window): twice
# what a daemon at its shortest period (beacons/config.py: 0.1 s) sends. Each one leaves a
# nonce key for 2 x INGEST_MAX_SKEW_S, so a runaway or stolen scanner must be bounded.
HEARTBEAT_RATE_PER_MIN = 1200
# Atomically: a replay is refused uncounted (a captured heartbeat replayed cannot spend the
# scanner's quota and darken its zone), and one over the limit leaves no nonce behind.
_HEARTBEAT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 120)
if n > tonumber(ARGV[2]) then return 1 end
redis.call('SET', KEYS[1], 1, 'EX', ARGV[1])
return 2
"""


@bp.post("/heartbeat")
def heartbeat() -> ResponseReturnValue:
    """Record a scanner's health report."""
    scanner, nonce, body = authenticate()
    doc = _json_body(body)
    if not isinstance(doc, dict):
        raise ApiError(400, "body must be a JSON object")
    health: dict[str, Any] = {"at": time.time()}
    for field, typ in HEARTBEAT_FIELDS.items():
        v = doc.get(field, 0)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ApiError(400, f"{field} must be a non-negative number")
        health[field] = typ(v)
    adapter = doc.get("adapter", "unknown")
    if adapter not in ("up", "down", "simulated", "replay", "unknown"):
        raise ApiError(400, "adapter must be up, down, simulated, replay or unknown")
    health["adapter"] = adapter
    version = doc.get("version", "")
    if not isinstance(version, str):
        raise ApiError(400, "version must be a string")
    health["version"] = version[:VERSION_MAX]
    through = _through(doc.get("through"))
    if through is not None:
        health[scanner_health.THROUGH] = repr(through)
    r, keys = get_redis(), get_keys()
    ttl = 2 * current_app.config["INGEST_MAX_SKEW_S"]
    window = keys.scanner_minute("heartbeat", scanner.id, time.time())
    code = run_script(
        r, _HEARTBEAT_LUA, 2, keys.nonce(scanner.id, nonce), window, ttl, HEARTBEAT_RATE_PER_MIN
    )
    if code == 0:
        raise ApiError(409, "nonce already used: request replayed")
    if code == 1:
        raise ApiError(
            429,
            "too many heartbeats from this scanner: slow down",
            retry_after_s=_next_minute_s(),
        )
    # Kept, not expiring: a scanner silent for good must keep its zone dark (scanner_health),
    # and a report that expired would read as one never sent. It replaces a placeholder the
    # jobs wrote after Redis lost the last one, mark and all. In the same round trip: whether
    # SQL was told that this scanner heartbeats, which it is not at its first heartbeat ever,
    # after Redis lost its data, or after telling it failed.
    key = keys.scanner_health(scanner.id)
    pipe = r.pipeline(transaction=True)
    pipe.hexists(key, scanner_health.IN_SQL)
    pipe.hset(key, mapping=health)
    # A report without `through` (an older daemon) must not leave an earlier one standing:
    # stuck there, it would hold every exit it gates until the scanner is judged silent.
    stale = () if through is not None else (scanner_health.THROUGH,)
    pipe.hdel(key, scanner_health.RESTORED, *stale)
    told = pipe.execute()[0]
    if not told:
        _tell_sql(r, scanner.id, key)
    return jsonify({"ok": True})


def _through(value: Any) -> float | None:
    """A heartbeat's `through` (the scanner's time before which it delivered all it heard) on
    the server's clock and no later than now, or None when absent; 400 when not a time."""
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 <= value <= THROUGH_MAX:
        raise ApiError(400, f"through must be a time in seconds, from 0 to {THROUGH_MAX:.0e}")
    # Ahead of now it says no more than now; long past, it holds an exit no longer than
    # presence.HEARD_WAIT_MAX_S anyway.
    return min(ingest.on_server_time(float(value), g.scanner_skew_s), time.time())


def _tell_sql(r: Any, scanner_id: int, key: str) -> None:
    """Record in SQL that the scanner heartbeats (so a Redis that loses its report still judges
    it: scanner_health), then mark its health hash so later heartbeats skip SQL."""
    try:
        with sessions()() as db:
            # Conditional: rewritten after a Redis loss, the row is left as it is.
            db.execute(
                update(Scanner)
                .where(Scanner.id == scanner_id, Scanner.reports_health.is_(False))
                .values(reports_health=True)
            )
            db.commit()
    except SQLAlchemyError as e:
        # Answered 200 all the same, not 503: the report is stored in Redis, where silence is
        # judged, and without the mark the scanner's next heartbeat (10 s at most) tells SQL
        # again. A 503 would have the daemon log a failure it cannot fix and resend a report
        # already recorded; a SQL outage must not fail every scanner's heartbeats.
        log.warning(
            "scanner %d heartbeats, not recorded in SQL yet (%s)", scanner_id, type(e).__name__
        )
        return
    r.hset(key, scanner_health.IN_SQL, "1")
