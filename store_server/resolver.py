"""Identity resolution: the Redis table of current EIDs of consented emitters, and its lookups.

Only emitters with a live consent are in the table, so a sighting that is not found is someone who
never said yes (or withdrew): it is dropped on the spot and only counted.

The table is keyed by a keyed hash of each identifier (`lookup_key`), never by the identifier
itself: ingest looks up every identifier a scanner heard, consented or not, and Redis may keep a
command's arguments (SLOWLOG, MONITOR, ACL LOG), so raw identifiers never leave the ingest
process. The hash key is derived from DATA_KEY; the table is rebuilt from SQL at start-up and
every RESOLVER_REFRESH_S, so a table keyed otherwise (before this, or under another DATA_KEY) is
simply replaced, with no migration.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import os
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from beacons.eid import window
from store_server.crypto import EMITTER_KEY, RESOLVER_LOOKUP, derive_key, unseal
from store_server.keys import Keys
from store_server.models import Consent, EmitterKey, utcnow

# The resolver table's own fields (never a lookup key: those are LOOKUP_BYTES * 2 hex digits).
VERSION_FIELD = "version"
TICKET_FIELD = "ticket"  # the number of the rebuild that made it (Keys.resolver_tickets)
# Bytes of HMAC-SHA256 kept per lookup key: 128 bits, collision-free for any table's size.
LOOKUP_BYTES = 16


@functools.lru_cache(maxsize=8)
def lookup_secret(data_key: str) -> bytes:
    """The deployment's key for resolver lookup keys, derived from DATA_KEY (cached: ingest
    asks for it on every batch)."""
    return derive_key(data_key, RESOLVER_LOOKUP)


def lookup_key(secret: bytes, identifier: str) -> str:
    """The resolver table's field for one identifier (EID or iBeacon hex): HMAC-SHA256 under
    `secret`, truncated to LOOKUP_BYTES, as hex. Without the secret, a field names nobody."""
    return lookup_keys(secret, [identifier])[0]


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod="sha256")


def lookup_keys(secret: bytes, identifiers: Iterable[str]) -> list[str]:
    """`lookup_key` of each identifier, in order: the hot path's form, which copies one keyed
    HMAC instead of keying one per identifier."""
    base = _keyed(secret)
    out = []
    for ident in identifiers:
        h = base.copy()
        h.update(ident.encode())
        out.append(h.digest()[:LOOKUP_BYTES].hex())
    return out


# Swaps a rebuilt table in unless a rebuild that read SQL later already did (a withdrawal
# committed in between would come back with the older one). A table whose ticket the counter
# has not reached (the counter was lost, not the table) is replaced, so rebuilds never stall.
# KEYS: the built table, the table, the counter. ARGV: this rebuild's ticket. 1 if swapped in.
_SWAP_LUA = """
local mine = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') or 0
local issued = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if held > mine and held <= issued then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def consent_view(c: Consent) -> dict[str, Any]:
    """The compact form of a consent that the hot path needs."""
    return {
        "id": c.id,
        "m": c.merchant_id,
        "share": c.share,
        "stats": bool(c.statistics),
        "from": _epoch(c.valid_from),
        "until": _epoch(c.valid_until),
        "receipt": c.receipt_id,
    }


def applicable_consent(
    entry: dict[str, Any], merchant_id: int, now: float
) -> dict[str, Any] | None:
    """The consent that covers this merchant now; a merchant-specific one wins over 'all'."""
    best = None
    for c in entry["c"]:
        if c["m"] not in (None, merchant_id):
            continue
        if (c["from"] or 0) > now + 1 or (c["until"] is not None and c["until"] <= now):
            continue
        if best is None or (best["m"] is None and c["m"] is not None):
            best = c
    return best


def build_table(
    secret: bytes,
    emitters: list[tuple[int, int, bytes, int, int]],
    consents: dict[int, list[dict[str, Any]]],
    now: float,
    periods: int,
    lasts_s: float = 0.0,
) -> dict[str, str]:
    """lookup_key(secret, EID hex) -> entry JSON for (emitter id, subscriber id, key, K, time
    base) with consents: at every moment from `now` to `lasts_s` later, the period then and
    `periods` either side."""
    table: dict[str, str] = {}
    for emitter_id, subscriber_id, key, exponent, time_base in emitters:
        views = consents.get(subscriber_id)
        if not views:
            continue
        entry = json.dumps({"s": subscriber_id, "e": emitter_id, "c": views})
        t = int(now) - time_base
        # The table serves until the next rebuild: with a short rotation (K=4 is 16 s) the
        # periods after `now` alone ran out before it, and every subscriber went unresolved.
        after = periods + math.ceil(lasts_s / (1 << exponent))
        eids = window(key, exponent, max(t, 0), before=periods, after=after)
        for field in lookup_keys(secret, [eid.hex() for _period, eid in eids]):
            table[field] = entry
    return table


def load_active(
    db: Session, data_key: str, subscriber_id: int | None = None
) -> tuple[list[tuple[int, int, bytes, int, int]], dict[int, list[dict[str, Any]]]]:
    """Active emitter keys and live consents from SQL (optionally for one subscriber)."""
    now = utcnow()
    q = select(Consent).where(
        Consent.withdrawn_at.is_(None),
        or_(Consent.valid_until.is_(None), Consent.valid_until > now),
    )
    if subscriber_id is not None:
        q = q.where(Consent.subscriber_id == subscriber_id)
    consents: dict[int, list[dict[str, Any]]] = {}
    for c in db.scalars(q):
        consents.setdefault(c.subscriber_id, []).append(consent_view(c))
    kq = select(EmitterKey).where(
        EmitterKey.revoked_at.is_(None), EmitterKey.subscriber_id.in_(list(consents) or [-1])
    )
    emitters = [
        (k.id, k.subscriber_id, unseal(data_key, k.key_enc, EMITTER_KEY), k.exponent, k.time_base)
        for k in db.scalars(kq)
    ]
    return emitters, consents


def refresh(
    r: redis.Redis, keys: Keys, db: Session, data_key: str, periods: int, lasts_s: float = 0.0
) -> int:
    """Rebuild the whole table from SQL and swap it in atomically, unless a rebuild that read
    SQL later did already; returns its size. `lasts_s`: how long it must serve (build_table)."""
    # Numbered before SQL is read: opt-ins, withdrawals, erasures and the periodic job rebuild
    # concurrently, and one that read SQL before a withdrawal committed must not swap its table
    # in after the withdrawal's own rebuild (her identifiers would resolve again).
    ticket = r.incr(keys.resolver_tickets())
    emitters, consents = load_active(db, data_key)
    table = build_table(lookup_secret(data_key), emitters, consents, time.time(), periods, lasts_s)
    tmp = keys.resolver_building()
    pipe = r.pipeline(transaction=True)
    pipe.delete(tmp)
    # A new version per table: ingest writes what it resolved against the version it read, so a
    # batch in flight while a consent ends resolves again instead of writing a presence after
    # the withdrawal has ended it (ingest._WRITE_LUA).
    pipe.hset(tmp, mapping={**table, VERSION_FIELD: os.urandom(8).hex(), TICKET_FIELD: ticket})
    pipe.eval(_SWAP_LUA, 3, tmp, keys.resolver(), keys.resolver_tickets(), ticket, TICKET_FIELD)
    pipe.execute()
    return len(table)
