"""DP option: noise laws, the budget ledger, fixed windows and the differencing attack they stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.hierarchy import parse_hierarchy
from analytics.privacy import (
    BudgetExceeded,
    PrivacyError,
    PrivacyLedger,
    discrete_gaussian,
    discrete_laplace,
    week_window,
)
from analytics.reports import dp_taste_report, weekly_report
from analytics.taste import taste_report

MONDAY = pd.Timestamp("2026-11-02")
HIERARCHY = parse_hierarchy(
    [["75111", "75", "*"], ["75112", "75", "*"], ["93048", "93", "*"], ["93001", "93", "*"]]
)


def test_noise_laws() -> None:
    rng = np.random.default_rng(3)
    lap = discrete_laplace(2.0, 200_000, rng)
    q = np.exp(-1 / 2.0)
    assert lap.dtype == np.int64
    assert lap.var() == pytest.approx(2 * q / (1 - q) ** 2, rel=0.03)
    gauss = discrete_gaussian(3.0, 200_000, rng)
    assert abs(gauss.mean()) < 0.05
    assert gauss.var() == pytest.approx(9.0, rel=0.03)


def test_ledger_refuses_what_would_exceed_the_budget() -> None:
    ledger = PrivacyLedger(epsilon_budget=1.0, delta_budget=1e-5)
    ledger.charge("cinema", MONDAY, 0.5, 1e-6)
    ledger.charge("cinema", MONDAY + pd.Timedelta(days=7), 0.5, 1e-6)
    with pytest.raises(BudgetExceeded):
        ledger.charge("cinema", MONDAY + pd.Timedelta(days=14), 0.1)
    ledger.charge("bakery", MONDAY, 1.0)  # budgets are per merchant
    assert ledger.spent("cinema") == pytest.approx((1.0, 2e-6))
    with pytest.raises(PrivacyError):
        week_window("2026-11-03")  # a Tuesday
    with pytest.raises(PrivacyError):
        week_window("2026-11-02 12:00")


def _week_of_visits() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ten regulars every day of the week, plus one target who came on Tuesday only."""
    rows = [(f"r{i}", MONDAY + pd.Timedelta(days=d, hours=18)) for i in range(10) for d in range(9)]
    rows.append(("target", MONDAY + pd.Timedelta(days=1, hours=18)))
    visits = pd.DataFrame(rows, columns=["subscriber", "time"])
    tastes = pd.DataFrame(
        {
            "subscriber": [f"r{i}" for i in range(10)] + ["target"],
            "area": ["75111"] * 11,
            "drama": [0.5] * 10 + [0.9],
            "comedy": [0.5] * 10 + [0.1],
        }
    )
    return visits, tastes


def test_differencing_attack_works_on_free_windows_and_is_refused_on_fixed_weeks() -> None:
    visits, tastes = _week_of_visits()

    def exact(start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        who = set(visits.loc[(visits["time"] >= start) & (visits["time"] < end), "subscriber"])
        return taste_report(tastes[tastes["subscriber"].isin(who)], HIERARCHY, 5).iloc[0]

    # free windows: Mon-Mon and Wed-Wed are both k-anonymous, yet their difference is one person
    a = exact(MONDAY, MONDAY + pd.Timedelta(days=7))
    b = exact(MONDAY + pd.Timedelta(days=2), MONDAY + pd.Timedelta(days=9))
    assert a["subscribers"] - b["subscribers"] == 1
    leaked = a["drama"] * a["subscribers"] - b["drama"] * b["subscribers"]
    assert leaked == pytest.approx(0.9)  # the target's exact taste

    ledger = PrivacyLedger(epsilon_budget=10.0)
    first = weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY, 5, ledger)
    assert first.table["subscribers"].tolist() == [11]
    with pytest.raises(PrivacyError):  # the shifted window is not a week
        weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY + pd.Timedelta(days=2), 5, ledger)
    # re-running the same week after the target's data changed would difference just as well
    with pytest.raises(PrivacyError):
        weekly_report(visits[visits["subscriber"] != "target"], tastes, HIERARCHY, "cinema",
                      MONDAY, 5, ledger)  # fmt: skip
    # the next week is a disjoint window: allowed, and it holds only the regulars' two days
    second = weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY + pd.Timedelta(days=7),
                           5, ledger)  # fmt: skip
    assert second.table["subscribers"].tolist() == [10]


def test_noisy_reports_cannot_be_averaged_within_the_budget() -> None:
    visits, tastes = _week_of_visits()
    ledger = PrivacyLedger(epsilon_budget=1.0)
    rng = np.random.default_rng(5)
    weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY, 5, ledger, 0.6, rng=rng)
    with pytest.raises(PrivacyError):
        weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY, 5, ledger, 0.6, rng=rng)
    with pytest.raises(BudgetExceeded):
        weekly_report(visits, tastes, HIERARCHY, "cinema", MONDAY + pd.Timedelta(days=7), 5,
                      ledger, 0.6, rng=rng)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(HIERARCHY.leaves), min_size=0, max_size=120),
    st.integers(5, 10),
    st.sampled_from(["laplace", "gaussian"]),
    st.floats(0.1, 5.0),
    st.integers(0, 2**32 - 1),
)
def test_noisy_rows_hold_k_true_subscribers(
    areas: list[str], k: int, mechanism: str, epsilon: float, seed: int
) -> None:
    people = pd.DataFrame(
        {"subscriber": [f"s{i}" for i in range(len(areas))], "area": areas,
         "drama": 0.7, "comedy": 0.3}
    )  # fmt: skip
    out = dp_taste_report(people, HIERARCHY, k, epsilon, 1e-6, mechanism,
                          np.random.default_rng(seed))  # fmt: skip
    assert out["area"].is_unique
    published = set(out["area"])
    true_rows: dict[str, int] = {}
    for area in areas:
        row = next((x for x in HIERARCHY.ancestors(area) if x in published), None)
        if row is not None:
            true_rows[row] = true_rows.get(row, 0) + 1
    assert set(true_rows) == published
    assert all(n >= k for n in true_rows.values())
    assert (out["subscribers"] >= k).all()  # the released count passed the threshold too
    assert out[["drama", "comedy"]].to_numpy().min(initial=0.0) >= 0.0


def test_large_epsilon_approaches_the_exact_report() -> None:
    areas = ["75111"] * 40 + ["75112"] * 25 + ["93048"] * 30 + ["93001"] * 3
    people = pd.DataFrame(
        {"subscriber": [f"s{i}" for i in range(len(areas))], "area": areas,
         "drama": 0.6, "comedy": 0.4}
    )  # fmt: skip
    out = dp_taste_report(people, HIERARCHY, 5, 1000.0, 1e-6, "laplace", np.random.default_rng(1))
    exact = taste_report(people, HIERARCHY, 5)
    assert set(out["area"]) == set(exact["area"])
    merged = out.merge(exact, on="area", suffixes=("", "_x"))
    assert (merged["subscribers"] - merged["subscribers_x"]).abs().max() <= 1
    assert merged["drama"].to_numpy() == pytest.approx(0.6, abs=0.02)
    assert out.attrs["mechanism"] == "laplace"
