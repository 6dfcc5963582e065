"""The functional core of the opt-in on its own: form answers, local midnight, the directory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from store_server.directory import BuiltinDirectory, normalise_username
from store_server.optin.choices import end_of_day, known_areas, parse_choices
from store_server.optin.web import parse_rate, safe_next

pytestmark = pytest.mark.consent
FULL = {"presence": "all", "share": "preferences", "statistics": "no", "duration": "today"}


def test_known_areas_are_the_143_paris_and_petite_couronne_codes():
    areas = known_areas()
    assert len(areas) == 143
    assert areas["75111"] == "Paris 11e Arrondissement" and "93048" in areas
    assert {c[:2] for c in areas} == {"75", "92", "93", "94"}


def test_every_answer_is_required():
    for missing in FULL:
        choices, errors = parse_choices({k: v for k, v in FULL.items() if k != missing})
        assert choices is None and len(errors) == 1


def test_statistics_need_a_known_area_and_no_means_no_area():
    assert parse_choices({**FULL, "statistics": "yes"})[1] == ["err_area"]
    assert parse_choices({**FULL, "statistics": "yes", "home_area": "75999"})[1] == ["err_area"]
    ok, _ = parse_choices({**FULL, "statistics": "yes", "home_area": "92012"})
    assert ok.statistics and ok.home_area == "92012"
    dropped, _ = parse_choices({**FULL, "home_area": "92012"})
    assert dropped.home_area is None and not dropped.statistics


def test_end_of_day_is_local_midnight_across_daylight_saving():
    # 29 March 2026: Paris goes from UTC+1 to UTC+2 at 02:00.
    before = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 23:30 in Paris, winter time
    assert end_of_day(before, "Europe/Paris") == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    after = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # 14:00 in Paris, summer time
    assert end_of_day(after, "Europe/Paris") == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)


def test_builtin_directory_hashes_and_refuses_bad_input():
    d = BuiltinDirectory(accounts=())
    acct = d.add("Ana.Doe", "long-enough-pw", "Ana")
    assert acct.directory_id == "dir:ana.doe"
    assert d.authenticate("ANA.DOE ", "long-enough-pw") == acct
    assert d.authenticate("ana.doe", "long-enough-PW") is None
    assert d.authenticate("nobody", "long-enough-pw") is None
    assert d.authenticate("ana.doe", "x" * 10_000) is None
    assert d.lookup("dir:ana.doe") == acct and d.lookup("demo:ana.doe") is None
    for bad in ("ab", "a b c", "<script>", "x" * 65):
        assert normalise_username(bad) is None
    with pytest.raises(ValueError):
        d.add("ok-name", "short", "X")


def test_fixture_accounts_sign_in():
    d = BuiltinDirectory()
    assert d.authenticate("camille", "camille-demo-2026").display_name == "Camille"


def test_rate_and_next_parsing():
    assert parse_rate("5/300") == (5, 300)
    assert safe_next("/me/disclosures?lang=en", "/me/") == "/me/disclosures?lang=en"
    assert safe_next(None, "/me/") == "/me/"
