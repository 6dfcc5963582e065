"""The weekly bundle the job stores: taste rows, catchment, segments, suggestions, guarantees."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd

from analytics.hierarchy import parse_hierarchy
from analytics.privacy import PrivacyLedger
from analytics.reports import weekly_report

MONDAY = pd.Timestamp("2026-11-09")


def test_weekly_bundle_is_json_ready_and_states_its_guarantees(shared_data) -> None:
    areas = gpd.read_file(shared_data / "geo" / "paris-petite-couronne.geojson")
    hierarchy = parse_hierarchy([[c, d, "*"] for c, d in zip(areas["code"], areas["departement"],
                                                            strict=True)])  # fmt: skip
    rng = np.random.default_rng(11)
    homes = rng.choice(["75111", "75112", "75120", "93048"], size=60, p=[0.5, 0.3, 0.15, 0.05])
    tastes = pd.DataFrame({"subscriber": [f"s{i}" for i in range(60)], "area": homes,
                           "drama": rng.random(60), "comedy": rng.random(60)})  # fmt: skip
    visits = pd.DataFrame(
        {"subscriber": [f"s{i}" for i in range(60) for _ in range(2)],
         "time": [MONDAY + pd.Timedelta(days=d, hours=20) for _ in range(60) for d in (1, 4)],
         "dwell": 7200.0, "consent": True}
    )  # fmt: skip
    ledger = PrivacyLedger(epsilon_budget=1.0)
    report = weekly_report(visits, tastes, hierarchy, "cine-11", MONDAY, 5, ledger, areas=areas)
    bundle = json.loads(json.dumps(report.to_dict()))
    assert bundle["guarantees"]["k"] == 5 and bundle["guarantees"]["epsilon"] == 0.0
    assert all(row["subscribers"] >= 5 for row in bundle["taste"])
    assert sum(row["subscribers"] for row in bundle["taste"]) == 60
    assert bundle["catchment"]["polygon"]["type"] in {"Polygon", "MultiPolygon"}
    assert all(cell["subscribers"] >= 5 for cell in bundle["catchment"]["cells"])
    assert bundle["catchment"]["share"] >= 0.7
    assert len(bundle["suggestions"]) == 5 and bundle["suggestions"][0]["reason"]
    assert {"drama", "comedy"} <= set(bundle["segments"][0])
    assert ledger.spent("cine-11") == (0.0, 0.0) and len(ledger.releases) == 1


def test_noisy_bundle_states_epsilon_and_threshold() -> None:
    hierarchy = parse_hierarchy([["75111", "75", "*"], ["75112", "75", "*"]])
    tastes = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(200)],
            "area": ["75111"] * 120 + ["75112"] * 80,
            "drama": 0.5,
            "comedy": 0.5,
        }
    )
    visits = pd.DataFrame(
        {"subscriber": tastes["subscriber"], "time": MONDAY + pd.Timedelta(hours=9)}
    )
    ledger = PrivacyLedger(epsilon_budget=2.0)
    report = weekly_report(visits, tastes, hierarchy, "m", MONDAY, 5, ledger, epsilon=1.0,
                           rng=np.random.default_rng(0))  # fmt: skip
    bundle = json.loads(json.dumps(report.to_dict()))
    g = bundle["guarantees"]
    assert g["epsilon"] == 1.0 and g["mechanism"] == "laplace" and g["threshold"] > 5
    assert bundle["catchment"] is None
    assert ledger.spent("m")[0] == 1.0


def test_noisy_bundle_with_catchment_splits_one_charge(shared_data) -> None:
    areas = gpd.read_file(shared_data / "geo" / "paris-petite-couronne.geojson")
    hierarchy = parse_hierarchy([[c, "*"] for c in areas["code"]])
    tastes = pd.DataFrame({"subscriber": [f"s{i}" for i in range(400)], "area": "75111",
                           "drama": 0.3, "comedy": 0.7})  # fmt: skip
    visits = pd.DataFrame({"subscriber": tastes["subscriber"], "dwell": 3600.0,
                           "time": MONDAY + pd.Timedelta(hours=9)})  # fmt: skip
    ledger = PrivacyLedger(epsilon_budget=4.0)
    report = weekly_report(visits, tastes, hierarchy, "m", MONDAY, 5, ledger, epsilon=4.0,
                           rng=np.random.default_rng(1), areas=areas)  # fmt: skip
    bundle = json.loads(json.dumps(report.to_dict()))
    assert [c["cell"] for c in bundle["catchment"]["cells"]] == ["75111"]
    assert abs(bundle["catchment"]["cells"][0]["subscribers"] - 400) < 60
    assert ledger.spent("m")[0] == 4.0 and len(ledger.releases) == 1


def test_noisy_taste_rows_are_the_catchment_cells_with_their_counts(shared_data) -> None:
    areas = gpd.read_file(shared_data / "geo" / "paris-petite-couronne.geojson")
    hierarchy = parse_hierarchy([[c, "*"] for c in areas["code"]])
    # 32 people from the 12e are too few alone (noisy count under the threshold of 34) but
    # enough to take part in merges (noisy count >= 2 + the tail, 31): they must sit in one
    # cell with the 11e, in the taste rows as in the catchment, or the difference of the two
    # would be those 32 (3 people would be withheld, in neither)
    homes = ["75111"] * 300 + ["75112"] * 32
    tastes = pd.DataFrame({"subscriber": [f"s{i}" for i in range(332)], "area": homes,
                           "drama": 0.3, "comedy": 0.7})  # fmt: skip
    visits = pd.DataFrame({"subscriber": tastes["subscriber"], "dwell": 3600.0,
                           "time": MONDAY + pd.Timedelta(hours=9)})  # fmt: skip
    report = weekly_report(visits, tastes, hierarchy, "m", MONDAY, 5, PrivacyLedger(4.0),
                           epsilon=4.0, rng=np.random.default_rng(3), areas=areas)  # fmt: skip
    bundle = json.loads(json.dumps(report.to_dict()))
    rows = {row["area"]: row["subscribers"] for row in bundle["taste"]}
    cells = {cell["cell"]: cell["subscribers"] for cell in bundle["catchment"]["cells"]}
    assert rows == cells == {"75111+75112": rows["75111+75112"]}
    assert bundle["guarantees"]["threshold"] > 5
    assert 0.6 < bundle["taste"][0]["comedy"] < 0.8
