"""k-anonymisation: NCP-driven cuts into blocks, k-member clustering, local moves, suppression.

Mondrian picks the widest attribute and cuts at its median; on Adult that leaves NCP ~0.10 at
k=5.  Here (1) the table is cut top-down into blocks of a few thousand rows: every attribute is
tried, every cut position along it is scored by the exact NCP the two halves would have (prefix
and suffix scans, vectorised over all attributes at once), and the cheapest is taken; categorical
values are ordered depth-first along their hierarchy so a cut groups siblings, i.e. relaxed
multi-way cuts along hierarchy nodes.  (2) Inside each block, greedy k-member clustering builds
groups of >= k rows, all blocks stepped in lockstep.  (3) Single tuples move to the group where
they cost least (local search).  (4) The suppression budget goes to outliers whose removal saves
more NCP than a suppressed row costs.  Each group is recoded to the lowest common ancestor
(categorical) or tight [min,max] (numeric) of its own rows: local recoding.  Measured on Adult
(bench/anonymize.py) at k=5: top-down cuts alone 0.074 -> with tie-aware cuts 0.069 -> + local
moves 0.061 -> k-member in 450-row blocks + moves 0.058 -> 3000-row blocks 0.053.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analytics.hierarchy import ROOT, Hierarchy

SUPPRESSED = ROOT
# rows per block of clustering; on Adult k=5, blocks of 450/1500/3000/6000 rows give NCP
# 0.058/0.054/0.053/0.052, and k-member time grows with the block (0.3/0.7/1.1/2.5 s CPU)
BLOCK_ROWS = 3000


class AnonymizeError(ValueError):
    """Input that cannot be anonymised as asked."""


@dataclass
class _Categorical:
    name: str
    labels: list[str]  # node id -> label
    ncp: np.ndarray  # node id -> NCP of generalising to it
    codes: np.ndarray  # rows x depth: node id at depth 1..depth (root omitted, leaf repeated)
    order: np.ndarray  # rows: rank of the leaf in depth-first order of the hierarchy
    anc: np.ndarray  # node id x depth: its ancestor at each depth below the root, -1 below it


@dataclass
class _Encoded:
    n: int
    weights: np.ndarray  # unique QI tuple -> number of rows
    inverse: np.ndarray  # row -> unique QI tuple
    cats: list[_Categorical]
    nums: list[tuple[str, np.ndarray, float]]  # name, values per tuple, observed range
    codes: np.ndarray  # tuples x cats x depth: node id per level below the root
    level_ncp: np.ndarray  # tuples x cats x (depth+1): NCP if the LCA sits at that depth
    keys: np.ndarray  # attributes x tuples: sort key for cuts
    tiebreak: np.ndarray  # tuple -> rank in a global order over all attributes


@dataclass
class Result:
    """An anonymised table plus the figures a DPO checks it with."""

    table: pd.DataFrame
    metrics: dict[str, float | int] = field(default_factory=dict)


def _encode_categorical(name: str, values: np.ndarray, hierarchy: Hierarchy) -> _Categorical:
    leaves = hierarchy.leaves
    depth = max(len(line) for line in hierarchy.lines.values()) - 1
    # nodes are keyed by their full path so a label reused under two parents stays two nodes
    node_ids: dict[tuple[str, ...], int] = {}
    labels: list[str] = []
    leaf_count: list[int] = []
    leaf_paths: dict[str, list[int]] = {}
    dfs_rank: dict[str, int] = {}
    for leaf in leaves:
        path_down = tuple(reversed(hierarchy.ancestors(leaf)))  # '*' first
        ids = []
        for d in range(1, len(path_down)):
            key = path_down[: d + 1]
            if key not in node_ids:
                node_ids[key] = len(labels)
                labels.append(path_down[d])
                leaf_count.append(0)
            leaf_count[node_ids[key]] += 1
            ids.append(node_ids[key])
        ids += [ids[-1]] * (depth - len(ids))
        leaf_paths[leaf] = ids
    for rank, leaf in enumerate(
        sorted(leaves, key=lambda leaf: [labels[i] for i in leaf_paths[leaf]])
    ):
        dfs_rank[leaf] = rank
    total = len(leaves)
    ncp = (np.asarray(leaf_count, dtype=float) - 1) / max(total - 1, 1)
    missing = sorted(set(values) - set(leaves))
    if missing:
        raise AnonymizeError(f"column {name}: value {missing[0]!r} is not in its hierarchy")
    uniq, inv = np.unique(values, return_inverse=True)
    table = np.asarray([leaf_paths[v] for v in uniq], dtype=np.int32).reshape(len(uniq), depth)
    ranks = np.asarray([dfs_rank[v] for v in uniq], dtype=np.int64)
    anc = np.full((len(labels), depth), -1, dtype=np.int32)
    for key, node in node_ids.items():
        for d in range(1, len(key)):
            anc[node, d - 1] = node_ids[key[: d + 1]]
    return _Categorical(name, labels, ncp, table[inv], ranks[inv], anc)


@dataclass
class _LcaTables:
    """Per categorical attribute, LCA and its NCP for every (node, node) pair, flattened."""

    base: np.ndarray  # attribute -> offset of its table
    size: np.ndarray  # attribute -> nodes + 1 (the root is the last id)
    lca: np.ndarray  # flat: node id of LCA(u, v)
    ncp: np.ndarray  # flat: NCP of LCA(u, v)
    leaf: np.ndarray  # cats x tuples: node id of the tuple's own value


MAX_LCA_CELLS = 4_000_000


def _lca_tables(enc: _Encoded) -> _LcaTables | None:
    """Pairwise LCA tables, or None when a hierarchy is too large for them."""
    sizes = np.array([len(cat.labels) + 1 for cat in enc.cats], dtype=np.int64)
    if int((sizes**2).sum()) > MAX_LCA_CELLS:
        return None
    lcas, ncps = [], []
    for cat, size in zip(enc.cats, sizes, strict=True):
        anc = np.vstack([cat.anc, np.full((1, cat.anc.shape[1]), -1, dtype=np.int32)])
        agree = (anc[:, None, :] == anc[None, :, :]) & (anc[:, None, :] >= 0)
        depth = agree.sum(axis=2)  # size x size
        node = np.where(depth > 0, anc[np.arange(size)[:, None], np.maximum(depth - 1, 0)], -1)
        node = np.where(node < 0, size - 1, node)  # root
        lcas.append(node.ravel())
        ncps.append(np.append(cat.ncp, 1.0)[node].ravel())
    base = np.cumsum([0, *(sizes**2)])[:-1]
    leaf = np.array([cat.codes[:, -1] for cat in enc.cats], dtype=np.int32).reshape(
        len(enc.cats), len(enc.weights)
    )
    lca = np.concatenate(lcas) if lcas else np.zeros(0, dtype=np.int64)
    ncp = np.concatenate(ncps) if ncps else np.zeros(0)
    return _LcaTables(base, sizes, lca, ncp, leaf)


def _encode(
    df: pd.DataFrame, qi: list[str], hierarchies: dict[str, Hierarchy], numeric: set[str]
) -> _Encoded:
    cat_names = [c for c in qi if c not in numeric]
    num_names = [c for c in qi if c in numeric]
    # identical QI tuples are never worth separating, so work on unique tuples with weights
    inverse = df.groupby(qi, sort=False, dropna=False).ngroup().to_numpy()
    first = np.full(inverse.max() + 1, len(df), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(df)))
    uniq = df.loc[first, qi]
    weights = np.bincount(inverse, minlength=len(uniq)).astype(np.int64)
    cats = [
        _encode_categorical(c, uniq[c].astype(str).to_numpy(), hierarchies[c]) for c in cat_names
    ]
    nums = []
    for c in num_names:
        values = pd.to_numeric(uniq[c], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).any():
            raise AnonymizeError(f"column {c}: non-numeric value in a numeric quasi-identifier")
        if not np.isfinite(values).all():
            bad = uniq[c].to_numpy()[~np.isfinite(values)][0]
            raise AnonymizeError(f"column {c}: value {bad!r} is not a finite number")
        with np.errstate(over="ignore"):
            span = float(values.max() - values.min())
        if not np.isfinite(span):
            # every NCP is a width over this span: an infinite span makes them all NaN
            raise AnonymizeError(f"column {c}: values too far apart (their range overflows)")
        nums.append((c, values, span if span > 0 else 1.0))
    m = len(uniq)
    depth = max((cat.codes.shape[1] for cat in cats), default=1)
    # pad every hierarchy to one depth by repeating its leaf, so agreement counts stay exact
    codes = np.empty((m, len(cats), depth), dtype=np.int32)
    level_ncp = np.zeros((m, len(cats), depth + 1))
    for a, cat in enumerate(cats):
        d = cat.codes.shape[1]
        codes[:, a, :d] = cat.codes
        codes[:, a, d:] = cat.codes[:, -1:]
        level_ncp[:, a, 0] = 1.0
        level_ncp[:, a, 1 : d + 1] = cat.ncp[cat.codes]
    keys = np.stack([cat.order.astype(float) for cat in cats] + [v for _, v, _ in nums])
    keys = keys.reshape(-1, m)
    tiebreak = np.empty(m)
    # ties broken by every attribute in the given order, so a cut inside a tie still groups alike
    tiebreak[np.lexsort(keys[::-1])] = np.arange(m)
    return _Encoded(len(df), weights, inverse, cats, nums, codes, level_ncp, keys, tiebreak)


def _scan_cost(enc: _Encoded, orders: np.ndarray) -> np.ndarray:
    """Cost (rows x summed NCP) of every prefix of each ordering: orders is attrs x n."""
    w = np.cumsum(enc.weights[orders], axis=1)
    total = np.zeros(orders.shape, dtype=float)
    if enc.cats:
        c = enc.codes[orders]  # A x n x C x D
        same = np.logical_and.accumulate(c == c[:, :1], axis=1)
        # depth of the LCA = how many levels still agree with the first row
        depth = same.sum(axis=3)  # A x n x C
        first = enc.level_ncp[orders[:, 0]]  # A x C x (D+1)
        a_idx = np.arange(orders.shape[0])[:, None, None]
        c_idx = np.arange(len(enc.cats))[None, None, :]
        total += first[a_idx, c_idx, depth].sum(axis=2)
    for _, values, span in enc.nums:
        v = values[orders]
        total += (np.maximum.accumulate(v, axis=1) - np.minimum.accumulate(v, axis=1)) / span
    return total * w


def _best_cut(enc: _Encoded, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Split idx (tuple ids) at the cheapest valid cut over all attributes, or None."""
    keys = enc.keys[:, idx]
    orders_local = np.argsort(keys * len(enc.weights) + enc.tiebreak[idx], axis=1)
    orders = idx[orders_local]
    both = _scan_cost(enc, np.concatenate([orders, orders[:, ::-1]]))
    pre, suf = both[: len(orders)], both[len(orders) :, ::-1]
    w = np.cumsum(enc.weights[orders], axis=1)
    n_total = w[:, -1:]
    # cut after position i: left = 0..i, right = i+1..
    valid = (w[:, :-1] >= k) & (n_total - w[:, :-1] >= k)
    if not valid.any():
        return None
    cost = np.where(valid, pre[:, :-1] + suf[:, 1:], np.inf)
    a, i = np.unravel_index(np.argmin(cost), cost.shape)
    return orders[a, : i + 1], orders[a, i + 1 :]


def _partition(enc: _Encoded, k: int, idx: np.ndarray, stop: int = 0) -> list[np.ndarray]:
    """Top-down greedy partitioning of tuples idx into groups of weight >= k (or <= stop)."""
    done: list[np.ndarray] = []
    stack = [idx]
    while stack:
        idx = stack.pop()
        weight = enc.weights[idx].sum()
        if weight < 2 * k or weight <= stop:
            done.append(idx)
            continue
        cut = _best_cut(enc, idx, k)
        if cut is None:
            done.append(idx)
        else:
            stack.extend(cut)
    return done


def _summaries(enc: _Encoded, groups: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per group: weight, cost, LCA codes (-1 below the LCA) and numeric lo/hi."""
    g = len(groups)
    n_cat, depth = enc.codes.shape[1:]
    weight = np.array([enc.weights[idx].sum() for idx in groups], dtype=np.int64)
    cost = np.zeros(g)
    lca = np.full((g, n_cat, depth), -1, dtype=np.int32)
    lo = np.zeros((g, len(enc.nums)))
    hi = np.zeros((g, len(enc.nums)))
    sizes = np.array([len(idx) for idx in groups])
    # batch groups of equal size so the work is a handful of array operations, not one per group
    for m in np.unique(sizes):
        which = np.flatnonzero(sizes == m)
        members = np.stack([groups[i] for i in which])  # b x m
        c = enc.codes[members]  # b x m x C x D
        same = (c == c[:, :1]).all(axis=1)
        lca[which] = np.where(same, c[:, 0], -1)
        d = same.sum(axis=2)
        first = enc.level_ncp[members[:, 0]]  # b x C x (D+1)
        per_row = np.take_along_axis(first, d[:, :, None], axis=2)[:, :, 0].sum(axis=1)
        for j, (_, values, span) in enumerate(enc.nums):
            v = values[members]
            lo[which, j] = v.min(axis=1)
            hi[which, j] = v.max(axis=1)
            per_row += (hi[which, j] - lo[which, j]) / span
        cost[which] = per_row * weight[which]
    return weight, cost, lca, lo, hi


def _leave_one_out(enc: _Encoded, groups: list[np.ndarray]) -> list[np.ndarray]:
    """For every group, its cost without each of its tuples (inf where that breaks nothing)."""
    out: list[np.ndarray] = [np.zeros(0)] * len(groups)
    sizes = np.array([len(idx) for idx in groups])
    for m in np.unique(sizes):
        if m < 2:
            continue
        which = np.flatnonzero(sizes == m)
        members = np.stack([groups[i] for i in which])  # b x m
        keep = ~np.eye(m, dtype=bool)
        rest = members[:, None, :].repeat(m, axis=1)[:, keep].reshape(len(which) * m, m - 1)
        costs = _scan_cost(enc, rest)[:, -1].reshape(len(which), m)
        for row, i in enumerate(which):
            out[i] = costs[row]
    return out


def _add_cost(
    enc: _Encoded,
    t: np.ndarray,
    summary: tuple[np.ndarray, ...],
    tables: _LcaTables | None,
) -> np.ndarray:
    """Cost increase of adding each tuple t to each summarised group (len(t) x groups)."""
    weight, cost, lca, lo, hi = summary
    if tables is not None:
        # the group's LCA node per attribute is its deepest agreed level (root when none)
        depth = (lca >= 0).sum(axis=2)  # G x C
        node = np.take_along_axis(lca, np.maximum(depth - 1, 0)[..., None], 2)[..., 0]
        node = np.where(depth > 0, node, tables.size - 1)
        per_row = np.zeros((len(t), len(weight)))
        for c in range(node.shape[1]):
            offset = tables.base[c] + node[:, c].astype(np.int64) * tables.size[c]
            per_row += tables.ncp[offset[None, :] + tables.leaf[c][t][:, None]]
    else:
        # the new LCA is the tuple's own ancestor at the depth where it still meets the group's
        d = (lca[None] == enc.codes[t][:, None]).sum(axis=3)  # t x G x C
        lv = enc.level_ncp[t]  # t x C x (D+1)
        per_row = np.take_along_axis(lv[:, None].repeat(len(weight), 1), d[..., None], 3)
        per_row = per_row[..., 0].sum(axis=2)
    for j, (_, values, span) in enumerate(enc.nums):
        v = values[t][:, None]
        per_row += (np.maximum(hi[None, :, j], v) - np.minimum(lo[None, :, j], v)) / span
    return per_row * (weight[None, :] + enc.weights[t][:, None]) - cost[None, :]


def _kmember(
    enc: _Encoded, tables: _LcaTables, blocks: list[np.ndarray], k: int
) -> list[list[np.ndarray]]:
    """Greedy k-member clustering (Byun et al. 2007) run in lockstep over all blocks.

    Each block repeatedly seeds a cluster with the tuple costliest to add to its last cluster and
    grows it with the cheapest tuple until it weighs k; leftovers join their cheapest cluster.
    Stepping every block at once keeps the Python loop as long as the largest block, not the sum,
    and unplaced tuples are kept at the front of each row so the arrays shrink as blocks fill.
    """
    b_count, width = len(blocks), max(len(b) for b in blocks)
    idx = np.zeros((b_count, width), dtype=np.intp)
    count = np.array([len(b) for b in blocks])
    for i, block in enumerate(blocks):
        idx[i, : len(block)] = block
    left = np.array([enc.weights[b].sum() for b in blocks])
    values = np.stack([v for _, v, _ in enc.nums]) if enc.nums else np.zeros((0, len(enc.weights)))
    spans = np.array([span for _, _, span in enc.nums])
    ref = tables.leaf[:, idx[:, 0]].astype(np.int64)  # cats x blocks: the clusters' LCA nodes
    ncp32 = tables.ncp.astype(np.float32)  # halves memory traffic in the hot loop
    ref_lo = values[:, idx[:, 0]].copy()  # nums x blocks
    ref_hi = ref_lo.copy()
    ref_w = np.zeros(b_count, dtype=np.int64)
    ref_cost = np.zeros(b_count)
    is_open = np.zeros(b_count, dtype=bool)
    label = np.full(len(enc.weights), -1)
    clusters = np.zeros(b_count, dtype=np.intp)
    active = left >= k
    while active.any():
        a = np.flatnonzero(active)
        m = int(count[a].max())
        cand = idx[a, :m]
        # one gather per attribute into its (LCA node x leaf) table beats one 3-d gather
        offsets = [tables.base[c] + ref[c, a] * tables.size[c] for c in range(len(ref))]
        per = np.zeros(cand.shape, dtype=np.float32)
        for c, offset in enumerate(offsets):
            per += ncp32[offset[:, None] + tables.leaf[c][cand]]
        for j in range(len(spans)):
            v = values[j][cand]
            span = np.maximum(ref_hi[j, a][:, None], v) - np.minimum(ref_lo[j, a][:, None], v)
            per += span * (1.0 / spans[j])
        inc = per * (ref_w[a][:, None] + enc.weights[cand]) - ref_cost[a][:, None]
        seeding = ~is_open[a]
        score = np.where(seeding[:, None], -inc, inc)
        score[np.arange(m)[None, :] >= count[a][:, None]] = np.inf
        pick = np.argmin(score, axis=1)
        rows = np.arange(len(a))
        t = cand[rows, pick]
        per_t = per[rows, pick]
        # move the placed tuple behind the unplaced ones
        last = count[a] - 1
        idx[a, pick] = idx[a, last]
        idx[a, last] = t
        count[a] = last
        left[a] -= enc.weights[t]
        label[t] = clusters[a]
        s_, g_ = a[seeding], a[~seeding]
        ts, tg = t[seeding], t[~seeding]
        for c, offset in enumerate(offsets):
            ref[c, s_] = tables.leaf[c][ts]
            ref[c, g_] = tables.lca[offset[~seeding] + tables.leaf[c][tg]]
        ref_lo[:, s_], ref_hi[:, s_] = values[:, ts], values[:, ts]
        ref_lo[:, g_] = np.minimum(ref_lo[:, g_], values[:, tg])
        ref_hi[:, g_] = np.maximum(ref_hi[:, g_], values[:, tg])
        ref_w[s_] = enc.weights[ts]
        ref_w[g_] += enc.weights[tg]
        ref_cost[s_] = 0.0
        ref_cost[g_] = per_t[~seeding] * ref_w[g_]
        is_open[a] = True
        done = a[ref_w[a] >= k]
        clusters[done] += 1
        is_open[done] = False
        active = is_open | (left >= k)
    out: list[list[np.ndarray]] = []
    for i, block in enumerate(blocks):
        groups = [block[label[block] == c] for c in range(clusters[i])]
        stray = idx[i, : count[i]]
        if len(stray):
            add = _add_cost(enc, stray, _summaries(enc, groups), tables)
            target = np.argmin(add, axis=1)
            for tup, gi in zip(stray, target, strict=True):
                groups[gi] = np.append(groups[gi], tup)
        out.append(groups)
    return out


def _refine(
    enc: _Encoded, tables: _LcaTables | None, groups: list[np.ndarray], k: int, rounds: int = 4
) -> list[np.ndarray]:
    """k-member style local search: move single tuples to the group where they cost least."""
    groups = [g for g in groups]
    for _ in range(rounds):
        summary = _summaries(enc, groups)
        weight, cost, lca = summary[:3]
        loo = _leave_one_out(enc, groups)
        cand_t, cand_g, cand_gain = [], [], []
        for gi, idx in enumerate(groups):
            if len(idx) < 2:
                continue
            movable = weight[gi] - enc.weights[idx] >= k
            gain = cost[gi] - loo[gi]
            sel = movable & (gain > 1e-9)
            cand_t.append(idx[sel])
            cand_g.append(np.full(sel.sum(), gi))
            cand_gain.append(gain[sel])
        if not cand_t:
            break
        ts = np.concatenate(cand_t)
        src = np.concatenate(cand_g)
        gains = np.concatenate(cand_gain)
        if len(ts) == 0:
            break
        best_h = np.empty(len(ts), dtype=np.intp)
        best_net = np.empty(len(ts))
        chunk = max(1, 2_000_000 // max(lca[0].size * len(groups), 1))
        for s in range(0, len(ts), chunk):
            t = ts[s : s + chunk]
            add = _add_cost(enc, t, summary, tables)
            add[np.arange(len(t)), src[s : s + chunk]] = np.inf
            best_h[s : s + chunk] = np.argmin(add, axis=1)
            best_net[s : s + chunk] = gains[s : s + chunk] - add.min(axis=1)
        order = np.argsort(-best_net)
        touched = np.zeros(len(groups), dtype=bool)
        moved = 0
        for i in order:
            if best_net[i] <= 1e-9:
                break
            a, b = src[i], best_h[i]
            if touched[a] or touched[b]:
                continue
            t = ts[i]
            groups[a] = groups[a][groups[a] != t]
            groups[b] = np.append(groups[b], t)
            touched[a] = touched[b] = True
            moved += 1
        if moved == 0:
            break
    return groups


def anonymize(
    df: pd.DataFrame,
    qi: list[str],
    hierarchies: dict[str, Hierarchy],
    numeric: list[str],
    k: int,
    max_suppression: float = 0.0,
) -> Result:
    """k-anonymise df on the quasi-identifiers qi; other columns pass through unchanged."""
    start, cpu_start = time.perf_counter(), time.process_time()
    if k < 1:
        raise AnonymizeError("k must be at least 1")
    if not 0.0 <= max_suppression < 1.0:
        raise AnonymizeError("max-suppression must be in [0, 1)")
    if len(set(qi)) != len(qi):
        raise AnonymizeError("a quasi-identifier is named twice")
    for c in qi:
        if c not in df.columns:
            raise AnonymizeError(f"quasi-identifier {c!r} is not a column of the input")
        if c not in numeric and c not in hierarchies:
            raise AnonymizeError(f"quasi-identifier {c!r} has no hierarchy and is not numeric")
    if len(df) < k:
        raise AnonymizeError(f"the table has {len(df)} rows, fewer than k={k}")
    df = df.reset_index(drop=True)
    enc = _encode(df, qi, hierarchies, set(numeric))
    # clustering and local search are quadratic, so they run inside blocks of nearby tuples
    # that the NCP-driven cuts carve out
    blocks = _partition(enc, k, np.arange(len(enc.weights)), stop=max(BLOCK_ROWS, 30 * k))
    tables = _lca_tables(enc)
    if tables is None:  # hierarchies too large for pairwise tables: cuts all the way down
        per_block = [_partition(enc, k, block) for block in blocks]
    else:
        per_block = _kmember(enc, tables, blocks, k)
    groups = [g for block in per_block for g in _refine(enc, tables, block, k)]
    groups, suppressed_tuples = _spend_suppression(enc, groups, k, max_suppression)
    out = df.copy()
    out[qi] = out[qi].astype(object)
    tuple_value = _recode(enc, groups)
    row_values = tuple_value[enc.inverse]
    suppressed_rows = np.isin(enc.inverse, suppressed_tuples)
    row_values[suppressed_rows] = SUPPRESSED
    cat_names = [cat.name for cat in enc.cats]
    num_names = [name for name, _, _ in enc.nums]
    for j, name in enumerate(cat_names + num_names):
        out[name] = row_values[:, j]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = quality(out, df, qi, hierarchies, set(numeric), k)
    metrics["seconds"] = round(seconds, 3)
    # wall time depends on what else the machine runs; CPU time is the algorithm's own cost
    metrics["cpu_seconds"] = round(cpu, 3)
    return Result(out, metrics)


def _format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _recode(enc: _Encoded, groups: list[np.ndarray]) -> np.ndarray:
    """Tuple id -> generalised values (categorical columns first, then numeric)."""
    _, _, lca, lo, hi = _summaries(enc, groups)
    owner = np.zeros(len(enc.weights), dtype=np.intp)  # suppressed tuples are overwritten
    for gi, idx in enumerate(groups):
        owner[idx] = gi
    columns = []
    for a, cat in enumerate(enc.cats):
        real = lca[:, a, : cat.codes.shape[1]]
        depth = (real >= 0).sum(axis=1)
        node = np.take_along_axis(real, np.maximum(depth - 1, 0)[:, None], axis=1)[:, 0]
        names = np.asarray([*cat.labels, ROOT], dtype=object)
        columns.append(names[np.where(depth == 0, len(cat.labels), node)])
    for j in range(len(enc.nums)):
        low = np.asarray([_format_number(x) for x in lo[:, j]], dtype=object)
        high = np.asarray([_format_number(x) for x in hi[:, j]], dtype=object)
        # always a range, even [39,39], so every numeric cell parses the same way
        columns.append(
            np.asarray([f"[{x},{y}]" for x, y in zip(low, high, strict=True)], dtype=object)
        )
    if not columns:
        return np.empty((len(enc.weights), 0), dtype=object)
    return np.stack(columns, axis=1)[owner]


def _spend_suppression(
    enc: _Encoded, groups: list[np.ndarray], k: int, max_suppression: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Suppress tuples whose removal saves more NCP than suppressing them costs, within budget.

    A suppressed row counts NCP 1 on every attribute, so this only pays for true outliers that
    drag a whole class up the hierarchies; on Adult it finds almost none (measured).
    """
    budget = int(np.floor(max_suppression * enc.n + 1e-9))
    n_attrs = len(enc.cats) + len(enc.nums)
    suppressed: list[int] = []
    groups = list(groups)
    while budget > 0:
        weight, cost, *_ = _summaries(enc, groups)
        loo = _leave_one_out(enc, groups)
        best: list[tuple[float, int, int]] = []
        for gi, idx in enumerate(groups):
            if len(idx) < 2:
                continue
            net = cost[gi] - loo[gi] - enc.weights[idx] * n_attrs
            net[(weight[gi] - enc.weights[idx] < k) | (enc.weights[idx] > budget)] = -np.inf
            j = int(np.argmax(net))
            if net[j] > 1e-9:
                best.append((float(net[j]), gi, int(idx[j])))
        if not best:
            break
        for _, gi, t in sorted(best, reverse=True):
            if enc.weights[t] <= budget:
                groups[gi] = groups[gi][groups[gi] != t]
                suppressed.append(t)
                budget -= int(enc.weights[t])
    return groups, np.asarray(suppressed, dtype=np.intp)


def quality(
    out: pd.DataFrame,
    original: pd.DataFrame,
    qi: list[str],
    hierarchies: dict[str, Hierarchy],
    numeric: set[str],
    k: int,
) -> dict[str, float | int]:
    """NCP, DM, CAVG, suppression and class count of an anonymised table.

    DM counts each class as its size squared and each suppressed row as n (the table size),
    the usual convention for discernibility.
    """
    n = len(out)
    suppressed = np.ones(n, dtype=bool)
    per_row = np.zeros(n)
    for c in qi:
        col = out[c].astype(str).to_numpy()
        suppressed &= col == SUPPRESSED
    for c in qi:
        col = out[c].astype(str).to_numpy()
        if c in numeric:
            orig = pd.to_numeric(original[c]).to_numpy(dtype=float)
            span = float(orig.max() - orig.min()) or 1.0
            widths = np.zeros(n)
            ranged = np.char.startswith(col.astype(str), "[")
            if ranged.any():
                parts = pd.Series(col[ranged]).str.strip("[]").str.split(",", expand=True)
                widths[ranged] = (parts[1].astype(float) - parts[0].astype(float)).to_numpy()
            widths[col == SUPPRESSED] = span
            per_row += widths / span
        else:
            h = hierarchies[c]
            counts: dict[str, int] = {}
            for line in h.lines.values():
                for label in line:
                    counts[label] = counts.get(label, 0) + 1
            total = max(len(h.lines) - 1, 1)
            lookup = pd.Series({label: (cnt - 1) / total for label, cnt in counts.items()})
            per_row += lookup.reindex(col).to_numpy(dtype=float)
    per_row /= len(qi)
    per_row[suppressed] = 1.0
    kept = out.loc[~suppressed, qi].astype(str)
    sizes = kept.value_counts(sort=False).to_numpy() if len(kept) else np.zeros(0, dtype=int)
    n_supp = int(suppressed.sum())
    classes = len(sizes)
    return {
        "ncp": round(float(per_row.mean()), 6),
        "dm": int((sizes.astype(np.int64) ** 2).sum() + n_supp * n),
        "cavg": round(float((n - n_supp) / classes / k), 6) if classes else 0.0,
        "suppressed": n_supp,
        "suppressed_share": round(n_supp / n, 6),
        "classes": classes,
        "min_class": int(sizes.min()) if classes else 0,
    }
