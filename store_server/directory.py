"""Subscriber directory: who may sign in to the opt-in pages, behind a small pluggable interface.

The streaming service's own identity provider (OAuth/OIDC) implements `Directory` in production;
`BuiltinDirectory` keeps accounts in memory with scrypt password hashes, for development and tests.
It lives in memory on purpose: the streaming service's account base is not ours to store, and an
erased subscriber must leave nothing in our database.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from flask import Flask, current_app
from werkzeug.security import check_password_hash, generate_password_hash

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,63}\Z")
MAX_PASSWORD = 256
# Development-only accounts (never deploy BuiltinDirectory); passwords are hashed at start-up.
FIXTURE_ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    ("camille", "camille-demo-2026", "Camille"),
    ("yanis", "yanis-demo-2026", "Yanis"),
    ("lea", "lea-demo-2026", "Léa"),
)


@dataclass(frozen=True)
class Account:
    """A streaming account as the directory vouches for it."""

    directory_id: str
    username: str
    display_name: str


class Directory(Protocol):
    """What the opt-in pages need from an identity provider."""

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account if the credentials are right, else None."""
        ...

    def lookup(self, directory_id: str) -> Account | None:
        """The account with this directory id, or None if it no longer exists."""
        ...


def normalise_username(username: str) -> str | None:
    """Lower-cased username if it is well-formed, else None."""
    u = username.strip().lower()
    return u if USERNAME.match(u) else None


class BuiltinDirectory:
    """In-memory accounts with scrypt password hashes (development and tests)."""

    def __init__(self, accounts: Iterable[tuple[str, str, str]] = FIXTURE_ACCOUNTS) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, tuple[Account, str]] = {}
        # Hashing is slow on purpose; fixtures are hashed on first use, not at every app start.
        self._pending = list(accounts)
        self._dummy_hash = ""

    def _ready(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if not self._dummy_hash:
                # Unknown usernames still pay for one hash check: timing does not reveal who exists.
                self._dummy_hash = generate_password_hash("no-such-account")
        for username, password, name in pending:
            self.add(username, password, name)

    def add(self, username: str, password: str, display_name: str) -> Account:
        """Create (or replace) an account; ValueError on a malformed username or password."""
        u = normalise_username(username)
        if u is None:
            raise ValueError("username must be 3-64 characters: letters, digits, . _ @ + -")
        if not 8 <= len(password) <= MAX_PASSWORD:
            raise ValueError(f"password must be 8 to {MAX_PASSWORD} characters")
        account = Account(directory_id=f"dir:{u}", username=u, display_name=display_name[:100])
        with self._lock:
            self._accounts[u] = (account, generate_password_hash(password))
        return account

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account if the credentials are right, else None."""
        self._ready()
        u = normalise_username(username)
        hit = self._accounts.get(u) if u else None
        if hit is None or len(password) > MAX_PASSWORD:
            check_password_hash(self._dummy_hash, password[:MAX_PASSWORD])
            return None
        account, pw_hash = hit
        return account if check_password_hash(pw_hash, password) else None

    def lookup(self, directory_id: str) -> Account | None:
        """The account with this directory id, or None."""
        if not directory_id.startswith("dir:"):
            return None
        self._ready()
        hit = self._accounts.get(directory_id[4:])
        return hit[0] if hit else None


def get_directory(app: Flask | None = None) -> Directory:
    """The app's directory (set `app.extensions["cm_directory"]` to plug another one)."""
    return (app or current_app).extensions["cm_directory"]
