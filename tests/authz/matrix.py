"""The authorisation matrix: every HTTP route and Socket.IO event × every role × the expected
outcome, as ONE table. `test_matrix.py` fails when the app grows a route or event without a row
here, and runs every cell with real credentials.

Roles (columns):
  anon      nobody: no cookie, no signature, no token
  scanner   a scanner of merchant A: every request HMAC-signed with its secret
  device    a paired playback device of merchant A: its bearer token (HTTP header, socket auth)
  owner     staff of merchant A, role owner (signed in to the portal)
  staff     staff of merchant A, role staff (not owner)
  rival     staff of merchant B, role owner, asking for merchant A's resources
  suspended staff of merchant C, role owner, signed in; then the operator suspended C
  operator  the programme operator (portal session)
  auditor   the data-protection auditor (auditor session, and a portal session: the portal's
            sign-in form accepts any staff account)
  sub       a subscriber who opted in at merchant A (the owner of the consents addressed)
  sub2      another subscriber, with consents of their own, asking for sub's
  scraper   the Prometheus scraper: the METRICS_TOKEN bearer token

Outcomes (cells):
  ok        2xx, or a redirect to anything but a sign-in page (socket: connected and answered ok)
  login     a redirect to a sign-in page (portal, subscriber, auditor or opt-in landing); the
            portal's JSON endpoints (the live page's poll, skip, veto) answer 401 instead
  401 403 404 ...   that status
  refused   Socket.IO: the namespace connection is refused, so no event can be sent

Every path parameter names a real object of merchant A or subscriber A (merchant B and
subscriber B have objects of their own), so `rival` and `sub2` ask for ids that exist: 404 there
means tenancy hides the object, not that it is missing. Routes whose success itself lands on a
sign-in page (sign-out, invitation accepted) read `login` for everyone.
"""

# ruff: noqa: E501 - the tables are read across, one row per route or event, one column per role

from __future__ import annotations

ROLES = (
    "anon",
    "scanner",
    "device",
    "owner",
    "staff",
    "rival",
    "suspended",
    "operator",
    "auditor",
    "sub",
    "sub2",
    "scraper",
)

# One row per (method, Flask rule). Columns in the order of ROLES.
HTTP_TABLE = """
method route                                               anon  scanner device owner staff rival suspended operator auditor sub   sub2  scraper
GET    /healthz                                            ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /readyz                                             ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /openapi.json                                       ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /metrics                                            401   401     401    401   401   401   401       401      401     401   401   ok
GET    /static/<path:filename>                             404   404     404    404   404   404   404       404      404     404   404   404
GET    /socket.io/                                         400   400     400    400   400   400   400       400      400     400   400   400
POST   /socket.io/                                         400   400     400    400   400   400   400       400      400     400   400   400
POST   /api/v1/sightings                                   401   ok      401    401   401   401   401       401      401     401   401   401
POST   /api/v1/heartbeat                                   401   ok      401    401   401   401   401       401      401     401   401   401
GET    /auditor/                                           login login   login  login login login login     login    ok      login login login
GET    /auditor/signin                                     ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /auditor/signin                                     401   401     401    401   401   401   401       401      ok      401   401   401
POST   /auditor/signout                                    login login   login  login login login login     login    login   login login login
GET    /me/                                                login login   login  login login login login     login    login   ok    ok    login
GET    /me/signin                                          ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /me/signin                                          401   401     401    401   401   401   401       401      401     ok    ok    401
POST   /me/signout                                         login login   login  login login login login     login    login   login login login
POST   /me/consents/<int:consent_id>/withdraw              login login   login  login login login login     login    login   ok    404   login
POST   /me/withdraw-all                                    login login   login  login login login login     login    login   ok    ok    login
GET    /me/disclosures                                     login login   login  login login login login     login    login   ok    ok    login
GET    /me/export.json                                     login login   login  login login login login     login    login   ok    ok    login
POST   /me/home-area                                       login login   login  login login login login     login    login   ok    ok    login
POST   /me/emitter/replace                                 login login   login  login login login login     login    login   ok    ok    login
POST   /me/emitter/revoke                                  login login   login  login login login login     login    login   ok    ok    login
POST   /me/erase                                           login login   login  login login login login     login    login   ok    ok    login
GET    /optin/<token>                                      ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /optin/<token>/qr.<kind>                            ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /optin/<token>/signin                               401   401     401    401   401   401   401       401      401     ok    ok    401
GET    /optin/<token>/consent                              login login   login  login login login login     login    login   ok    ok    login
POST   /optin/<token>/consent                              login login   login  login login login login     login    login   ok    ok    login
GET    /optin/receipts/<receipt_id>                        404   404     404    404   404   404   404       404      404     ok    404   404
GET    /optin/receipts/<receipt_id>.json                   404   404     404    404   404   404   404       404      404     ok    404   404
GET    /optin/receipts/key                                 ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /optin/verify                                       ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /optin/verify                                       ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /optin/static/<path:filename>                       ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /portal/login                                       ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /portal/login                                       401   401     401    ok    ok    ok    ok        ok       ok      401   401   401
POST   /portal/logout                                      login login   login  login login login login     login    login   login login login
GET    /portal/invite/<token>                              ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /portal/invite/<token>                              login login   login  login login login login     login    login   login login login
GET    /portal/device                                      ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
POST   /portal/device/pair                                 ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /portal/static/<path:filename>                      ok    ok      ok     ok    ok    ok    ok        ok       ok      ok    ok    ok
GET    /portal/                                            login login   login  ok    ok    ok    403       403      403     login login login
GET    /portal/reports                                     login login   login  ok    ok    ok    403       403      403     login login login
GET    /portal/reports/<week>.csv                          login login   login  ok    ok    404   403       403      403     login login login
GET    /portal/venues/<int:venue_id>/live                  login login   login  ok    ok    404   403       403      403     login login login
GET    /portal/venues/<int:venue_id>/present.json          401   401     401    ok    ok    404   403       403      403     401   401   401
GET    /portal/venues/<int:venue_id>/qr                    login login   login  ok    ok    404   403       403      403     login login login
GET    /portal/venues/<int:venue_id>/devices               login login   login  ok    ok    404   403       403      403     login login login
GET    /portal/venues/<int:venue_id>/setup                 login login   login  ok    ok    404   403       403      403     login login login
POST   /portal/venues/<int:venue_id>/skip                  401   401     401    ok    ok    404   403       403      403     401   401   401
POST   /portal/venues/<int:venue_id>/veto                  401   401     401    ok    ok    404   403       403      403     401   401   401
POST   /portal/venues/<int:venue_id>/rules                 login login   login  ok    403   404   403       403      403     login login login
POST   /portal/venues/<int:venue_id>/zones                 login login   login  ok    403   404   403       403      403     login login login
POST   /portal/venues/<int:venue_id>/survey                login login   login  ok    403   404   403       403      403     login login login
POST   /portal/scanners/<int:scanner_id>/place             login login   login  ok    403   404   403       403      403     login login login
POST   /portal/devices/<int:device_id>/pair                login login   login  ok    403   404   403       403      403     login login login
POST   /portal/devices/<int:device_id>/rotate              login login   login  ok    403   404   403       403      403     login login login
POST   /portal/devices/<int:device_id>/revoke              login login   login  ok    403   404   403       403      403     login login login
GET    /portal/operator                                    login login   login  403   403   403   403       ok       403     login login login
POST   /portal/operator/merchants                          login login   login  403   403   403   403       ok       403     login login login
POST   /portal/operator/merchants/<int:merchant_id>/status login login   login  403   403   403   403       ok       403     login login login
"""

# One row per (namespace, event handler). The connection is made with the role's credentials:
# device token or scanner secret as `token`, portal session cookie, and merchant A's venue.
SOCKET_TABLE = """
namespace event        anon    scanner device  owner   staff   rival   suspended operator auditor sub     sub2    scraper
/device   connect      refused refused ok      refused refused refused refused   refused  refused refused refused refused
/device   ack          refused refused ok      refused refused refused refused   refused  refused refused refused refused
/device   rotate_token refused refused ok      refused refused refused refused   refused  refused refused refused refused
/device   disconnect   refused refused ok      refused refused refused refused   refused  refused refused refused refused
/portal   connect      refused refused refused ok      ok      refused refused   refused  refused refused refused refused
/portal   disconnect   refused refused refused ok      ok      refused refused   refused  refused refused refused refused
"""

OUTCOMES = {"ok", "login", "refused", "400", "401", "403", "404", "409", "410", "429"}


def parse(table: str) -> dict[tuple[str, str], dict[str, str]]:
    """The table as {(first column, second column): {role: outcome}}; ValueError if malformed."""
    lines = [line.split() for line in table.strip().splitlines() if line.strip()]
    header, rows = lines[0], lines[1:]
    if tuple(header[2:]) != ROLES:
        raise ValueError(f"columns must be {ROLES}, not {header[2:]}")
    out: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        if len(row) != 2 + len(ROLES):
            raise ValueError(f"row {row[:2]} has {len(row) - 2} cells, expected {len(ROLES)}")
        key = (row[0], row[1])
        if key in out:
            raise ValueError(f"row {key} appears twice")
        bad = set(row[2:]) - OUTCOMES
        if bad:
            raise ValueError(f"row {key} has unknown outcomes {sorted(bad)}")
        out[key] = dict(zip(ROLES, row[2:], strict=True))
    return out


HTTP = parse(HTTP_TABLE)
SOCKET = parse(SOCKET_TABLE)
