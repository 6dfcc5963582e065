"""Taste reports: k on every row for random inputs, re-counted independently; the CLI contract."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.cli import main
from analytics.hierarchy import Hierarchy, parse_hierarchy
from analytics.taste import ReportError, taste_report

GENRES = ["drama", "comedy"]


def recount(people: pd.DataFrame, hierarchy: Hierarchy, published: list[str]) -> pd.DataFrame:
    """Re-derive each row from the published labels alone, as a DPO would."""
    chosen = set(published)
    rows: dict[str, list[int]] = {}
    for position, area in enumerate(people["area"]):
        label = next((x for x in hierarchy.ancestors(area) if x in chosen), None)
        if label is not None:
            rows.setdefault(label, []).append(position)
    out = []
    for label, positions in rows.items():
        group = people.iloc[positions]
        means = group.groupby("subscriber")[GENRES].mean().mean()
        out.append({"area": label, "subscribers": group["subscriber"].nunique(), **means})
    return pd.DataFrame(out, columns=["area", "subscribers", *GENRES])


@st.composite
def cases(draw: st.DrawFn) -> tuple[pd.DataFrame, Hierarchy, int]:
    """A random tree (lines of different depths, leaves that are also inner labels) and people."""
    n_leaves = draw(st.integers(1, 12))
    lines = []
    for leaf in range(n_leaves):
        depth = draw(st.integers(0, 3))
        # parent labels derive from the leaf number so one label always has one parent
        parents = [f"L{d}-{leaf % (4 - d)}" for d in range(depth)]
        lines.append([f"a{leaf}", *[p for p in parents], "*"])
    for line in lines:
        for d in range(1, len(line) - 1):
            line[d] = f"{line[d]}|{'/'.join(line[d + 1 : -1])}"
    if draw(st.booleans()) and len(lines[0]) > 2:
        lines.append([lines[0][1], *lines[0][2:]])  # an inner label that is also a leaf
    hierarchy = parse_hierarchy(lines)
    leaves = hierarchy.leaves
    n = draw(st.integers(0, 80))
    ids = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    area_of = {i: draw(st.sampled_from(leaves)) for i in set(ids)}
    weights = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=2 * n, max_size=2 * n))
    people = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in ids],
            "area": [area_of[i] for i in ids],
            "drama": weights[:n],
            "comedy": weights[n:],
        }
    )
    return people, hierarchy, draw(st.integers(5, 12))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_every_row_holds_k_and_recounts_exactly(case: tuple) -> None:
    people, hierarchy, k = case
    report = taste_report(people, hierarchy, k)
    assert list(report.columns) == ["area", "subscribers", *GENRES]
    assert report["area"].is_unique
    assert (report["subscribers"] >= k).all()
    expected = recount(people, hierarchy, report["area"].tolist())
    merged = report.merge(expected, on="area", suffixes=("", "_re"), validate="1:1")
    assert len(merged) == len(report) == len(expected)
    assert (merged["subscribers"] == merged["subscribers_re"]).all()
    for genre in GENRES:
        assert merged[genre].to_numpy() == pytest.approx(merged[f"{genre}_re"].to_numpy())
    total = people["subscriber"].nunique()
    suppressed = total - int(report["subscribers"].sum())
    # each subscriber is in at most one row, and nobody is dropped once `*` is published
    assert suppressed >= 0
    if "*" in set(report["area"]):
        assert suppressed == 0
    else:
        assert suppressed < k


def test_a_label_is_one_row_whatever_depth_it_is_reached_from() -> None:
    h = parse_hierarchy([["a1", "A", "*"], ["A", "*"], ["b", "*"]])
    people = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(13)],
            "area": ["a1"] * 3 + ["A"] * 3 + ["b"] * 7,
            "drama": [1.0] * 6 + [0.0] * 7,
            "comedy": [0.0] * 6 + [1.0] * 7,
        }
    )
    report = taste_report(people, h, 5).set_index("area")
    assert report.loc["A", "subscribers"] == 6
    assert report.loc["b", "subscribers"] == 7
    assert report.loc["A", "drama"] == 1.0


def test_a_small_remainder_is_generalised_not_dropped() -> None:
    h = parse_hierarchy([["x", "*"], ["y", "*"], ["z", "*"]])
    people = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(17)],
            "area": ["x"] * 5 + ["y"] * 10 + ["z"] * 2,
            "drama": 0.5,
            "comedy": 0.5,
        }
    )
    report = taste_report(people, h, 5)
    assert report["subscribers"].sum() == 17
    assert set(report["area"]) == {"y", "*"}


def test_k_below_five_is_refused() -> None:
    h = parse_hierarchy([["x", "*"]])
    people = pd.DataFrame({"subscriber": ["a"], "area": ["x"], "drama": [1.0]})
    with pytest.raises(ReportError):
        taste_report(people, h, 4)


def _write(tmp_path, people: pd.DataFrame, lines: list[str]):
    s = tmp_path / "s.csv"
    h = tmp_path / "h.csv"
    people.to_csv(s, index=False)
    h.write_text("\n".join(lines) + "\n")
    return s, h


def test_cli_contract(tmp_path, capsys) -> None:
    people = pd.DataFrame(
        {
            "subscriber": [f"s{i}" for i in range(12)],
            "area": ["75101"] * 6 + ["75102"] * 4 + ["92012"] * 2,
            "drama": [0.2] * 12,
            "comedy": [0.8] * 12,
        }
    )
    s, h = _write(tmp_path, people, ["75101;75;*", "75102;75;*", "92012;92;*"])
    out = tmp_path / "r.csv"
    argv = ["taste-report", "--subscribers", str(s), "--hierarchy", str(h), "--out", str(out)]
    assert main([*argv, "--k", "5"]) == 0
    report = pd.read_csv(out, dtype={"area": str})
    assert list(report.columns) == ["area", "subscribers", "drama", "comedy"]
    assert report["subscribers"].sum() == 12
    assert (report["subscribers"] >= 5).all()
    capsys.readouterr()
    assert main([*argv, "--k", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 5" in err


def test_cli_unknown_area_is_one_line(tmp_path, capsys) -> None:
    people = pd.DataFrame({"subscriber": ["a"], "area": ["99999"], "drama": [1.0]})
    s, h = _write(tmp_path, people, ["75101;75;*"])
    argv = ["taste-report", "--subscribers", str(s), "--hierarchy", str(h), "--k", "5"]
    assert main([*argv, "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "99999" in err
