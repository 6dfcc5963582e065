"""Segments on anonymised rows and cinema suggestions with their reason."""

from __future__ import annotations

import pandas as pd

from analytics.segments import describe_report, suggest_titles, taste_segments


def test_two_clear_tastes_fall_in_two_segments() -> None:
    report = pd.DataFrame(
        {
            "area": ["a", "b", "c", "d", "e", "f"],
            "subscribers": [12, 30, 8, 15, 9, 40],
            "drama": [0.8, 0.75, 0.7, 0.1, 0.05, 0.1],
            "comedy": [0.1, 0.15, 0.2, 0.8, 0.9, 0.85],
            "documentary": [0.1, 0.1, 0.1, 0.1, 0.05, 0.05],
        }
    )
    segment, profiles = taste_segments(report, n_segments=2)
    assert segment["a"] == segment["b"] == segment["c"]
    assert segment["d"] == segment["e"] == segment["f"]
    assert segment["a"] != segment["d"]
    assert profiles.loc[segment["a"]].idxmax() == "drama"
    assert profiles.loc[segment["d"]].idxmax() == "comedy"
    assert profiles.sum(axis=1).round(6).eq(1.0).all()


def test_a_documentary_area_gets_documentaries_first_with_the_reason() -> None:
    out = suggest_titles({"documentary": 0.6, "family": 0.2, "drama": 0.2}, n=3)
    assert out.loc[0, "title"] in {"Microcosmos", "Le Sel de la Terre"}
    assert "documentary (60%)" in out.loc[0, "reason"]
    assert out["score"].is_monotonic_decreasing
    assert len(out) == 3


def test_no_shared_genre_scores_zero_and_says_so() -> None:
    out = suggest_titles({"opera": 1.0}, catalogue=[("Carmen", 1984, {"drama": 1.0})])
    assert out.loc[0, "score"] == 0.0
    assert "no genre in common" in out.loc[0, "reason"]


def test_describe_report_adds_top_genres_and_segment() -> None:
    report = pd.DataFrame(
        {"area": ["a", "b"], "subscribers": [5, 9], "drama": [0.7, 0.1], "comedy": [0.3, 0.9]}
    )
    out = describe_report(report, n_top=1, n_segments=2)
    assert out["top_genres"].tolist() == ["drama", "comedy"]
    assert out["segment"].nunique() == 2
    assert out["subscribers"].tolist() == [5, 9]
