"""Site survey upload: scored per zone by positioning's leave-one-track-out report, applied as the
venue's calibration only when asked, with clear refusals for files that cannot be used."""

from __future__ import annotations

import io
import re

import pytest

from store_server import services
from store_server.db import sessions
from store_server.models import Merchant, Venue
from store_server.positioning import simulate
from store_server.topology import get_topology
from tests.merchant_portal.conftest import csrf_of


@pytest.fixture(scope="module")
def flat(portal_app, world):  # type: ignore[no-untyped-def]
    """The positioning package's synthetic flat as a venue of the salon, and a survey of it."""
    venue_model = simulate.flat()
    with sessions(portal_app)() as db:
        salon = db.query(Merchant).filter_by(slug="salon-meche").one()
        v = services.create_venue(db, salon, "Appartement témoin", "site")
        for name, geom in venue_model.zones.items():
            services.add_zone(db, v, name, "area", geom)
        for name, (x, y) in venue_model.scanners.items():
            services.add_scanner(db, portal_app.config["DATA_KEY"], v, f"flat-{name}", x, y)
        db.commit()
        venue_id = v.id
    survey = venue_model.readings(simulate.survey_path())
    survey["scanner"] = "flat-" + survey["scanner"]
    return venue_id, survey.to_csv(index=False).encode()


def send(client, venue_id: int, raw: bytes, apply: bool = False):  # type: ignore[no-untyped-def]
    """Upload a survey through the setup form."""
    page = client.get(f"/portal/venues/{venue_id}/setup").get_data(as_text=True)
    data = {"csrf_token": csrf_of(page), "survey": (io.BytesIO(raw), "walk.csv")}
    if apply:
        data["apply"] = "on"
    return client.post(
        f"/portal/venues/{venue_id}/survey", data=data, content_type="multipart/form-data"
    )


def test_survey_is_scored_per_zone_without_changing_anything(salon, flat, portal_app):
    venue_id, raw = flat
    resp = send(salon, venue_id, raw)
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    scores = dict(
        re.findall(r'data-survey-zone="(\w+)"><td>\w+</td><td class="accuracy">(\d+) %', page)
    )
    assert set(scores) == {"kitchen", "bedroom", "bath", "living"}
    assert all(50 <= int(v) <= 100 for v in scores.values()), scores
    # Where the survey went, per zone, and where the installer should walk next.
    covered = re.findall(
        r'data-survey-zone="(\w+)">.*?class="covered[^"]*">(\d+) %</td><td class="gap">'
        r"([\d.]+) m, at \(([-\d.]+), ([-\d.]+)\)",
        page,
    )
    assert {name for name, *_ in covered} == set(scores), covered
    assert all(0 <= int(share) <= 100 and float(gap) >= 0 for _, share, gap, _x, _y in covered)
    assert "Furthest from the walk" in page and 'id="survey-coverage-help"' in page
    assert "Not applied" in page and "Not calibrated yet" in page
    with sessions(portal_app)() as db:
        assert db.get(Venue, venue_id).calibration is None


def test_applied_survey_becomes_the_live_calibration(salon, flat, portal_app):
    venue_id, raw = flat
    page = send(salon, venue_id, raw, apply=True).get_data(as_text=True)
    assert "Calibration applied" in page and "Calibrated from a site survey." in page
    with sessions(portal_app)() as db:
        cal = db.get(Venue, venue_id).calibration
    assert set(cal["scanners"]) == {f"flat-{n}" for n in simulate.flat().scanners}
    assert cal["calibration"]["pathloss"]
    # Ingest sees it at once: the topology cache was told.
    assert get_topology(portal_app).venue(venue_id).model.calibration == cal["calibration"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"ts,scanner,emitter,rssi\n1,flat-bath,e1,-60\n", "walk.csv: missing column(s) x, y"),
        (b"ts,scanner,emitter,rssi,x,y\n", "Choose a survey file with at least one reading."),
        (
            b"ts,scanner,emitter,rssi,x,y\n1,ghost,e1,-60,1,1\n",
            "scanners this venue does not have: ghost",
        ),
        (b"ts,scanner,emitter,rssi,x,y\n1,flat-bath,e1,loud,1,1\n", "must be numbers"),
    ],
)
def test_unusable_surveys_are_refused_clearly(salon, flat, raw, message):
    resp = send(salon, flat[0], raw)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)


def test_only_owners_upload_surveys(salon_staff, flat):
    assert send(salon_staff, flat[0], flat[1]).status_code == 403


def test_moving_a_scanner_drops_a_calibration_measured_elsewhere(salon, flat, portal_app, world):
    venue_id, raw = flat
    send(salon, venue_id, raw, apply=True)
    with sessions(portal_app)() as db:
        scanner = next(s for s in db.get(Venue, venue_id).scanners if s.name == "flat-bath")
        scanner_id, x, y = scanner.id, scanner.x, scanner.y
    page = salon.get(f"/portal/venues/{venue_id}/setup").get_data(as_text=True)
    place = f"/portal/scanners/{scanner_id}/place"
    salon.post(place, data={"csrf_token": csrf_of(page), "x": str(x), "y": str(y)})
    with sessions(portal_app)() as db:
        assert db.get(Venue, venue_id).calibration is not None  # same place: still valid
    salon.post(place, data={"csrf_token": csrf_of(page), "x": "6.0", "y": "2.0"})
    with sessions(portal_app)() as db:
        assert db.get(Venue, venue_id).calibration is None
