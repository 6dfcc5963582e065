"""Zone presence timings are checked by the model, so every path that creates or edits a zone
(services, the portal's upload, the seed) refuses a timing that breaks presence."""

from __future__ import annotations

import math
import secrets

import pytest
from shapely.geometry import box

from store_server import services
from store_server.models import Venue, Zone


@pytest.fixture
def venue(db) -> Venue:  # type: ignore[no-untyped-def]
    """A venue of a new merchant (rolled back with the test's session)."""
    merchant = services.create_merchant(db, f"zt-{secrets.token_hex(4)}", "Zone timings", "salon")
    return services.create_venue(db, merchant, "Salon", "site")


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("exit_absent_s", math.inf, "> 0"),  # a ghost presence kept forever
        ("exit_absent_s", 0.0, "> 0"),  # a seated person enters and exits every second
        ("exit_absent_s", -8.0, "> 0"),
        ("exit_absent_s", math.nan, "> 0"),
        ("enter_stable_s", -1.0, ">= 0"),
        ("enter_stable_s", math.inf, ">= 0"),
        ("enter_stable_s", math.nan, ">= 0"),
        ("max_radius_m", 0.0, "> 0"),
        ("max_radius_m", -2.0, "> 0"),
        ("max_radius_m", math.inf, "> 0"),
        ("exit_absent_s", "8", "> 0"),  # not a number at all
        ("enter_stable_s", None, ">= 0"),
    ],
)
def test_add_zone_refuses_timings_that_break_presence(db, venue, field, value, bound):
    with pytest.raises(ValueError, match=f"zone {field} must be a finite number {bound}"):
        services.add_zone(db, venue, "chair-1", "chair", box(0, 0, 2, 2), **{field: value})
    assert db.query(Zone).filter_by(venue_id=venue.id).count() == 0


def test_editing_a_zone_timing_is_checked_too(db, venue):
    zone = services.add_zone(db, venue, "chair-1", "chair", box(0, 0, 2, 2))
    with pytest.raises(ValueError, match="zone exit_absent_s must be a finite number > 0"):
        zone.exit_absent_s = math.inf
    assert zone.exit_absent_s == 8.0  # the chair's default is kept


def test_immediate_entry_and_the_kind_defaults_are_accepted(db, venue):
    chair = services.add_zone(
        db, venue, "chair-1", "chair", box(0, 0, 2, 2), enter_stable_s=0, exit_absent_s=0.5
    )
    area = services.add_zone(db, venue, "shop", "area", box(3, 0, 9, 6))
    db.flush()
    assert (chair.enter_stable_s, chair.exit_absent_s, chair.max_radius_m) == (0.0, 0.5, 2.0)
    assert (area.enter_stable_s, area.exit_absent_s, area.max_radius_m) == (5.0, 30.0, 6.0)
