"""Exact search for the best route under a price cap and a latency cap (A* over a hop table).

The objective's cost is the *primary* cost; the other one, the *resource*, is capped (objective "latency":
least latency within the price cap; "price": least price within the latency cap). Labels are partial
routes (primary, resource) ending at a layer boundary, popped in lexicographic order of lower bounds on
the final (primary, resource). At the end boundary the bounds are the exact costs and every prefix of a
better route has smaller bounds, so the first label popped there is the lexicographic optimum. A label is
dropped only when it cannot meet a cap, when its bound exceeds a route already found, or when another label
at the same boundary is no worse in both costs: the search stays exact.

Bound tables. The strength of A* is the lower bound g(j, s) on the primary cost of completing a route from
boundary j with at most s resource to spare ("slack": the cap minus what is spent minus the least resource
any completion from j needs). Convex (Lagrangian) bounds are weak here: the Pareto front of routes is dense
(every cut point of two overlapping spans is another route) and jagged. Instead a backward DP over slack
buckets of width 2**shift gives, for every boundary, a table G[j][k] <= g(j, s) for all s < (k + 1) * 2**shift
(each hop's extra resource is rounded down to whole buckets, so the table never overestimates). A query
uses the finest scale whose BUCKETS buckets cover its slack, so every query sees ~BUCKETS buckets of
resolution whatever its cap. The tables depend only on the hop table (not on the caps): they are built
once per (end, objective, scale) on the first quote that needs them and dropped with the hop table. Only
hops whose extra resource fits the scale take part, so the fine scales are cheap.

Children are generated lazily: expanding a label computes all its children's bounds at once (numpy) and
queues them as one sorted stream, so a child costs Python work only when it is popped.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

from inferchain.marketplace.route_index import HopTable

# Slack buckets per bound table: more is a tighter bound (fewer labels) but a dearer table.
BUCKETS = 1024
# Bound tables are kept for every _SCALE_STEP-th bucket width (a power of two): a query's buckets are then
# 1/BUCKETS to 2**_SCALE_STEP/BUCKETS of its slack; a larger step builds fewer tables.
_SCALE_STEP = 2
_CHUNK = 16  # children sorted per step of a label's lazy children stream
_INF = 2**62  # "unreachable" in int64 costs; costs inside the index stay below it (see planner._price_units)


@dataclass(frozen=True)
class SearchHop:
    start: int
    end: int
    row: int  # representative offer row
    lat_us: int
    price: int


@dataclass
class _Steps:
    """The hops out of one boundary that can reach the end, sorted by the least resource to the end."""

    to: np.ndarray  # target boundary j
    key: np.ndarray  # where row j starts in a flat bound table: to * buckets
    padded_key: np.ndarray  # the same while the table is built with ``buckets`` of padding left of each row
    primary: np.ndarray  # the hop's primary cost
    resource: np.ndarray  # the hop's resource cost
    reach: np.ndarray  # resource + least resource from j to the end (ascending)
    flat: np.ndarray  # index of the hop in table.flat[b]
    row: np.ndarray  # the hop's representative offer row
    lists: tuple[list[int], list[int], list[int]]  # (to, primary, resource) as Python ints


@dataclass
class _Bounds:
    """Search structures for one (end, objective) of a hop table; independent of the caps."""

    end: int
    buckets: int  # BUCKETS when built; a table row is 2 * buckets wide (buckets of padding on its left)
    least_primary: list[int]  # least primary cost from each boundary to the end (_INF: unreachable)
    least_resource: np.ndarray  # least resource from each boundary to the end
    best_resource: np.ndarray  # resource of the lexicographically best-primary completion from each boundary
    steps: list[_Steps | None]
    top_shift: int  # coarsest slack scale needed: BUCKETS << top_shift exceeds every boundary's useful slack
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # shift -> bound tables


def search(
    table: HopTable, start: int, end: int, max_price: float, max_lat_us: float, objective: str
) -> list[SearchHop] | None:
    """Lexicographically best route from ``start`` to ``end`` within both caps, or None if none exists."""
    by_latency = objective == "latency"
    bounds = _bounds(table, end, by_latency)
    primary_cap, resource_cap = (max_lat_us, max_price) if by_latency else (max_price, max_lat_us)
    cap_p = int(primary_cap) if primary_cap < _INF else _INF
    cap_r = int(resource_cap) if resource_cap < _INF else _INF
    least_p, least_r = bounds.least_primary, bounds.least_resource
    slack0 = cap_r - int(least_r[start])
    if least_p[start] >= _INF or slack0 < 0 or least_p[start] > cap_p:
        return None
    shift = _scale(bounds, slack0)
    bound_p, bound_r = _slack_table(bounds, shift)
    last = bounds.buckets - 1

    prim_of: list[int] = [0]
    res_of: list[int] = [0]
    at: list[int] = [start]
    parent: list[int] = [-1]
    via: list[int] = [-1]  # index of the hop in table.flat[at[parent]]
    last_row: list[int] = [-1]  # the offer row of the label's last hop
    dead: list[bool] = [False]
    front_p: dict[int, list[int]] = {start: [0]}  # per boundary, live labels sorted by primary
    front_r: dict[int, list[int]] = {start: [0]}
    front_id: dict[int, list[int]] = {start: [0]}
    # Heap entries: (primary bound, resource bound, seq, label, position, children). children None: expand
    # the label; otherwise the label's sorted children stream, next to materialise at ``position``.
    heap: list[tuple] = [(least_p[start], int(least_r[start]), 0, 0, 0, None)]
    seq = 1
    while heap:
        bound, sec, _, label, pos, kids = heapq.heappop(heap)
        if dead[label] or bound > cap_p:
            continue  # a dominated label's children are dominated by its dominator's children
        if kids is None:
            b = at[label]
            if b == end:
                return _unwind(table, label, at, parent, via)
            steps = bounds.steps[b]
            if steps is None:
                continue
            spare = cap_r - res_of[label]
            n = int(np.searchsorted(steps.reach, spare, side="right"))  # children that can meet the cap
            if n == 0:
                continue
            at_k = steps.key[:n] + np.minimum((spare - steps.reach[:n]) >> shift, last)
            bnd = steps.primary[:n] + bound_p[at_k] + prim_of[label]
            # The same node again right away is never needed: one hop over both spans is no dearer and
            # no slower (one round trip less), and it is (or is dominated by) a sibling of this label.
            sel = np.flatnonzero((bnd <= cap_p) & (steps.row[:n] != last_row[label]))
            if sel.size == 0:
                continue
            kids = _chunk(sel, bnd[sel], steps.resource[sel] + bound_r[at_k[sel]] + res_of[label])
            heapq.heappush(heap, (kids[1][0], kids[2][0], seq, label, 0, kids))
            seq += 1
            continue
        sel_l, bnd_l, sec_l, rest = kids
        if pos + 1 < len(sel_l):
            heapq.heappush(heap, (bnd_l[pos + 1], sec_l[pos + 1], seq, label, pos + 1, kids))
            seq += 1
        elif rest is not None:
            more = _chunk(*rest)
            heapq.heappush(heap, (more[1][0], more[2][0], seq, label, 0, more))
            seq += 1
        i = sel_l[pos]
        steps_l = bounds.steps[at[label]]
        assert steps_l is not None
        to_l, prim_l, res_l = steps_l.lists
        j = to_l[i]
        p1, r1 = prim_of[label] + prim_l[i], res_of[label] + res_l[i]
        if not _admit(front_p, front_r, front_id, dead, j, p1, r1, len(prim_of)):
            continue
        prim_of.append(p1)
        res_of.append(r1)
        at.append(j)
        parent.append(label)
        via.append(int(steps_l.flat[i]))
        last_row.append(int(steps_l.row[i]))
        dead.append(False)
        heapq.heappush(heap, (bound, sec, seq, len(prim_of) - 1, 0, None))
        seq += 1
        if j == end and p1 < cap_p:
            cap_p = p1  # a route: nothing with a larger primary bound can win any more
    return None


def prepare(table: HopTable, end: int) -> None:
    """Build every bound table a search to ``end`` may need (both objectives, all scales) ahead of quotes."""
    for by_latency in (True, False):
        bounds = _bounds(table, end, by_latency)
        for shift in {_scale(bounds, (bounds.buckets << shift) - 1) for shift in range(bounds.top_shift + 1)}:
            _slack_table(bounds, shift)


def _scale(bounds: _Bounds, slack: int) -> int:
    """The bucket width (as a shift) of the table for a query with this much slack at its start: the finest
    of the scales kept (every _SCALE_STEP-th, and the coarsest) whose buckets cover the slack."""
    fit = (slack // bounds.buckets).bit_length()
    return min(bounds.top_shift, -(-fit // _SCALE_STEP) * _SCALE_STEP)


def _chunk(sel: np.ndarray, bnd: np.ndarray, sec: np.ndarray) -> tuple:
    """The next children of a label in (bound, secondary) order: the _CHUNK least as sorted lists, and the
    rest (all with larger bounds) as arrays for later; most streams are abandoned long before their end."""
    rest = None
    if sel.size > _CHUNK:
        low = bnd <= np.partition(bnd, _CHUNK - 1)[_CHUNK - 1]
        high = ~low
        if high.any():
            rest = (sel[high], bnd[high], sec[high])
            sel, bnd, sec = sel[low], bnd[low], sec[low]
    order = np.lexsort((sec, bnd))
    return sel[order].tolist(), bnd[order].tolist(), sec[order].tolist(), rest


def _bounds(table: HopTable, end: int, by_latency: bool) -> _Bounds:
    key = ("bounds", end, by_latency)
    cached = table.search_cache.get(key)
    if cached is None:
        cached = table.search_cache[key] = _build_bounds(table, end, by_latency)
    return cached


def _ints(values: list[float]) -> np.ndarray:
    return np.array([int(v) if v < _INF else _INF for v in values], dtype=np.int64)


def _build_bounds(table: HopTable, end: int, by_latency: bool) -> _Bounds:
    fastest, cheapest = table.best_to_end(end, "latency"), table.best_to_end(end, "price")
    by_primary, by_resource = (fastest, cheapest) if by_latency else (cheapest, fastest)
    least_p, least_r = _ints(by_primary.primary), _ints(by_resource.primary)
    # resource of the best-primary route from each boundary: beyond it the slack no longer matters
    best_r = _ints(by_primary.secondary)
    reachable = least_r < _INF
    spread = int((best_r - least_r)[reachable].max()) if reachable.any() else 0
    nb = BUCKETS
    top_shift = (spread // nb).bit_length()
    steps: list[_Steps | None] = [None] * (end + 1)
    for b in range(end):
        if least_r[b] >= _INF:
            continue
        to, lat, price, rows = table.flat[b]
        keep = np.flatnonzero((to <= end) & (least_r[np.minimum(to, end)] < _INF))
        to = to[keep]
        primary, resource = (lat[keep], price[keep]) if by_latency else (price[keep], lat[keep])
        reach = resource + least_r[to]
        order = np.argsort(reach, kind="stable")
        to, primary, resource, reach, keep = to[order], primary[order], resource[order], reach[order], keep[order]
        steps[b] = _Steps(
            to=to,
            key=to * nb,
            padded_key=to * 2 * nb + nb,
            primary=primary,
            resource=resource,
            reach=reach,
            flat=keep,
            row=rows[keep],
            lists=(to.tolist(), primary.tolist(), resource.tolist()),
        )
    return _Bounds(end, nb, least_p.tolist(), least_r, best_r, steps, top_shift)


def _slack_table(bounds: _Bounds, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat tables, row j at j * buckets + k: the lexicographically least (primary, resource) of the
    completions from j that fit a slack < (k + 1) << shift, each hop's extra resource rounded down to whole
    buckets (so every completion that truly fits is among them: a lexicographic lower bound). While they
    are built, ``buckets`` entries of _INF precede each row, so a read shifted below bucket 0 finds
    "impossible"."""
    cached = bounds.tables.get(shift)
    if cached is not None:
        return cached
    end, nb = bounds.end, bounds.buckets
    primary = np.full((end + 1, 2 * nb), _INF, dtype=np.int64)
    resource = np.full((end + 1, 2 * nb), _INF, dtype=np.int64)
    primary[end, nb:] = 0
    resource[end, nb:] = 0
    flat_p, flat_r = primary.reshape(-1), resource.reshape(-1)
    limit = nb << shift
    for b in range(end - 1, -1, -1):
        steps = bounds.steps[b]
        if steps is None:
            continue
        base = int(bounds.least_resource[b])
        n = int(np.searchsorted(steps.reach, base + limit, side="left"))  # hops whose extra resource fits
        if n == 0:
            continue
        # From bucket (best_resource - least_resource) >> shift on, the best-primary completion fits: the
        # row is constant there, so only the buckets before it are computed.
        width = min(nb, ((int(bounds.best_resource[b]) - base) >> shift) + 1)
        starts = steps.padded_key[:n] - ((steps.reach[:n] - base) >> shift)  # rounded down: never overestimates
        # hops reading the same shifted row: only the lexicographically least one matters
        order = np.lexsort((steps.resource[:n], steps.primary[:n], starts))
        starts, hop_p, hop_r = starts[order], steps.primary[:n][order], steps.resource[:n][order]
        first = np.concatenate(([True], starts[1:] != starts[:-1]))
        starts, hop_p, hop_r = starts[first], hop_p[first], hop_r[first]
        # window i = the ``width`` entries from flat index i: a hop's completions, shifted by its extra
        values = np.lib.stride_tricks.sliding_window_view(flat_p, width)[starts]
        values += hop_p[:, None]
        best = values.min(axis=0)
        ties = values == best
        used = np.flatnonzero(ties.any(axis=1))  # the hops that are best somewhere (usually a few)
        spent = np.lib.stride_tricks.sliding_window_view(flat_r, width)[starts[used]]
        spent += hop_r[used, None]
        spent[~ties[used]] = _INF
        np.minimum(best, _INF, out=primary[b, nb : nb + width])
        np.minimum(spent.min(axis=0), _INF, out=resource[b, nb : nb + width])
        primary[b, nb + width :] = primary[b, nb + width - 1]
        resource[b, nb + width :] = resource[b, nb + width - 1]
    # the padding is only read while building: keep the rows alone
    tables = (primary[:, nb:].reshape(-1).copy(), resource[:, nb:].reshape(-1).copy())
    bounds.tables[shift] = tables
    return tables


def _admit(
    front_p: dict[int, list[int]],
    front_r: dict[int, list[int]],
    front_id: dict[int, list[int]],
    dead: list[bool],
    j: int,
    primary: int,
    resource: int,
    new_id: int,
) -> bool:
    """Insert (primary, resource) into boundary j's front unless dominated; kill the labels it dominates."""
    prims = front_p.setdefault(j, [])
    ress = front_r.setdefault(j, [])
    ids = front_id.setdefault(j, [])
    pos = bisect_left(prims, primary)
    if pos > 0 and ress[pos - 1] <= resource:
        return False
    if pos < len(prims) and prims[pos] == primary and ress[pos] <= resource:
        return False
    stop = pos
    while stop < len(prims) and ress[stop] >= resource:
        dead[ids[stop]] = True
        stop += 1
    del prims[pos:stop], ress[pos:stop], ids[pos:stop]
    prims.insert(pos, primary)
    ress.insert(pos, resource)
    ids.insert(pos, new_id)
    return True


def _unwind(table: HopTable, label: int, at: list[int], parent: list[int], via: list[int]) -> list[SearchHop]:
    hops: list[SearchHop] = []
    while parent[label] >= 0:
        b = at[parent[label]]
        to, lat, price, row = table.flat[b]
        i = via[label]
        hops.append(SearchHop(b, int(to[i]), int(row[i]), int(lat[i]), int(price[i])))
        label = parent[label]
    hops.reverse()
    return hops
