"""Portal fixtures: the composed app (store server + portal) on its own fresh stores, the demo
world, a live server with background jobs, signed sighting batches, and a headless Chromium."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import requests
from shapely.geometry import box
from sqlalchemy import select

from analytics.hierarchy import parse_hierarchy
from analytics.models import Report
from analytics.privacy import PrivacyLedger
from analytics.reports import weekly_report
from store_server import jobs, services
from store_server.db import sessions
from store_server.models import Merchant, Venue
from store_server.seed import CAR_LOGIN, SALON_LOGIN, DemoWorld, seed_demo
from tests.conftest import LiveServer, composed_app
from tests.helpers import eid_rows, post_batch

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
MONDAY = pd.Timestamp("2026-11-09")
OPERATOR_LOGIN = ("ops@programme.collective-mood.test", "operator-pass-2026")
SALON_STAFF_LOGIN = ("chair@demo.collective-mood.test", "demo-chair-2026")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class PortalWorld:
    """The seeded demo world plus the ids tests address pages by."""

    demo: DemoWorld
    salon_venue: int
    car_venue: int
    annex_venue: int  # the salon's second venue, which tests may reshape freely
    devices: dict[str, int]
    scanners: dict[str, int]
    annex_scanner_secret: str


@pytest.fixture(scope="session")
def portal_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The composed app (wsgi.build_app) on a fresh migrated database and its own Redis prefix."""
    with composed_app(tmp_path_factory.mktemp("portal")) as app:
        yield app


@pytest.fixture(scope="session")
def world(portal_app: Any) -> PortalWorld:
    """The demo salon and car, a non-owner salon account, and an annex venue to reshape."""
    with sessions(portal_app)() as db:
        demo = seed_demo(db, portal_app.config["DATA_KEY"])
        salon = db.query(Merchant).filter_by(slug="salon-meche").one()
        services.create_staff(db, *SALON_STAFF_LOGIN, "staff", salon)
        services.create_staff(db, *OPERATOR_LOGIN, "operator", None)
        annex = services.create_venue(db, salon, "Salon Mèche Rebelle — Annexe", "site")
        zone = services.add_zone(db, annex, "bac", "area", box(0, 0, 4, 3))
        _s, annex_secret = services.add_scanner(
            db, portal_app.config["DATA_KEY"], annex, "annex-scanner", 2.0, 1.5
        )
        services.add_device(db, annex, zone, "annex-speaker")
        services.add_device(db, annex, zone, "annex-spare")
        db.commit()
        venues = {v.name: v.id for v in db.query(Venue)}
        devices = {d.name: d.id for v in db.query(Venue) for d in _devices(db, v.id)}
        scanners = {s.name: s.id for v in db.query(Venue) for s in v.scanners}
    jobs.refresh_resolver(portal_app)
    return PortalWorld(
        demo,
        venues["Salon Mèche Rebelle — Oberkampf"],
        venues["Berline AB-123-CD"],
        venues["Salon Mèche Rebelle — Annexe"],
        devices,
        scanners,
        annex_secret,
    )


def _devices(db: Any, venue_id: int) -> list[Any]:
    from store_server.models import Device

    return list(db.query(Device).filter_by(venue_id=venue_id))


@pytest.fixture(scope="session")
def portal_server(portal_app: Any, world: PortalWorld) -> Iterator[LiveServer]:
    """The composed app served on a spare port, with the exit sweeper running."""
    server = LiveServer(portal_app).start()
    yield server
    server.stop()


@pytest.fixture
def client(portal_app: Any) -> Any:
    """A Flask test client of the composed app (shadows the store-only one)."""
    return portal_app.test_client()


def csrf_of(html: str) -> str:
    """The CSRF token embedded in a rendered form."""
    m = CSRF.search(html)
    assert m, "page has no CSRF field"
    return m.group(1)


def login(client: Any, email: str, password: str) -> Any:
    """Sign in through the real form (CSRF included); returns the response."""
    token = csrf_of(client.get("/portal/login").get_data(as_text=True))
    return client.post(
        "/portal/login", data={"email": email, "password": password, "csrf_token": token}
    )


def signed_in_session(url: str, email: str, password: str) -> requests.Session:
    """A browser-like HTTP session signed in through the real form (CSRF included)."""
    browser = requests.Session()
    token = csrf_of(browser.get(f"{url}/portal/login", timeout=10).text)
    form = {"email": email, "password": password, "csrf_token": token}
    assert browser.post(f"{url}/portal/login", data=form, timeout=10).status_code == 200
    return browser


@pytest.fixture(scope="session")
def signed_in() -> dict[str, str]:
    """Session cookies of real sign-ins, by email: each account pays for scrypt once."""
    return {}


def _as(client: Any, cache: dict[str, str], email: str, password: str) -> Any:
    if email not in cache:
        assert login(client, email, password).status_code == 302
        cache[email] = client.get_cookie("session").value
    else:
        client.set_cookie("session", cache[email])
    return client


@pytest.fixture
def salon(client: Any, world: PortalWorld, signed_in: dict[str, str]) -> Any:
    """A test client signed in as the salon's owner."""
    return _as(client, signed_in, *SALON_LOGIN)


@pytest.fixture
def salon_staff(client: Any, world: PortalWorld, signed_in: dict[str, str]) -> Any:
    """A test client signed in as a salon employee (not the owner)."""
    return _as(client, signed_in, *SALON_STAFF_LOGIN)


def hang_up(sio: Any) -> None:
    """Close a Socket.IO client at once, without waiting for the server's last long-poll."""
    sio.eio.disconnect(abort=True)
    # Wake the client's writer thread so it sees the closed state and ends now, not 30 s later.
    if getattr(sio.eio, "queue", None) is not None:
        sio.eio.queue.put(None)


def make_present(server: LiveServer, world: PortalWorld, who: str, scanner: str) -> None:
    """Make a demo subscriber enter the zone of a scanner (they leave by themselves later)."""
    rows = eid_rows(world.demo.emitters[who], time.time() + 1, -50)
    resp = post_batch(server.url, scanner, world.demo.scanners[scanner]["secret"], rows)
    assert resp.status_code == 200, resp.text


@pytest.fixture
def context(browser: Any, portal_server: LiveServer) -> Iterator[Any]:
    """A fresh browser profile at tablet landscape size, on the live server."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=portal_server.url)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a tablet-size PNG of the page under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def browser_login(page: Any, email: str, password: str) -> None:
    """Sign in through the form like a person would."""
    page.goto("/portal/login?lang=en")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")


@pytest.fixture(scope="session")
def stored_report(portal_app, shared_data):  # type: ignore[no-untyped-def]
    """A bundle computed by analytics for the salon and stored in SQL as the job stores it."""
    areas = gpd.read_file(shared_data / "geo" / "paris-petite-couronne.geojson")
    hierarchy = parse_hierarchy(
        [[c, d, "*"] for c, d in zip(areas["code"], areas["departement"], strict=True)]
    )
    rng = np.random.default_rng(11)
    homes = rng.choice(["75111", "75112", "75120", "93048"], size=60, p=[0.5, 0.3, 0.15, 0.05])
    tastes = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(60)],
            "area": homes,
            "pop": rng.random(60),
            "jazz": rng.random(60),
        }
    )
    visits = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(60) for _ in range(2)],
            "time": [MONDAY + pd.Timedelta(days=d, hours=11) for _ in range(60) for d in (1, 4)],
            "dwell": 3600.0,
            "consent": True,
        }
    )
    report = weekly_report(
        visits, tastes, hierarchy, "salon-meche", MONDAY, 5, PrivacyLedger(1.0), areas=areas
    )
    bundle = json.loads(json.dumps(report.to_dict()))
    with sessions(portal_app)() as db:
        merchant = db.scalar(select(Merchant).where(Merchant.slug == "salon-meche"))
        db.add(
            Report(
                merchant_id=merchant.id,
                period_start=MONDAY.date(),
                period_end=(MONDAY + pd.Timedelta(days=7)).date(),
                kind="weekly",
                k=5,
                epsilon=0.0,
                delta=0.0,
                body=bundle,
            )
        )
        db.commit()
    return bundle


__all__ = ["CAR_LOGIN", "SALON_LOGIN"]
