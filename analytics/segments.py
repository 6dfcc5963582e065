"""Taste segments over anonymised report rows, and programming suggestions with their reason.

Both work on the published aggregates only (rows that already hold >= k subscribers), never on
individual subscribers, so they add no disclosure of their own.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning

# A small built-in catalogue (title, year, genre mix) so a cinema gets suggestions out of the box.
CATALOGUE: list[tuple[str, int, dict[str, float]]] = [
    ("Le Fabuleux Destin d'Amélie Poulain", 2001, {"comedy": 0.5, "romance": 0.5}),
    ("Intouchables", 2011, {"comedy": 0.6, "drama": 0.4}),
    ("La Haine", 1995, {"drama": 0.7, "thriller": 0.3}),
    ("Le Voyage de Chihiro", 2001, {"animation": 0.7, "family": 0.3}),
    ("Blade Runner 2049", 2017, {"science-fiction": 0.7, "thriller": 0.3}),
    ("Parasite", 2019, {"thriller": 0.5, "drama": 0.3, "comedy": 0.2}),
    ("Portrait de la jeune fille en feu", 2019, {"drama": 0.5, "romance": 0.5}),
    ("Mad Max: Fury Road", 2015, {"action": 0.8, "science-fiction": 0.2}),
    ("Get Out", 2017, {"horror": 0.6, "thriller": 0.4}),
    ("Le Sel de la Terre", 2014, {"documentary": 1.0}),
    ("Paddington 2", 2017, {"family": 0.6, "comedy": 0.4}),
    ("Anatomie d'une chute", 2023, {"drama": 0.6, "thriller": 0.4}),
    ("Dune", 2021, {"science-fiction": 0.6, "action": 0.4}),
    ("Ma vie de Courgette", 2016, {"animation": 0.6, "drama": 0.4}),
    ("Microcosmos", 1996, {"documentary": 0.8, "family": 0.2}),
    ("Les Triplettes de Belleville", 2003, {"animation": 0.6, "comedy": 0.4}),
]


def _genre_columns(report: pd.DataFrame) -> list[str]:
    return [c for c in report.columns if c not in ("area", "subscribers")]


def taste_segments(
    report: pd.DataFrame, n_segments: int = 3, seed: int = 0
) -> tuple[pd.Series, pd.DataFrame]:
    """NMF of the report's genre means: (segment per row, genre profile per segment)."""
    genres = _genre_columns(report)
    if report.empty or not genres:
        return pd.Series(dtype=int), pd.DataFrame(columns=genres)
    n_segments = max(1, min(n_segments, len(report), len(genres)))
    matrix = report[genres].to_numpy(dtype=float).clip(min=0.0)
    # rows are weighted by how many people they speak for (least squares on sqrt weights)
    weight = np.sqrt(report["subscribers"].to_numpy(dtype=float))[:, None]
    model = NMF(n_components=n_segments, init="nndsvda", random_state=seed, max_iter=500)
    with warnings.catch_warnings():
        # a few aggregate rows may stop short of the tolerance; the profiles are still usable,
        # and the job's contract is a single line on stderr
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = model.fit_transform(matrix * weight)
    profiles = model.components_
    profiles = profiles / np.maximum(profiles.sum(axis=1, keepdims=True), 1e-12)
    segment = pd.Series(w.argmax(axis=1), index=report["area"].to_numpy(), name="segment")
    return segment, pd.DataFrame(profiles, columns=genres)


def describe_report(report: pd.DataFrame, n_top: int = 3, n_segments: int = 3) -> pd.DataFrame:
    """The report with each row's top genres and taste segment added, for the portal."""
    genres = _genre_columns(report)
    out = report.copy()
    # a genre nobody in the row listens to is not one of its top genres, whatever its rank
    out["top_genres"] = [
        ", ".join(row[row > 0].sort_values(ascending=False, kind="stable").index[:n_top])
        for _, row in report[genres].iterrows()
    ]
    segment, _ = taste_segments(report, n_segments)
    out["segment"] = segment.to_numpy() if len(segment) else []
    return out


def suggest_titles(
    taste: Mapping[str, float],
    catalogue: list[tuple[str, int, dict[str, float]]] | None = None,
    n: int = 5,
) -> pd.DataFrame:
    """Titles ranked by cosine match with an area's genre shares, each with the reason shown."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    genres = sorted(set(taste) | {g for _, _, mix in catalogue for g in mix})
    area = np.array([max(float(taste.get(g, 0.0)), 0.0) for g in genres])
    norm = np.linalg.norm(area)
    rows = []
    for title, year, mix in catalogue:
        film = np.array([mix.get(g, 0.0) for g in genres])
        score = float(area @ film / (norm * np.linalg.norm(film))) if norm > 0 else 0.0
        contribution = area * film
        top = [genres[i] for i in np.argsort(-contribution)[:2] if contribution[i] > 0]
        reason = (
            "the area likes "
            + " and ".join(f"{g} ({taste.get(g, 0.0):.0%})" for g in top)
            + f"; the film is {', '.join(f'{g} {v:.0%}' for g, v in mix.items())}"
            if top
            else "no genre in common with the area's taste"
        )
        rows.append({"title": title, "year": year, "score": round(score, 4), "reason": reason})
    out = pd.DataFrame(rows).sort_values(["score", "title"], ascending=[False, True])
    return out.head(n).reset_index(drop=True)
