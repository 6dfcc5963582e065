"""The live contract: tiny uncalibrated venues, JSON round trips, compact pure state, drift."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
from shapely.geometry import MultiPolygon, box

from store_server.positioning import simulate
from store_server.positioning.evaluate import evaluate
from store_server.positioning.live import Estimate, VenueModel, track
from store_server.positioning.predict import drift_report, predict


def _hold(model: VenueModel, readings: dict[str, float], seconds: int = 6) -> Estimate | None:
    state, est = None, None
    for t in range(seconds):
        batch = [(t + 0.3 + 0.1 * i, s, r) for i, (s, r) in enumerate(readings.items())]
        state, est = track(model, state, batch, t + 1.0)
    return est


def _car() -> VenueModel:
    return VenueModel.uncalibrated({"dash": (0.6, 0.8)}, {"cabin": box(0, 0, 2.2, 1.6)})


def _salon() -> VenueModel:
    zones = {"chair-1": box(0, 0, 1.2, 1.2), "chair-2": box(2.2, 0, 3.4, 1.2)}
    return VenueModel.uncalibrated({"s-1": (0.1, 0.6), "s-2": (3.3, 0.6)}, zones)


def test_car_with_one_scanner_strong_is_cabin_faint_is_no_zone() -> None:
    car = _car()
    for rssi in (-45.0, -55.0, -60.5):
        est = _hold(car, {"dash": rssi})
        assert est is not None and est.zone == "cabin", rssi
    for rssi in (-78.0, -85.5, -95.0):
        est = _hold(car, {"dash": rssi})
        assert est is not None and est.zone is None, rssi


def test_salon_picks_the_chair_whose_scanner_hears_strongest() -> None:
    salon = _salon()
    assert _hold(salon, {"s-1": -52.0, "s-2": -68.0}).zone == "chair-1"
    assert _hold(salon, {"s-1": -69.0, "s-2": -54.0}).zone == "chair-2"
    assert _hold(salon, {"s-1": -60.0, "s-2": -66.0}).zone == "chair-1"
    assert _hold(salon, {"s-1": -94.0, "s-2": -96.0}).zone is None


def test_silence_holds_then_forgets_so_no_ghost_presence() -> None:
    car = _car()
    state, est = None, None
    for t in range(4):
        state, est = track(car, state, [(t + 0.5, "dash", -50.0)], t + 1.0)
    assert est is not None and est.zone == "cabin"
    state, est = track(car, state, [], 6.0)
    assert est is not None and est.zone == "cabin"
    state, est = track(car, state, [], 30.0)
    assert est is None


def test_unknown_scanners_and_nan_are_ignored() -> None:
    state, est = track(_car(), None, [(0.5, "elsewhere", -40.0), (0.6, "dash", float("nan"))], 1.0)
    assert est is None
    assert json.loads(json.dumps(state)) == state


def test_state_is_compact_json_and_track_is_pure() -> None:
    venue = simulate.flat()
    model = VenueModel.uncalibrated(venue.scanners, venue.zones)
    path = simulate.walk([(1.0, 1.0), (3.0, 3.0)], speed=0.5)
    rows = venue.readings(path, seed=5)
    state = None
    for k in range(int(rows["ts"].min()) + 1, int(rows["ts"].max()) + 1):
        batch = rows.loc[(rows["ts"] > k - 1) & (rows["ts"] <= k)]
        readings = list(zip(batch["ts"], batch["scanner"], batch["rssi"], strict=True))
        before = copy.deepcopy(state)
        new_state, est = track(model, state, readings, float(k))
        assert state == before  # the input state is never mutated
        again, est2 = track(model, before, readings, float(k))
        assert again == new_state and est2 == est  # same inputs, same outputs
        state = json.loads(json.dumps(new_state))
    assert len(json.dumps(state)) < 800
    assert est is not None and est.zone == "kitchen"
    # The zone's agile filter is carried along; a model without it drops it from the state.
    assert len(state["am"]) == 4 and len(state["aP"]) == 10
    steady = VenueModel(venue.scanners, venue.zones, {"params": {"walk_accel_mps2": 0.0}})
    dropped, _ = track(steady, state, [], float(k) + 1.0)
    assert "am" not in dropped and "aP" not in dropped and "m" in dropped


def _survey(venue: simulate.Venue) -> pd.DataFrame:
    return venue.readings(simulate.survey_path(), emitter="ref", seed=1)


def test_calibrated_model_round_trips_through_json() -> None:
    venue = simulate.flat()
    model = VenueModel.calibrate(venue.scanners, venue.zones, _survey(venue))
    assert set(model.calibration["pathloss"]) == set(venue.scanners)
    restored = VenueModel.from_json(json.loads(json.dumps(model.to_json())))
    path = simulate.walk([(10.5, 2.0), (10.4, 4.6), (6.0, 5.5)], speed=0.6, t0=5e5)
    rows = venue.readings(path, seed=7)
    sa = sb = None
    for k in range(int(rows["ts"].min()) + 1, int(rows["ts"].max()) + 1):
        batch = rows.loc[(rows["ts"] > k - 1) & (rows["ts"] <= k)]
        readings = list(zip(batch["ts"], batch["scanner"], batch["rssi"], strict=True))
        sa, ea = track(model, sa, readings, float(k))
        sb, eb = track(restored, sb, readings, float(k))
        assert ea == eb


def test_online_offsets_follow_drifted_scanners_and_pay_off() -> None:
    venue = simulate.flat()
    survey = _survey(venue)
    shifted = {"kit-1": 6.0, "liv-b": -6.0}
    rows = venue.readings(simulate.visit_path(), seed=2, drift=shifted)
    recording = rows.drop(columns=["x", "y"])
    adaptive = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    frozen = VenueModel.calibrate(venue.scanners, venue.zones, survey, {"drift_prior_db": 0.0})
    pred, offsets = predict(adaptive, recording)
    report = drift_report(offsets)
    assert report["kit-1"] > 2.0 and report["liv-b"] < -2.0
    others = sorted(abs(v) for s, v in report.items() if s not in shifted)
    assert others[len(others) // 2] < 1.0 and others[-1] < 2.5
    pred_frozen, _ = predict(frozen, recording)
    with_adapt = evaluate(venue.zones, rows, pred)["zone_accuracy"]
    without = evaluate(venue.zones, rows, pred_frozen)["zone_accuracy"]
    assert with_adapt > without + 0.05


def test_per_scanner_batches_match_per_second_calls() -> None:
    """Ingest calls once per scanner batch; evidence must not be counted once per call."""
    venue = simulate.flat()
    model = VenueModel.calibrate(venue.scanners, venue.zones, _survey(venue))
    rows = venue.readings(simulate.visit_path(), seed=3)
    rows = rows.assign(sec=rows["ts"].astype(int))
    per_second, per_batch = [], []
    sa = sb = None
    for sec, group in rows.groupby("sec"):
        readings = list(zip(group["ts"], group["scanner"], group["rssi"], strict=True))
        sa, ea = track(model, sa, readings, float(sec + 1))
        for _, batch in group.groupby("scanner", sort=False):
            chunk = list(zip(batch["ts"], batch["scanner"], batch["rssi"], strict=True))
            sb, eb = track(model, sb, chunk, chunk[-1][0])
        per_second.append((sec + 1, "e", ea.x, ea.y, ea.zone or ""))
        per_batch.append((sec + 1, "e", eb.x, eb.y, eb.zone or ""))
    cols = ["ts", "emitter", "x", "y", "zone"]
    truth = rows.assign(emitter="e")
    a = evaluate(venue.zones, truth, pd.DataFrame(per_second, columns=cols))
    b = evaluate(venue.zones, truth, pd.DataFrame(per_batch, columns=cols))
    assert b["zone_accuracy"] >= a["zone_accuracy"] - 0.05, (a, b)
    assert b["flaps_per_min"] <= a["flaps_per_min"] + 0.5, (a, b)
    assert b["median_error_m"] <= a["median_error_m"] + 0.25, (a, b)


def test_emitter_type_offset_makes_a_weak_wearable_behave_like_the_reference() -> None:
    venue = simulate.flat()
    model = VenueModel.calibrate(venue.scanners, venue.zones, _survey(venue))
    typed = model.with_emitter_offsets({"watch": -9.0})
    typed = VenueModel.from_json(json.loads(json.dumps(typed.to_json())))
    rows = venue.readings(simulate.visit_path(), seed=4, drift=dict.fromkeys(venue.scanners, -9.0))
    plain = {"drift_prior_db": 0.0}
    frozen = VenueModel(model.scanners, model.zones, {**model.calibration, "params": plain})
    frozen_typed = VenueModel(typed.scanners, typed.zones, {**typed.calibration, "params": plain})
    scores = []
    for m, start in ((frozen, None), (frozen_typed, {"type": "watch"})):
        state, out = start, []
        for k in range(int(rows["ts"].min()) + 1, int(rows["ts"].max()) + 1):
            batch = rows.loc[(rows["ts"] > k - 1) & (rows["ts"] <= k)]
            readings = list(zip(batch["ts"], batch["scanner"], batch["rssi"], strict=True))
            state, est = track(m, state, readings, float(k))
            if est is not None:
                out.append((float(k), "e1", est.x, est.y, est.zone or ""))
        pred = pd.DataFrame(out, columns=["ts", "emitter", "x", "y", "zone"])
        scores.append(evaluate(venue.zones, rows, pred))
    assert scores[1]["zone_accuracy"] > scores[0]["zone_accuracy"] + 0.03, scores
    assert scores[1]["zone_accuracy"] >= 0.85, scores


def test_a_scanner_missing_from_the_survey_gets_the_pooled_fit() -> None:
    venue = simulate.flat()
    survey = _survey(venue)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey[survey["scanner"] != "bath"])
    pl = model.calibration["pathloss"]
    assert pl["bath"][:2] != [-59.0, 2.7] and pl["bath"][1] != pl["kit-1"][1]
    est = None
    state = None
    for k in range(1, 8):
        state, est = track(model, state, [(k - 0.5, "bath", -48.0), (k - 0.4, "liv-b", -70.0)], k)
    assert est is not None and est.zone == "bath"


def test_loose_inputs_numeric_ids_nan_rows_multipolygons_and_no_zones() -> None:
    scanners = {"1": (0.0, 0.0), "2": (4.0, 0.0)}
    zones = {"ends": MultiPolygon([box(-0.5, -0.5, 0.5, 0.5), box(3.5, -0.5, 4.5, 0.5)])}
    survey = pd.DataFrame(
        {"ts": np.arange(40.0), "scanner": [1, 2] * 20, "emitter": 7, "rssi": -55.0, "x": 0.0,
         "y": 0.0}
    )  # fmt: skip
    survey.loc[3, "x"] = np.nan
    model = VenueModel.calibrate(scanners, zones, survey)
    assert sorted(model.calibration["pathloss"]) == ["1", "2"]
    state = None
    for k in range(1, 5):
        state, est = track(model, state, [(k - 0.5, 1, -50.0), (k - 0.4, "2", -75.0)], k)
    assert est is not None and est.zone == "ends" and est.x < 2.0
    _, est = track(VenueModel.uncalibrated(scanners, {}), None, [(0.5, "1", -50.0)], 1.0)
    assert est is not None and est.zone is None


def test_a_phone_of_unknown_level_is_placed_better_while_its_level_is_integrated_out() -> None:
    venue = simulate.flat()
    survey = _survey(venue)
    errors = {}
    for marginal in (0.0, 1.0):
        model = VenueModel.calibrate(
            venue.scanners, venue.zones, survey, {"level_marginal": marginal}
        )
        err = []
        spots = [(2.0, 2.0), (6.5, 2.0), (10.5, 2.0), (2.0, 8.0), (9.0, 5.5)]
        cases = [(lvl, spot) for lvl in (8.0, -6.0) for spot in spots]
        for seed, (level, (x, y)) in enumerate(cases):
            # A loud or quiet phone standing still, tracked from its first second.
            path = simulate.walk([(x, y), (x + 0.01, y)], speed=0.001, t0=1e6)
            rows = venue.readings(path, seed=seed, drift=dict.fromkeys(venue.scanners, level))
            state = None
            for k in range(int(rows["ts"].min()) + 1, int(rows["ts"].min()) + 6):
                batch = rows.loc[(rows["ts"] > k - 1) & (rows["ts"] <= k)]
                readings = list(zip(batch["ts"], batch["scanner"], batch["rssi"], strict=True))
                state, est = track(model, state, readings, float(k))
                assert est is not None
                err.append(np.hypot(est.x - x, est.y - y))
        errors[marginal] = float(np.mean(err))
    assert errors[1.0] < 0.95 * errors[0.0], errors
