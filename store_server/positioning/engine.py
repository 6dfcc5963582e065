"""One tracking step: robust RSSI filter, radio-map likelihood on the venue grid, a Gaussian
motion prior (assumed-density filter; a second, agile one for the zone of a walker), zone
probabilities, hysteresis and drift adaptation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from store_server.positioning import drift, filtering, hysteresis, kernels, motion, pathloss
from store_server.positioning.fingerprint import residual_map
from store_server.positioning.grid import Grid, build

# Tuning, all chosen by measurement on the leave-one-track-out recording AND the simulated rooms
# venue (bench/positioning.py, --synthetic), never on one alone. Options that stay at 0 lost there:
# damping_s (velocity decay: sluggish), common_sigma_db (level-free likelihood: the level is
# informative), knn_weight (signal-space kNN fused into the grid: worse on both), new_only (each
# reading once: equal, the once-per-second buffering already keeps evidence from double counting).
# The per-change LOTO / rooms figures are in README.md ("What was tried").
# Cells more than this far below the posterior's top (in log density) weigh nothing.
SPAN = 30.0
# Placeholders for a filter's first step (no state, no manoeuvre gate yet).
_NO_STATE, _NO_COV, _NO_GATE = (0.0,) * 4, np.zeros((4, 4)), np.full(5, np.nan)
DEFAULTS: dict[str, float] = {
    "grid_step": 0.4,
    "tau_s": 0.3,
    "max_age_s": 3.0,
    "temper": 1.0,
    "huber_k": 2.0,
    "speed_mps": 0.8,
    "accel_mps2": 0.05,
    "damping_s": 0.0,
    "adapt_gate": 4.0,
    "common_sigma_db": 0.0,
    "level_marginal": 1.0,
    "level_min_db": 1.5,
    "level_coherent": 1.0,
    "new_only": 0.0,
    "count_pow": 0.5,
    "outside_logprior": -2.0,
    "zone_radius_m": 1.5,
    "p_enter": 0.7,
    "margin": 0.15,
    "dwell_s": 0.0,
    "zone_mode": 1,
    "switch_m": 0.8,
    "switch_dwell_s": 4.0,
    "switch_sd": 2.5,
    "min_mass": 0.3,
    "drift_prior_db": 3.0,
    "emitter_prior_db": 6.0,
    "emitter_q_db2": 0.002,
    "drift_q_db2": 0.002,
    "drift_floor_db": 4.0,
    "stale_s": 10.0,
    "update_s": 1.0,
    "bandwidth_m": 0.7,
    "shrink": 0.5,
    "map_var_frac": 0.16,
    "default_sigma_db": 6.0,
    "height_m": 0.0,
    "knn_weight": 0.0,
    "knn_k": 5,
    "knn_sigma_m": 1.0,
    # The zone follows a second, agile filter (white acceleration walk_accel_mps2) while the
    # steady one says the emitter walks (>= walk_mps): README "Zone while walking".
    "walk_accel_mps2": 0.1,
    "walk_mps": 0.2,
}


@dataclass(frozen=True, slots=True)
class Columns:
    """Readings as columns, in the order a list of (ts, scanner, rssi) would hold them: live
    ingest keeps a second's readings packed and hands them over without a tuple per reading."""

    ts: np.ndarray  # float64
    rssi: np.ndarray  # float64
    which: np.ndarray  # int64: each reading's scanner, as an index into names
    names: list[str]

    def __len__(self) -> int:
        return int(self.ts.size)

    @classmethod
    def of(cls, readings: list[tuple[float, str, float]]) -> Columns:
        """Columns of (ts, scanner, rssi) readings, in their order."""
        if not readings:
            empty = np.empty(0)
            return cls(empty, empty, np.empty(0, dtype=np.int64), [])
        times, scanners, levels = zip(*readings, strict=True)
        slot: dict[str, int] = {}
        which = [slot.setdefault(n if type(n) is str else str(n), len(slot)) for n in scanners]
        return cls(
            np.array(times, dtype=np.float64),
            np.array(levels, dtype=np.float64),
            np.array(which, dtype=np.int64),
            list(slot),
        )


Readings = list[tuple[float, str, float]] | Columns


@dataclass(frozen=True)
class Runtime:
    """Everything a tracking step needs, precomputed once per venue model."""

    scanners: tuple[str, ...]
    index: dict[str, int]
    grid: Grid
    mu: np.ndarray
    sigma: np.ndarray
    cell_inv_sigma: np.ndarray
    cell_log_ratio: np.ndarray
    cell_logprior: np.ndarray
    zones: dict[str, BaseGeometry]
    zone_radius: dict[str, float]
    emitter_offsets: dict[str, float]
    params: dict[str, float]
    ref_pos: np.ndarray
    ref_rssi: np.ndarray
    zone_array: np.ndarray
    # Per-step constants, so a step does not rebuild them: contiguous cell coordinates and the
    # zone index shifted for bincount (-1, outside every zone, becomes bin 0).
    cell_x: np.ndarray
    cell_y: np.ndarray
    zone_bin: np.ndarray


def build_runtime(
    scanners: dict[str, tuple[float, float]],
    zones: dict[str, BaseGeometry],
    calibration: dict[str, Any],
) -> Runtime:
    """Precompute the grid and the expected RSSI of every scanner at every cell."""
    params = {**DEFAULTS, **calibration.get("params", {})}
    names = tuple(scanners)
    grid = build(zones, scanners, step=params["grid_step"])
    pos = np.array([scanners[s] for s in names], dtype=float).reshape(-1, 2)
    pl = calibration.get("pathloss", {})
    a = np.array([pl.get(s, [pathloss.DEFAULT_RSSI_1M])[0] for s in names], dtype=float)
    n = np.array([pl.get(s, [0, pathloss.DEFAULT_N])[1] for s in names], dtype=float)
    sigma = np.array([pl.get(s, [0, 0, params["default_sigma_db"]])[2] for s in names], dtype=float)
    gains = [pl.get(s, [])[3:] for s in names]
    harm = max((len(g) for g in gains), default=0) // 2
    gain = np.array([list(g) + [0.0] * (2 * harm - len(g)) for g in gains], dtype=float)
    gain = gain.reshape(len(names), 2 * harm)
    mu = _expected(grid.cells, pos, a, n, params["height_m"], gain)
    fp = calibration.get("fingerprints")
    ref_pos = np.empty((0, 2))
    ref = np.empty((0, len(names)))
    if fp and fp.get("pos"):
        ref_pos = np.array(fp["pos"], dtype=float)
        cols = [fp["scanners"].index(s) if s in fp["scanners"] else -1 for s in names]
        raw = np.array([[np.nan if v is None else v for v in row] for row in fp["rssi"]], float)
        ref = np.column_stack([raw[:, c] if c >= 0 else np.full(len(raw), np.nan) for c in cols])
        resid = ref - _expected(ref_pos, pos, a, n, params["height_m"], gain)
        support = np.zeros_like(mu)
        rmap = residual_map(
            grid.cells, ref_pos, resid, params["bandwidth_m"], params["shrink"], support
        )
        mu = mu + rmap
        if params["map_var_frac"] > 0:
            # Where nobody walked the map is only path loss: its error adds to the reading noise,
            # so an extrapolated cell is judged less sharply than a surveyed one (variance
            # growing with the kernel's shrinkage towards path loss).
            # Relative to the scanner's own scatter, so a survey that showed little scatter is
            # not overruled by the extrapolated cells around it.
            extra = params["map_var_frac"] * params["shrink"] / (support + params["shrink"])
            cell_sigma = np.maximum(sigma, 1.0)[None, :] * np.sqrt(1.0 + extra)
    if not (fp and fp.get("pos")) or params["map_var_frac"] <= 0:
        cell_sigma = np.broadcast_to(np.maximum(sigma, 1.0)[None, :], mu.shape).copy()
    lp = np.where(grid.zone_index >= 0, 0.0, params["outside_logprior"]) if zones else None
    radius = {
        z: float(calibration.get("zone_max_radius", {}).get(z, params["zone_radius_m"]))
        for z in zones
    }
    return Runtime(
        scanners=names,
        index={s: i for i, s in enumerate(names)},
        grid=grid,
        mu=mu.astype(np.float32),
        sigma=np.maximum(sigma, 1.0),
        cell_inv_sigma=(1.0 / cell_sigma).astype(np.float32),
        cell_log_ratio=np.log(cell_sigma / np.maximum(sigma, 1.0)[None, :]).astype(np.float32),
        cell_logprior=lp if lp is not None else np.zeros(grid.cells.shape[0]),
        zones=dict(zones),
        zone_radius=radius,
        emitter_offsets=dict(calibration.get("emitter_offsets", {})),
        params=params,
        ref_pos=ref_pos,
        ref_rssi=ref,
        zone_array=np.array([zones[z] for z in grid.zone_names], dtype=object),
        cell_x=np.ascontiguousarray(grid.cells[:, 0]),
        cell_y=np.ascontiguousarray(grid.cells[:, 1]),
        zone_bin=grid.zone_index + 1,
    )


def _expected(
    points: np.ndarray,
    pos: np.ndarray,
    a: np.ndarray,
    n: np.ndarray,
    height: float = 0.0,
    gain: np.ndarray | None = None,
) -> np.ndarray:
    dx = points[:, None, 0] - pos[None, :, 0]
    dy = points[:, None, 1] - pos[None, :, 1]
    # Scanners hang above the emitters: the radio distance never drops below the height gap.
    d = np.hypot(np.hypot(dx, dy), height)
    out = pathloss.expected_rssi(d, 0.0, 1.0) * n[None, :] + a[None, :]
    if gain is not None and gain.shape[1]:
        basis = pathloss.directional(np.arctan2(dy, dx), gain.shape[1] // 2)
        out = out + np.einsum("psk,sk->ps", basis, gain)
    return out


def step(
    rt: Runtime, state: dict[str, Any] | None, readings: Readings, now: float
) -> tuple[dict[str, Any], tuple[float, float, str | None] | None]:
    """Advance one emitter's state to `now`; returns the new state and (x, y, zone) or None."""
    p = rt.params
    st: dict[str, Any] = dict(state or {})
    heard = st.get("h")
    # Filter entries keep their reading time as an age before `h` (short JSON, not an epoch).
    filt: dict[str, list[float]] = {
        k: [v[0], heard - v[1]] for k, v in st.get("f", {}).items() if heard is not None
    }
    sums: dict[str, list[float]] = {k: list(v) for k, v in st.get("q", {}).items()}
    if readings:
        heard = _fold(rt, filt, sums, heard, readings, p["tau_s"])
    filt = {k: v for k, v in filt.items() if now - v[1] <= p["stale_s"]}
    if heard is not None:
        heard = round(heard, 3)
    st["f"] = {k: [round(v[0], 2), round(heard - v[1], 2)] for k, v in filt.items()}
    st["h"] = heard
    last_t = st.get("t")
    if last_t is not None and now - float(last_t) < p["update_s"] and "e" in st:
        # Ingest may call once per scanner batch: fold the readings in, update the position once
        # per update_s, so the estimate does not depend on how readings were batched.
        st["q"] = {k: [round(v[0], 2), v[1]] for k, v in sums.items()}
        e = st["e"]
        return st, (e[0], e[1], e[2] or None)
    st.pop("q", None)
    counts = None
    if p["new_only"]:
        # Each reading counts once: a scanner silent this step adds nothing rather than
        # repeating its last value as if it were new evidence.
        obs = {k: v[0] / v[1] for k, v in sums.items()}
        counts = np.array([sums[k][1] for k in obs], dtype=float)
    else:
        obs = filtering.fresh(filt, now, p["max_age_s"])
    if heard is None or now - heard > p["stale_s"] or not obs:
        if heard is None or now - heard > p["stale_s"]:
            for key in ("m", "P", "am", "aP", "t", "z", "c", "e"):
                st.pop(key, None)
            return st, None
        e = st.get("e")
        return st, (e[0], e[1], e[2] or None) if e else None

    idx = np.array([rt.index[s] for s in obs], dtype=int)
    val = np.array(list(obs.values()), dtype=float)
    offsets = np.zeros(len(rt.scanners))
    off_var = np.full(len(rt.scanners), p["drift_prior_db"] ** 2)
    for s, ov in st.get("o", {}).items():
        if s in rt.index:
            offsets[rt.index[s]], off_var[rt.index[s]] = ov[0], ov[1]
    own = st.get("k", [0.0, p["emitter_prior_db"] ** 2])
    common = float(rt.emitter_offsets.get(str(st.get("type", "")), 0.0)) + float(own[0])
    target = (val - offsets[idx] - common).astype(np.float32)
    if counts is None:
        weights = np.full(idx.size, float(p["temper"]))  # temper * 1 ** count_pow
    else:
        weights = p["temper"] * counts ** p["count_pow"]
    level_sd = p["common_sigma_db"]
    if (
        p["level_marginal"]
        and p["emitter_prior_db"] > 0
        and p["drift_prior_db"] > 0
        and idx.size >= 3
    ):
        # Until this emitter's own level is learnt, let each cell explain the shared offset
        # that the level's remaining uncertainty allows: a phone 6 dB louder than the survey's
        # must not be pulled towards the scanners while the filter finds that out, nor a
        # walker at a wall be taken for a quieter phone in the middle. Only while the level is
        # being learnt (drift on, >= 3 scanners: one scanner cannot tell level from distance),
        # and off once it is known to level_min_db (then the level is informative).
        level_sd = max(level_sd, float(np.sqrt(own[1])))
    coef = np.zeros(idx.size, dtype=np.float32)
    pen_scale = 0.0
    if level_sd > p["level_min_db"]:
        # Emitters differ in transmit power and body shadowing moves every scanner alike: let
        # each cell explain a shared offset, shrunk towards 0 with sd level_sd, so the shape of
        # the RSSI vector matters more than its level.
        prec = (1.0 / rt.sigma[idx] ** 2).astype(np.float32)
        coef = prec / -(prec.sum() + level_sd**-2)
        pen_scale = p["temper"] * 0.5 / level_sd**2
    # Huber loss per reading, quadratic near the map, linear in the multipath tails; per-cell
    # scale (map uncertainty) comes with its log-normaliser, so vague cells pay for it. One
    # compiled pass over the cells (kernels.py); each reading's loss is kept for the drift step.
    per = np.empty((rt.mu.shape[0], idx.size), dtype=np.float32)
    logpost = kernels.likelihood(
        rt.mu,
        rt.cell_inv_sigma,
        rt.cell_log_ratio,
        rt.cell_logprior,
        idx,
        target,
        weights.astype(np.float32),
        coef,
        pen_scale,
        p["huber_k"],
        per,
    )
    if p["knn_weight"] > 0 and rt.ref_pos.shape[0] >= p["knn_k"]:
        logpost = logpost + _knn_term(rt, idx, val - offsets[idx] - common)
    dt = 0.0 if last_t is None else max(now - float(last_t), 0.0)
    gate = _NO_GATE
    if p["adapt_gate"] > 0 and "m" in st and "P" in st:
        # A manoeuvre (turn, start, stop) shows as radio evidence far outside the predicted
        # spread: the likelihood's own mean and spread let both motion filters widen their
        # prior then, so a smooth walk can use a stiff motion model.
        gate = np.array(kernels.moments(logpost, rt.cell_x, rt.cell_y, SPAN)[:5])
    walk = logpost.copy() if p["walk_accel_mps2"] > 0 else None
    steady = (st.get("m"), st.get("P"))
    m4, p4, mean, cov, wts = _filter(rt, *steady, logpost, dt, p["accel_mps2"], gate)
    st["m"] = [round(v, 4) for v in m4.tolist()]
    st["P"] = motion.pack(p4)
    st["t"] = now

    # Whose posterior the zone follows: a person walking through a door changes course at
    # once, which the steady prior (right for the position along a walk) only follows seconds
    # later; a person standing still, as in a doorway, keeps the steady prior's zone, so the
    # agile filter's wander cannot flap it. Both filters run all the time: an agile filter
    # started only once the steady one sees a walk would inherit its lag.
    zmean, zcov, zwts = mean, cov, wts
    if walk is not None:
        agile = (st.get("am"), st.get("aP"))
        am, ap, amean, acov, awts = _filter(rt, *agile, walk, dt, p["walk_accel_mps2"], gate)
        st["am"] = [round(v, 4) for v in am.tolist()]
        st["aP"] = motion.pack(ap)
        if math.hypot(float(m4[2]), float(m4[3])) >= p["walk_mps"]:
            zmean, zcov, zwts = amean, acov, awts
    else:
        # A model without the agile filter must not carry a stale one into the state.
        st.pop("am", None)
        st.pop("aP", None)
    zone = None
    if rt.zones:
        current = st.get("z")
        mass = np.bincount(rt.zone_bin, weights=zwts, minlength=len(rt.grid.zone_names) + 1)
        if p["zone_mode"] == 1:
            dist = shapely.distance(rt.zone_array, shapely.Point(float(zmean[0]), float(zmean[1])))
            zone, pending = hysteresis.decide_spatial(
                current if "z" in st else None,
                st.get("c"),
                dict(zip(rt.grid.zone_names, dist.tolist(), strict=True)),
                _zone_mass(rt, mass),
                dt,
                # An unsure position must move further before the zone follows it.
                switch_m=max(
                    p["switch_m"], p["switch_sd"] * math.sqrt((zcov[0, 0] + zcov[1, 1]) / 2)
                ),
                dwell_s=p["switch_dwell_s"],
                min_mass=p["min_mass"],
                p_enter=p["p_enter"],
            )
        else:
            zone, pending = hysteresis.decide(
                current if "z" in st else None,
                st.get("c"),
                _zone_probs(rt, mass, zmean),
                dt,
                p_enter=p["p_enter"],
                margin=p["margin"],
                dwell_s=p["dwell_s"],
            )
        st["z"] = zone
        if pending:
            st["c"] = [pending[0], round(pending[1], 2)]
        else:
            st.pop("c", None)
        zone = zone or None

    if p["drift_prior_db"] > 0:
        # Judge each scanner against the position the others give: otherwise an offset can
        # talk the estimate into a wrong place and then confirm itself there.
        seen, spread = kernels.leave_one_out(
            logpost, per, rt.cell_log_ratio, rt.mu, idx, weights, wts
        )
        noise = rt.sigma[idx] ** 2
        if counts is not None:
            noise = noise / counts
        noise = noise + spread + p["drift_floor_db"] ** 2
        if p["emitter_prior_db"] > 0 and idx.size >= 3:
            # This emitter's own transmit power (phones differ by up to ~10 dB): a level shared
            # by all scanners, learnt before the per-scanner offsets take the remainder.
            coherent = 0.0
            if p["level_coherent"]:
                # A position error moves every scanner's expected level the same way (an
                # emitter at the wall looks like a quieter one in the middle): that part of the
                # uncertainty does not average out over scanners, so it slows the level down.
                coherent = kernels.level_spread(rt.mu, idx, wts, 1.0 / noise / np.sum(1.0 / noise))
            shift, own_var = drift.common(
                val - seen - common - offsets[idx],
                noise,
                min(float(own[1]) + p["emitter_q_db2"] * dt, p["emitter_prior_db"] ** 2),
                coherent,
            )
            common += shift
            st["k"] = [round(float(own[0]) + shift, 2), round(own_var, 3)]
        var = np.minimum(off_var[idx] + p["drift_q_db2"] * dt, p["drift_prior_db"] ** 2)
        offsets[idx], off_var[idx] = drift.kalman(offsets[idx], var, val, seen + common, noise)
        # One conversion to Python floats for the whole vector, not two per scanner.
        learnt = np.flatnonzero(off_var < p["drift_prior_db"] ** 2)
        st["o"] = {
            rt.scanners[i]: [o, v]
            for i, o, v in zip(
                learnt.tolist(),
                np.round(offsets[learnt], 2).tolist(),
                np.round(off_var[learnt], 3).tolist(),
                strict=True,
            )
        }
    st["e"] = [round(float(mean[0]), 3), round(float(mean[1]), 3), zone or ""]
    return st, (float(mean[0]), float(mean[1]), zone)


def _filter(
    rt: Runtime,
    prev: list[float] | None,
    packed: list[float] | None,
    logpost: np.ndarray,
    dt: float,
    accel: float,
    gate: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One constant-velocity filter's step: its prior (from the last state `prev` and its packed
    covariance) added to the likelihood in place; the posterior's state, mean, covariance and
    cell weights (kernels.motion_step: motion.predict, the manoeuvre gate, motion.condition)."""
    p = rt.params
    has_prev = prev is not None and packed is not None and len(prev) == 4
    return kernels.motion_step(
        np.array(prev if has_prev else _NO_STATE, dtype=float),
        motion.unpack(packed) if has_prev else _NO_COV,
        has_prev,
        dt,
        float(accel),
        float(p["damping_s"]),
        gate,
        float(p["adapt_gate"]),
        logpost,
        rt.cell_x,
        rt.cell_y,
        SPAN,
        rt.grid.step**2 / 12.0,
        float(p["speed_mps"]) ** 2,
    )


def _knn_term(rt: Runtime, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Fingerprint kNN in signal space, as a Gaussian bump around the neighbours' positions."""
    p = rt.params
    ref = rt.ref_rssi[:, idx]
    both = np.isfinite(ref)
    shared = both.sum(axis=1)
    d2 = np.where(both, (ref - val[None, :]) ** 2, 0.0).sum(axis=1) / np.maximum(shared, 1)
    d2[shared < min(3, idx.size)] = np.inf
    k = int(p["knn_k"])
    near = np.argpartition(d2, k - 1)[:k]
    near = near[np.isfinite(d2[near])]
    if near.size == 0:
        return np.zeros(rt.grid.cells.shape[0])
    w = 1.0 / (np.sqrt(d2[near]) + 1.0)
    w /= w.sum()
    centre = w @ rt.ref_pos[near]
    spread = float(w @ ((rt.ref_pos[near] - centre) ** 2).sum(axis=1)) + p["knn_sigma_m"] ** 2
    dist2 = ((rt.grid.cells - centre) ** 2).sum(axis=1)
    return -p["knn_weight"] * 0.5 * dist2 / spread


def _zone_mass(rt: Runtime, mass: np.ndarray) -> dict[str, float]:
    """Posterior mass per zone (bin 0 of `mass`: outside every zone) by name."""
    names = rt.grid.zone_names
    out = mass.tolist()
    return {hysteresis.NO_ZONE: out[0]} | {name: out[k + 1] for k, name in enumerate(names)}


def _zone_probs(rt: Runtime, mass: np.ndarray, mean: np.ndarray) -> dict[str, float]:
    """Zone probabilities from the zone masses, within each zone's maximum radius."""
    names = rt.grid.zone_names
    probs = {hysteresis.NO_ZONE: float(mass[0])}
    pt = shapely.points(float(mean[0]), float(mean[1]))
    for k, name in enumerate(names):
        # Per-zone maximum radius: a zone far from the estimate cannot claim it.
        if float(shapely.distance(rt.zones[name], pt)) > rt.zone_radius[name]:
            probs[hysteresis.NO_ZONE] += float(mass[k + 1])
        else:
            probs[name] = float(mass[k + 1])
    return probs


def _fold(
    rt: Runtime,
    filt: dict[str, list[float]],
    sums: dict[str, list[float]],
    heard: float | None,
    readings: Readings,
    tau: float,
) -> float | None:
    """Fold readings, in time order, into the per-scanner filters and step sums; returns `heard`.

    filtering.clipped and filtering.update, compiled (kernels.fold_filters): this runs once per
    sighting in live ingest, where a second of one emitter holds ~125 readings in
    bench/ingest.py and the loop in Python cost ~50 us of a ~330 us step."""
    if not len(readings):
        return heard
    cols = readings if isinstance(readings, Columns) else Columns.of(readings)
    index = rt.index
    lut = np.array([index.get(n, -1) for n in cols.names], dtype=np.int64)
    ts = cols.ts
    n = len(rt.scanners)
    value, last = np.zeros(n), np.zeros(n)
    state = np.zeros(n, dtype=np.int8)
    acc = np.zeros((n, 2))
    for name, entry in filt.items():
        s = index.get(name)
        if s is not None:
            value[s], last[s], state[s] = float(entry[0]), float(entry[1]), 1
    for name, entry in sums.items():
        s = index.get(name)
        if s is not None:
            acc[s, 0], acc[s, 1] = entry[0], entry[1]
    seen = np.empty(n, dtype=np.int64)
    newest, n_seen = kernels.fold_filters(
        ts,
        cols.rssi,
        lut[cols.which],
        np.argsort(ts, kind="stable"),
        value,
        last,
        state,
        acc,
        seen,
        max(tau, 1e-6),
        filtering.CLIP_DB,
    )
    # New scanners join the dicts in the order they were first heard, as state JSON keeps it.
    for s in seen[:n_seen].tolist():
        name = rt.scanners[s]
        filt[name] = [float(value[s]), float(last[s])]
        sums[name] = [float(acc[s, 0]), float(acc[s, 1])]
    if newest != -np.inf and (heard is None or newest > heard):
        heard = float(newest)
    return heard
