"""Generalisation check on a simulated flat: real-room zones, walls, another scanner layout."""

from __future__ import annotations

from store_server.positioning import simulate
from store_server.positioning.evaluate import evaluate
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict
from store_server.positioning.report import zone_accuracy_report


def test_rooms_venue_reaches_presence_grade_accuracy() -> None:
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    scores = []
    for seed in (2, 3):
        visit = venue.readings(simulate.visit_path(), emitter="guest", seed=seed)
        pred, _ = predict(model, visit.drop(columns=["x", "y"]))
        scores.append(evaluate(venue.zones, visit, pred))
    for s in scores:
        assert s["zone_accuracy"] >= 0.88, s
        assert s["flaps_per_min"] <= 0.8, s
        assert s["median_error_m"] <= 0.9, s
    assert sum(s["zone_accuracy"] for s in scores) / len(scores) >= 0.92, scores


def test_calibration_beats_textbook_defaults_and_reports_per_zone() -> None:
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    visit = venue.readings(simulate.visit_path(), emitter="guest", seed=4)
    calibrated = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    textbook = VenueModel.uncalibrated(venue.scanners, venue.zones)
    got = [
        evaluate(venue.zones, visit, predict(m, visit.drop(columns=["x", "y"]))[0])
        for m in (calibrated, textbook)
    ]
    assert got[0]["median_error_m"] < got[1]["median_error_m"]
    assert got[0]["zone_accuracy"] > got[1]["zone_accuracy"]
    report = zone_accuracy_report(venue.scanners, venue.zones, survey)
    assert report["tracks"] == 2
    assert set(report["zones"]) == set(venue.zones)
    assert all(0.0 <= z["accuracy"] <= 1.0 and z["seconds"] > 0 for z in report["zones"].values())
