"""The data-protection officer's read-only view: audit log, retention in force, consent
statistics, receipt verifier; auditors only."""

from __future__ import annotations

import secrets

import pytest

from store_server import services
from store_server.db import sessions
from tests.store_server.optin.helpers import (
    csrf,
    make_account,
    make_shop,
    new_client,
    opt_in,
    token_for,
)

pytestmark = pytest.mark.consent


def _staff(app, role: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    email, password = f"{role}-{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(12)
    with sessions(app)() as db:
        merchant = services.create_merchant(db, f"m-{secrets.token_hex(4)}", "M", "shop")
        services.create_staff(db, email, password, role, None if role == "auditor" else merchant)
        db.commit()
    return email, password


def _sign_in(client, email: str, password: str):  # type: ignore[no-untyped-def]
    page = client.get("/auditor/signin")
    return client.post(
        "/auditor/signin",
        data={"csrf_token": csrf(page.text), "email": email, "password": password},
    )


def test_auditor_sees_log_retention_and_statistics(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    opt_in(new_client(app), token_for(app, shop), user, pw)
    client = new_client(app)
    assert client.get("/auditor/").status_code == 303
    email, password = _staff(app, "auditor")
    assert _sign_in(client, email, password).status_code == 303
    page = client.get("/auditor/")
    assert page.status_code == 200
    for needle in ('id="audit-log"', 'id="retention"', "RETENTION_DAYS", 'id="consent-stats"'):
        assert needle in page.text
    assert "one merchant · playlist · statistics" in page.text
    # Read-only: the view has no write endpoint but sign-out.
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("auditor.")]
    writes = {r.endpoint for r in rules if "POST" in r.methods}
    assert writes == {"auditor.signin", "auditor.signout"}
    # An auditor's session is not a subscriber's.
    assert client.get("/me/").status_code == 303


@pytest.mark.parametrize("role", ["owner", "staff", "operator"])
def test_other_roles_and_wrong_passwords_are_refused(app, role):
    email, password = _staff(app, role)
    client = new_client(app)
    assert _sign_in(client, email, password).status_code == 401
    assert client.get("/auditor/").status_code == 303
    email, _password = _staff(app, "auditor")
    assert _sign_in(client, email, "wrong-password").status_code == 401
    assert _sign_in(client, "nobody@example.test", "wrong-password").status_code == 401
    assert client.get("/auditor/").status_code == 303


@pytest.mark.parametrize("email", ["\x00", "auditor\x00@example.test"])
def test_an_email_with_nul_is_refused_not_a_crash(app, email):
    # PostgreSQL text cannot hold NUL: the staff lookup failed in the driver (a 500 whose
    # traceback carried the e-mail). Refused before the view, as a JSON 400 like other 4xx here.
    resp = _sign_in(new_client(app), email, "any-password")
    assert resp.status_code == 400 and resp.is_json and resp.get_json()["error"]


def test_sign_in_is_rate_limited_per_account(app):
    # The audit log names every subscriber's disclosures: its password must not be guessable
    # from a botnet, one try per address (the portal's form counts per account, this one did not).
    email, password = _staff(app, "auditor")
    statuses = [
        _sign_in(new_client(app, ip=f"203.0.113.{i + 1}"), email, f"wrong-{i}").status_code
        for i in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2
    # Even the right password is refused while the account is locked.
    assert _sign_in(new_client(app), email, password).status_code == 429
    # Another account, or the same address for someone else, is not locked with it.
    other, other_password = _staff(app, "auditor")
    assert _sign_in(new_client(app, ip="203.0.113.1"), other, other_password).status_code == 303
