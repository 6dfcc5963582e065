"""Portal pages: venues, live presence, opt-in QR, devices and scanners, setup, reports."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from shapely.geometry import mapping
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from merchant_portal import geo, rules, survey
from merchant_portal import reports as stored
from merchant_portal.auth import (
    current_staff,
    login_required,
    own_device,
    own_scanner,
    own_venue,
    owner_required,
)
from merchant_portal.blueprint import bp, t
from merchant_portal.health import SILENT_AFTER_S, scanner_status
from merchant_portal.pairing import TTL_S, PairingCodes, grouped
from merchant_portal.qr import optin_link, qr_svg
from store_server import devices as store_devices
from store_server import outbox, services
from store_server.config import REPO
from store_server.db import get_db
from store_server.drift_report import from_sample, needs_resurvey
from store_server.drift_report import sample as drift_sample
from store_server.models import Device, Merchant, Scanner, Venue, utcnow
from store_server.occupancy import present
from store_server.push import current_queues, refresh_queues
from store_server.push import skip as push_skip
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology

# The shared home-area polygons, where CI and the dev box lay them out beside the checkout.
DEFAULT_AREAS = REPO.parent / "shared" / "data" / "geo" / "paris-petite-couronne.geojson"
PAGE = re.compile(r"[0-9]{1,6}")


def pairing_codes() -> PairingCodes:
    """This app's pairing codes."""
    return current_app.extensions["cm_portal_pairing"]


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """The merchant's venues, each with its screens."""
    venues = get_db().scalars(
        select(Venue).where(Venue.merchant_id == current_staff().merchant_id).order_by(Venue.id)  # type: ignore[union-attr]
    )
    return render_template("index.html", venues=list(venues))


@bp.get("/venues/<int:venue_id>/live")
@login_required
def live(venue_id: int) -> ResponseReturnValue:
    """Who is present now, kept current over Socket.IO."""
    venue = own_venue(venue_id)
    people = present(current_app, venue.id)
    queues = current_queues(current_app, venue.id)
    return render_template(
        "live.html", venue=venue, people=people, queues=queues, server_now=time.time()
    )


@bp.post("/venues/<int:venue_id>/skip")
@login_required
def skip(venue_id: int) -> ResponseReturnValue:
    """Skip the track a zone plays now, this once (a veto removes it for good)."""
    venue = own_venue(venue_id)
    body = request.get_json(silent=True)
    zone = body.get("zone") if isinstance(body, dict) else None
    track = body.get("track") if isinstance(body, dict) else None
    zones = {z.name for z in venue.zones}
    if not isinstance(zone, str) or zone not in zones:
        return jsonify({"error": t("live_bad_skip")}), 400
    if not isinstance(track, str) or not rules.TRACK_ID.match(track):
        return jsonify({"error": t("live_bad_skip")}), 400
    return jsonify({"ok": True, "devices": push_skip(current_app, venue.id, zone, track)})


@bp.post("/venues/<int:venue_id>/veto")
@login_required
def veto(venue_id: int) -> ResponseReturnValue:
    """Veto a track from the live page: it leaves every queue of the merchant at once."""
    venue = own_venue(venue_id)
    body = request.get_json(silent=True)
    track = body.get("track") if isinstance(body, dict) else None
    if not isinstance(track, str) or not rules.TRACK_ID.match(track):
        return jsonify({"error": t("rules_bad_track", track=str(track)[:80])}), 400
    merchant = get_db().get(Merchant, venue.merchant_id)
    vetoes = list((merchant.rules or {}).get("veto", []))
    if track not in vetoes:
        if len(vetoes) >= rules.MAX_VETOES:
            return jsonify({"error": t("rules_too_many", n=rules.MAX_VETOES)}), 400
        merchant.rules = rules.merged(merchant.rules, {"veto": [*vetoes, track]})
        get_db().commit()
    # Every venue of the merchant plays under the same rules: each hears the new queues now.
    for v in get_db().scalars(select(Venue).where(Venue.merchant_id == venue.merchant_id)):
        refresh_queues(current_app, v.id)
    return jsonify({"ok": True, "veto": track})


@bp.get("/venues/<int:venue_id>/present.json")
@login_required
def present_json(venue_id: int) -> ResponseReturnValue:
    """The same list as JSON, for the live page to resynchronise after a reconnect."""
    venue = own_venue(venue_id)
    return jsonify({"now": time.time(), "present": present(current_app, venue.id)})


@bp.get("/venues/<int:venue_id>/qr")
@login_required
def qr(venue_id: int) -> ResponseReturnValue:
    """Full-screen opt-in QR with the promise in plain words."""
    venue = own_venue(venue_id)
    link = optin_link(current_app, venue.merchant_id, venue.id)
    # A fresh code well before this one expires, so whoever scans it has most of a link's
    # lifetime left to sign in and choose (15 minutes of the default hour).
    max_age = int(current_app.config.get("OPTIN_LINK_MAX_AGE_S", 3600))
    refresh_s = max(1, min(900, max_age // 4))
    return render_template("qr.html", venue=venue, link=link, svg=qr_svg(link), refresh_s=refresh_s)


def _scanner_health(venue_id: int, scanners: list[Scanner]) -> list[dict[str, Any]]:
    r, keys, now = get_redis(), get_keys(), time.time()
    pipe = r.pipeline(transaction=False)
    for s in scanners:
        pipe.hgetall(keys.scanner_health(s.id))
    drift_sample(pipe, keys, venue_id)
    *healths, read = pipe.execute()
    drifts = from_sample(read)
    rows = []
    for s, h in zip(scanners, healths, strict=True):
        db, n = drifts.get(s.name, (None, 0))
        rows.append(
            {
                "scanner": s,
                **scanner_status(h, now),
                "drift_db": None if db is None else f"{db:+.1f}",
                "drift_n": n,
                "resurvey": db is not None and needs_resurvey(db, n),
            }
        )
    return rows


def _devices_page(venue: Venue, status: int = 200, **shown: Any) -> ResponseReturnValue:
    g.page_url = url_for("portal.devices", venue_id=venue.id)  # also rendered by POSTs
    db = get_db()
    devices = list(
        db.scalars(select(Device).where(Device.venue_id == venue.id).order_by(Device.id))
    )
    zones = {z.id: z.name for z in venue.zones}
    scanners = list(
        db.scalars(select(Scanner).where(Scanner.venue_id == venue.id).order_by(Scanner.name))
    )
    merchant = db.get(Merchant, venue.merchant_id)
    return render_template(
        "devices.html",
        venue=venue,
        rules=shown.pop("rules", None) or merchant.rules or {},
        devices=devices,
        zones=zones,
        health=_scanner_health(venue.id, scanners),
        # Whichever worker holds the socket: with two behind nginx, half the page loads asked
        # the other one and showed a connected device offline.
        online=store_devices.online(current_app, [d.id for d in devices]),
        silent_after=int(SILENT_AFTER_S),
        is_owner=current_staff().role == "owner",  # type: ignore[union-attr]
        **shown,
    ), status


@bp.get("/venues/<int:venue_id>/devices")
@login_required
def devices(venue_id: int) -> ResponseReturnValue:
    """Playback devices and scanner health of a venue."""
    return _devices_page(own_venue(venue_id))


def drop_device_sockets(device_ids: set[int]) -> None:
    """Disconnect these devices' live sockets now, on every worker."""
    # A revoked or re-keyed device must stop at once, not at its next reconnect.
    store_devices.drop_sockets(current_app, device_ids)


@bp.post("/devices/<int:device_id>/pair")
@owner_required
def pair(device_id: int) -> ResponseReturnValue:
    """Show a short single-use code to type on the device."""
    device = own_device(device_id)
    code = pairing_codes().issue(device.id)
    return _devices_page(
        get_db().get(Venue, device.venue_id),
        pair_code=grouped(code),
        pair_device=device,
        pair_minutes=int(TTL_S // 60),
        device_url=url_for("portal.device_page", _external=True),
    )


@bp.post("/devices/<int:device_id>/rotate")
@owner_required
def rotate(device_id: int) -> ResponseReturnValue:
    """Issue a new token (shown once); the old one stops working now."""
    device = own_device(device_id)
    revoked = device.revoked_at is not None
    token = services.issue_device_token(device)
    get_db().commit()
    if revoked:
        _forget_while_revoked(device.id)
    pairing_codes().cancel(device.id)
    get_topology(current_app).invalidate()
    drop_device_sockets({device.id})
    return _devices_page(get_db().get(Venue, device.venue_id), token=token, token_device=device)


def _forget_while_revoked(device_id: int) -> None:
    """Empty a revoked device's outbox as it is paired again."""
    # Another worker's topology cache may list a revoked device for a few seconds more and
    # queue pushes for it after the revoke emptied its outbox: they were never its to receive.
    outbox.clear(get_redis(current_app), get_keys(current_app), [device_id])


@bp.post("/devices/<int:device_id>/revoke")
@owner_required
def revoke(device_id: int) -> ResponseReturnValue:
    """Revoke a device: its token dies and it is disconnected."""
    device = own_device(device_id)
    device.revoked_at = utcnow()
    device.token_hash = None
    get_db().commit()
    # A code shown before the revoke would otherwise pair it again, revoke undone.
    pairing_codes().cancel(device.id)
    get_topology(current_app).invalidate()
    drop_device_sockets({device.id})
    # What it had not fetched yet is no longer its to receive.
    outbox.clear(get_redis(current_app), get_keys(current_app), [device.id])
    flash(t("revoked_done", device=device.name))
    return redirect(url_for("portal.devices", venue_id=device.venue_id))


@bp.post("/venues/<int:venue_id>/rules")
@owner_required
def save_rules(venue_id: int) -> ResponseReturnValue:
    """Save the merchant's playback rules (they apply to every venue of the merchant)."""
    venue = own_venue(venue_id)
    try:
        update = rules.parse_form(request.form)
    except rules.RulesError as e:
        typed = {
            "explicit": request.form.get("explicit") == "on",
            "volume_max": request.form.get("volume_max", ""),
            "veto": request.form.get("veto", ""),
        }
        return _devices_page(venue, 400, rules_error=t(e.key, **e.values), rules=typed)
    merchant = get_db().get(Merchant, venue.merchant_id)
    merchant.rules = rules.merged(merchant.rules, update)
    get_db().commit()
    flash(t("rules_saved"))
    return redirect(url_for("portal.devices", venue_id=venue.id))


@bp.get("/device")
def device_page() -> ResponseReturnValue:
    """The tablet page of a playback device (it signs in with its own token, not a session)."""
    return render_template("device.html")


@bp.post("/device/pair")
def device_pair() -> ResponseReturnValue:
    """Redeem a pairing code for a device token."""
    body = request.get_json(silent=True)
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or len(code) > 32:
        return jsonify({"error": t("device_pair_failed")}), 400
    throttle = current_app.extensions["cm_portal_pair_throttle"]
    who = request.remote_addr or "?"
    if throttle.blocked(who):
        return jsonify({"error": t("login_throttled")}), 429
    device_id = pairing_codes().redeem(code)
    db = get_db()
    device = db.get(Device, device_id) if device_id is not None else None
    venue = db.get(Venue, device.venue_id) if device is not None else None
    merchant = db.get(Merchant, venue.merchant_id) if venue is not None else None
    if device is None or merchant is None or merchant.status != "active":
        # A suspended merchant's devices are cut off: a code shown before must not reconnect one.
        throttle.fail(who)
        return jsonify({"error": t("device_pair_failed")}), 404
    revoked = device.revoked_at is not None
    token = services.issue_device_token(device)
    db.commit()
    if revoked:
        _forget_while_revoked(device.id)
    get_topology(current_app).invalidate()
    drop_device_sockets({device.id})
    return jsonify({"token": token, "device": device.name})


def _setup_page(venue: Venue, status: int = 200, **shown: Any) -> ResponseReturnValue:
    g.page_url = url_for("portal.setup", venue_id=venue.id)  # also rendered by POSTs
    zones = [(z.name, z.kind, z.polygon) for z in sorted(venue.zones, key=lambda z: z.name)]
    scanners = [(s.name, s.x, s.y) for s in sorted(venue.scanners, key=lambda s: s.name)]
    return render_template(
        "setup.html",
        venue=venue,
        plan=geo.plan(zones, scanners),
        scanners=sorted(venue.scanners, key=lambda s: s.name),
        has_zones=bool(zones),
        is_owner=current_staff().role == "owner",  # type: ignore[union-attr]
        **shown,
    ), status


@bp.get("/venues/<int:venue_id>/setup")
@login_required
def setup(venue_id: int) -> ResponseReturnValue:
    """The floor plan: zones and scanners drawn from the venue's metric frame."""
    return _setup_page(own_venue(venue_id))


@bp.post("/venues/<int:venue_id>/zones")
@owner_required
def upload_zones(venue_id: int) -> ResponseReturnValue:
    """Replace the venue's zones with an uploaded GeoJSON FeatureCollection."""
    venue = own_venue(venue_id)
    upload = request.files.get("zones")
    raw = upload.read() if upload else request.form.get("zones_text", "").encode()
    try:
        specs = geo.parse_zones(raw)
    except geo.ZoneError as e:
        return _setup_page(venue, 400, error=t(e.key, **e.values))
    db = get_db()
    existing = {z.name: z for z in venue.zones}
    try:
        for spec in specs:
            zone = existing.pop(spec.name, None)
            if zone is None:
                services.add_zone(db, venue, spec.name, spec.kind, spec.polygon)
            else:
                zone.kind = spec.kind
                zone.polygon = mapping(spec.polygon)
        for gone in existing.values():
            db.delete(gone)
        if venue.calibration:
            # The radio calibration still holds (scanners did not move); only the zones change.
            venue.calibration = {
                **venue.calibration,
                "zones": {spec.name: mapping(spec.polygon) for spec in specs},
            }
        db.commit()
    except (IntegrityError, ValueError) as e:
        db.rollback()
        return _setup_page(venue, 400, error=t("geo_db", why=type(e).__name__))
    get_topology(current_app).invalidate()
    db.expire(venue)
    flash(t("setup_saved", n=len(specs)))
    return redirect(url_for("portal.setup", venue_id=venue.id))


@bp.post("/venues/<int:venue_id>/survey")
@owner_required
def upload_survey(venue_id: int) -> ResponseReturnValue:
    """Score a site survey per zone; apply it as the venue's calibration if asked."""
    venue = own_venue(venue_id)
    upload = request.files.get("survey")
    if upload is None or not upload.filename:
        return _setup_page(venue, 400, survey_error=t("survey_empty"))
    try:
        rows = survey.read_survey(upload.read(), Path(upload.filename).name)
        report, model = survey.assess(venue, rows)
    except survey.SurveyError as e:
        return _setup_page(venue, 400, survey_error=t(e.key, **e.values))
    applied = request.form.get("apply") == "on"
    if applied:
        venue.calibration = model.to_json()
        get_db().commit()
        get_topology(current_app).invalidate()
    return _setup_page(venue, survey_report=report, survey_applied=applied)


@bp.post("/scanners/<int:scanner_id>/place")
@owner_required
def place_scanner(scanner_id: int) -> ResponseReturnValue:
    """Move a scanner to a position in the venue's frame."""
    scanner = own_scanner(scanner_id)
    try:
        x, y = float(request.form["x"]), float(request.form["y"])
    except (KeyError, ValueError):
        abort(400)
    if not (abs(x) < geo.MAX_PLAN_M and abs(y) < geo.MAX_PLAN_M):
        abort(400)
    scanner.x, scanner.y = x, y
    venue = get_db().get(Venue, scanner.venue_id)
    if venue.calibration and (scanner.x, scanner.y) != tuple(
        venue.calibration["scanners"].get(scanner.name, (x, y))
    ):
        # A radio map measured with the scanner elsewhere would mislead: survey again.
        venue.calibration = None
    get_db().commit()
    get_topology(current_app).invalidate()
    flash(t("setup_scanner_saved", scanner=scanner.name, x=x, y=y))
    return redirect(url_for("portal.setup", venue_id=scanner.venue_id))


def _areas_file() -> str | None:
    configured = current_app.config.get("PORTAL_AREAS_GEOJSON")
    return configured or (str(DEFAULT_AREAS) if DEFAULT_AREAS.is_file() else None)


@bp.get("/reports")
@login_required
def reports() -> ResponseReturnValue:
    """The merchant's stored catchment and taste reports, newest first, a page at a time."""
    raw = request.args.get("page", "1")
    # ASCII digits only: "²".isdigit() is true and int("²") raises (rules.VOLUME likewise).
    if not PAGE.fullmatch(raw) or not 1 <= int(raw) <= 100_000:
        abort(404)
    page = int(raw)
    bundles, pages = stored.load_reports(get_db(), current_staff().merchant_id, page)
    if page > pages:
        abort(404)
    shown = []
    for bundle in bundles:
        catchment = bundle.get("catchment")
        shown.append(
            {
                "bundle": bundle,
                "guarantees": stored.guarantees_in_words(bundle["guarantees"]),
                "suppression": stored.suppression_in_words(bundle),
                "map": stored.catchment_map(catchment, _areas_file()),
                "share": round(100 * ((catchment or {}).get("share") or 0)),
            }
        )
    return render_template("reports.html", reports=shown, page=page, pages=pages)


@bp.get("/reports/<week>.csv")
@login_required
def report_csv(week: str) -> ResponseReturnValue:
    """One week's taste rows as CSV, found by its Monday however old the report is."""
    bundle = stored.load_report(get_db(), current_staff().merchant_id, week)
    if bundle is None:
        abort(404)
    return Response(
        stored.taste_csv(bundle),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=taste-{bundle['id']}.csv"},
    )
