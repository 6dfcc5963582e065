"""Venue setup: zones uploaded as GeoJSON (validated, with clear messages), drawn as SVG with y
flipped for the screen, and scanners placed."""

from __future__ import annotations

import io
import json
import re

import pytest
from sqlalchemy import select

from merchant_portal.geo import ZoneError, parse_zones, plan
from store_server.db import sessions
from store_server.models import Device, Scanner, Zone
from tests.merchant_portal.conftest import csrf_of


def feature(name, coords, kind="area", **extra):
    """A GeoJSON Feature with a Polygon ring."""
    props = {"name": name, "kind": kind} if name is not None else {"kind": kind}
    return {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        **extra,
    }


def collection(*features):
    """A FeatureCollection as bytes."""
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


SQUARE = [[0, 0], [4, 0], [4, 3], [0, 3], [0, 0]]
BOWTIE = [[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]


def upload(client, venue_id: int, raw: bytes, lang: str = "en"):  # type: ignore[no-untyped-def]
    """Send a zones file through the setup form."""
    page = client.get(f"/portal/venues/{venue_id}/setup?lang={lang}").get_data(as_text=True)
    return client.post(
        f"/portal/venues/{venue_id}/zones",
        data={"csrf_token": csrf_of(page), "zones": (io.BytesIO(raw), "zones.geojson")},
        content_type="multipart/form-data",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "The file is not valid JSON."),
        (json.dumps({"type": "Feature"}).encode(), "must be a GeoJSON FeatureCollection"),
        (collection(), "has no features"),
        (collection(feature(None, SQUARE)), "Feature 1 needs a &#34;name&#34; property"),
        (
            collection(feature("a", SQUARE), feature("a", SQUARE)),
            "Feature 2: the name &#34;a&#34; is used twice",
        ),
        (collection(feature("a", SQUARE, kind="sofa")), "kind must be one of chair, cabin, area"),
        (
            collection(
                {
                    "type": "Feature",
                    "properties": {"name": "p"},
                    "geometry": {"type": "Point", "coordinates": [1, 2]},
                }
            ),
            "Zone &#34;p&#34; (feature 1) must be a Polygon",
        ),
        (collection(feature("x", [[0, 0], [1, 1]])), "Zone &#34;x&#34; (feature 1) has"),
        (collection(feature("bow", BOWTIE)), "is not a valid polygon: Self-intersection"),
        # Once 500s: a NaN corner (GEOS raised), a nesting past Python's recursion limit.
        (
            collection(feature("nan", [[0, 0], [float("nan"), 0], [1, 1], [0, 0]])),
            "Zone &#34;nan&#34; (feature 1) has unreadable coordinates.",
        ),
        (b"[" * 60000 + b"]" * 60000, "The file is not valid JSON."),
        # Once stored: degrees read as metres, or a typo, left positioning no grid to build.
        (
            collection(feature("far", [[0, 0], [1e200, 0], [1e200, 1], [0, 0]])),
            "Zone &#34;far&#34; (feature 1) reaches 10000 m or more from the plan&#39;s origin",
        ),
        (collection(feature("a\x00b", SQUARE)), "Feature 1 needs a &#34;name&#34; property"),
    ],
)
def test_bad_uploads_are_refused_with_a_clear_message(salon, world, raw, message):
    resp = upload(salon, world.annex_venue, raw)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)


def test_messages_are_translated(salon, world):
    resp = upload(salon, world.annex_venue, collection(feature("bow", BOWTIE)), lang="fr")
    assert "n&#39;est pas un polygone valide" in resp.get_data(as_text=True)


def test_upload_replaces_zones_keeping_devices_of_kept_zones(salon, world, portal_app):
    raw = collection(
        feature("bac", [[0, 0], [5, 0], [5, 3], [0, 3], [0, 0]], kind="area"),
        feature("fauteuil", [[6, 0], [8, 0], [8, 2], [6, 2], [6, 0]], kind="chair"),
    )
    resp = upload(salon, world.annex_venue, raw)
    assert resp.status_code == 302
    page = salon.get(resp.headers["Location"]).get_data(as_text=True)
    assert "2 zones saved." in page
    assert set(re.findall(r'data-zone="([^"]+)"', page)) == {"bac", "fauteuil"}
    with sessions(portal_app)() as db:
        zones = {
            z.name: z for z in db.scalars(select(Zone).where(Zone.venue_id == world.annex_venue))
        }
        assert set(zones) == {"bac", "fauteuil"}
        assert zones["bac"].polygon["coordinates"][0][1] == [5.0, 0.0]
        assert zones["fauteuil"].kind == "chair" and zones["fauteuil"].max_radius_m == 2.0
        speaker = db.get(Device, world.devices["annex-speaker"])
        assert speaker.zone_id == zones["bac"].id


def test_only_owners_change_the_setup(salon_staff, world):
    resp = upload(salon_staff, world.annex_venue, collection(feature("a", SQUARE)))
    assert resp.status_code == 403


def test_placing_a_scanner_moves_it_on_the_plan(salon, world, portal_app):
    scanner = world.scanners["annex-scanner"]
    page = salon.get(f"/portal/venues/{world.annex_venue}/setup").get_data(as_text=True)
    resp = salon.post(
        f"/portal/scanners/{scanner}/place",
        data={"csrf_token": csrf_of(page), "x": "3.25", "y": "0.5"},
    )
    assert resp.status_code == 302
    with sessions(portal_app)() as db:
        s = db.get(Scanner, scanner)
        assert (s.x, s.y) == (3.25, 0.5)
    bad = salon.post(
        f"/portal/scanners/{scanner}/place",
        data={"csrf_token": csrf_of(page), "x": "nan-ish", "y": "0.5"},
    )
    assert bad.status_code == 400


def test_plan_flips_y_for_the_screen():
    drawn = plan(
        [("chair", "chair", {"type": "Polygon", "coordinates": [SQUARE]})], [("s1", 2.0, 2.5)]
    )
    assert drawn["view_box"] == "0 0 5.0 4.0"
    # Metric y=3 (top of the room) is near the top of the screen, y=0 near the bottom.
    assert drawn["zones"][0]["d"] == "M0.5 3.5 L4.5 3.5 L4.5 0.5 L0.5 0.5 L0.5 3.5 Z"
    assert (drawn["scanners"][0]["cx"], drawn["scanners"][0]["cy"]) == (2.5, 1.0)


def test_parse_zones_returns_shapes():
    specs = parse_zones(collection(feature("a", SQUARE, kind="cabin")))
    assert [(s.name, s.kind, s.polygon.area) for s in specs] == [("a", "cabin", 12.0)]
    with pytest.raises(ZoneError) as e:
        parse_zones(collection(feature("a", [[0, 0], [0, 0], [0, 0], [0, 0]])))
    assert e.value.key == "geo_invalid" and "Too few points" in e.value.values["why"]
