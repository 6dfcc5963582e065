"""Server-side revocation of browser sign-ins (portal staff, auditor, subscriber).

The cookies stay signed cookies, but each signed-in cookie also carries a random session id that
must be on an allow-list in Redis. Signing out deletes that one id (other browsers of the same
person stay signed in); a password change deletes every id of that person. So a copy of a cookie
taken before sign-out, or before a password change, is refused afterwards.

Keys (see store_server.keys): `session(<hmac of id>)` holds the HMAC of the principal and expires
after the idle lifetime, which each checked request slides (GETEX: one command per request);
`sessions_of(<hmac of principal>)` is the set of that principal's ids, for "end all". A session
also carries its sign-in time and is refused after `SESSION_MAX_AGE_S` whatever its activity, so
that set, refreshed at each sign-in to that age, always outlives its members; each sign-in also
drops the ids whose session expired, so the set holds no more than the sessions live at the
last sign-in, however often its owner signs in. Only HMACs reach Redis: neither a directory id
nor a usable session id can be read from a dump.

Redis unreachable: a request that carries a sign-in is refused with 503 (fail closed), never let
through as signed in and never sent to sign in again as if the session had ended.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import Flask, current_app
from werkzeug.exceptions import ServiceUnavailable

from store_server.keys import Keys
from store_server.redis_store import get_keys, get_redis

log = logging.getLogger(__name__)

# Absolute lifetime of any sign-in, whatever its activity (idle lifetimes are shorter).
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
RETRY_AFTER_S = 2


class SessionStoreUnavailable(ServiceUnavailable):
    """Redis could not confirm a sign-in: the request is refused, not trusted."""

    description = "Sign-in check unavailable, please retry in a moment."

    def __init__(self) -> None:
        super().__init__()
        self.retry_after = RETRY_AFTER_S


def staff_principal(staff_id: int) -> str:
    """Principal of a staff account: portal and auditor sign-ins of one person share it."""
    return f"staff:{staff_id}"


def subscriber_principal(directory_id: str) -> str:
    """Principal of a subscriber's directory account."""
    return f"sub:{directory_id}"


@dataclass(frozen=True)
class SessionRegistry:
    """The allow-list of live session ids, per principal, in Redis."""

    redis: Callable[[], redis.Redis]
    keys: Keys
    secret: bytes
    max_age_s: int = DEFAULT_MAX_AGE_S

    def _digest(self, kind: str, value: str) -> str:
        # Domain-separated HMAC: a session id and a principal never collide, nor leak in clear.
        return hmac.new(self.secret, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def start(self, principal: str, idle_s: int) -> str:
        """Register a new session of `principal`; returns its id (to put in the signed cookie)."""
        sid = secrets.token_urlsafe(24)
        owner = self._digest("principal", principal)
        key, index = self.keys.session(self._digest("sid", sid)), self.keys.sessions_of(owner)
        try:
            r = self.redis()
            pipe = r.pipeline(transaction=True)
            pipe.set(key, owner, ex=max(1, min(idle_s, self.max_age_s)))
            pipe.sadd(index, self._digest("sid", sid))
            pipe.expire(index, self.max_age_s)
            pipe.execute()
            _prune(r, self.keys, index)
        except redis.RedisError as e:
            log.warning("session store unavailable at sign-in")
            raise SessionStoreUnavailable() from e
        return sid

    def check(self, sid: object, principal: str, started: object, idle_s: int) -> bool:
        """True when `sid` is a live session of `principal`; slides its idle expiry."""
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            return False
        if not isinstance(started, (int, float)) or time.time() - started > self.max_age_s:
            return False
        try:
            # GETEX: read and slide in one command, the only Redis call of a signed-in request.
            owner = self.redis().getex(
                self.keys.session(self._digest("sid", sid)), ex=max(1, min(idle_s, self.max_age_s))
            )
        except redis.RedisError as e:
            log.warning("session store unavailable")
            raise SessionStoreUnavailable() from e
        if owner is None:
            return False
        if isinstance(owner, bytes):
            owner = owner.decode()
        return hmac.compare_digest(owner, self._digest("principal", principal))

    def end(self, sid: object, principal: str) -> None:
        """Sign out one session (the other sessions of that principal stay)."""
        if not isinstance(sid, str) or not sid:
            return
        digest = self._digest("sid", sid)
        try:
            pipe = self.redis().pipeline(transaction=True)
            pipe.delete(self.keys.session(digest))
            pipe.srem(self.keys.sessions_of(self._digest("principal", principal)), digest)
            pipe.execute()
        except redis.RedisError as e:
            log.warning("session store unavailable at sign-out")
            raise SessionStoreUnavailable() from e

    def end_all(self, principal: str) -> int:
        """Sign out every session of `principal` (password change); returns how many were live."""
        index = self.keys.sessions_of(self._digest("principal", principal))
        try:
            r = self.redis()
            members = [m.decode() if isinstance(m, bytes) else m for m in r.smembers(index)]
            pipe = r.pipeline(transaction=True)
            for digest in members:
                pipe.delete(self.keys.session(digest))
            pipe.delete(index)
            ended = pipe.execute()[:-1]
        except redis.RedisError as e:
            log.warning("session store unavailable when ending all sessions")
            raise SessionStoreUnavailable() from e
        return sum(int(n) for n in ended)


def _prune(r: redis.Redis, keys: Keys, index: str) -> None:
    """Drop from a principal's set the ids whose session expired (idle, never signed out): each
    sign-in pushes the set's expiry a week on, so someone who signs in daily and never signs out
    grew it by one id a day, for good. A session's key is written with its id in one
    transaction and deleted with it, so an id without its key is one that expired."""
    members = list(r.smembers(index))
    if not members:
        return
    pipe = r.pipeline(transaction=False)
    for digest in members:
        pipe.exists(keys.session(digest))
    dead = [m for m, live in zip(members, pipe.execute(), strict=True) if not live]
    if dead:
        r.srem(index, *dead)


def get_registry(app: Flask | None = None) -> SessionRegistry:
    """The app's session registry (made on first use, from its Redis, prefix and secret)."""
    # The real app, not the proxy: the registry outlives this request and is used outside one.
    app = app or current_app
    app = getattr(app, "_get_current_object", lambda: app)()
    reg = app.extensions.get("cm_signin_registry")
    if reg is None:
        reg = SessionRegistry(
            lambda: get_redis(app),
            get_keys(app),
            str(app.config["SECRET_KEY"]).encode(),
            int(app.config.get("SESSION_MAX_AGE_S", DEFAULT_MAX_AGE_S)),
        )
        app.extensions["cm_signin_registry"] = reg
    return reg


def end_all_sessions(app: Flask, principal: str) -> int:
    """End every sign-in of `principal`, in every browser (call after a password change)."""
    return get_registry(app).end_all(principal)
