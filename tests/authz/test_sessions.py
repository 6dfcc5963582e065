"""One browser, two people: the auditor's and the subscriber's sign-ins share one cookie, so each
sign-in must end the other's session, or whoever signs in second inherits the first's rights."""

from __future__ import annotations

import pytest

from tests.authz.conftest import World, auditor_login, csrf_of
from tests.store_server.optin.helpers import make_account

pytestmark = pytest.mark.authz


def _subscriber_signs_in(client, world: World, via: str) -> None:  # type: ignore[no-untyped-def]
    # An account of its own: sign-ins are rate limited per username.
    username, password = make_account(world.app, "Next customer")
    page = "/me/signin" if via == "me" else f"/optin/{world.optin_token}"
    action = "/me/signin" if via == "me" else f"/optin/{world.optin_token}/signin"
    form = {
        "csrf_token": csrf_of(client.get(page).text),
        "username": username,
        "password": password,
    }
    assert client.post(action, data=form).status_code == 303


@pytest.mark.parametrize("via", ["me", "optin"])
def test_a_subscriber_signing_in_after_the_auditor_does_not_get_the_audit_log(
    authz_app, world: World, via: str
):
    client = world.principals["anon"].client(authz_app)
    auditor_login(client, *world.principals["auditor"].credentials)
    assert client.get("/auditor/").status_code == 200
    _subscriber_signs_in(client, world, via)
    assert client.get("/me/").status_code == 200
    audit = client.get("/auditor/")
    assert audit.status_code == 303
    assert audit.headers["Location"].endswith("/auditor/signin")


def test_the_auditor_signing_in_after_a_subscriber_does_not_get_their_space(
    authz_app, world: World
):
    client = world.principals["anon"].client(authz_app)
    _subscriber_signs_in(client, world, "me")
    assert client.get("/me/").status_code == 200
    auditor_login(client, *world.principals["auditor"].credentials)
    assert client.get("/auditor/").status_code == 200
    assert client.get("/me/").status_code == 303
