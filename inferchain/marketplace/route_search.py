"""Exact search for the best route under a price cap and a latency cap (bi-objective A* on a hop table).

Labels are partial routes (latency, price) ending at a layer boundary. They are popped in lexicographic
order of lower bounds on the final (primary, secondary) cost of any route extending them. At the end
boundary the bounds are the exact costs, and every prefix of a better route has smaller bounds, so the
first label popped at the end boundary is the lexicographic optimum.
Labels that cannot meet a cap even with the best completion, or that another label at the same boundary
dominates, are dropped; neither can lead to a better feasible route, so the search stays exact.

When a cap binds, a Lagrangian relaxation sharpens the pruning: for a multiplier lam >= 0 let
D(j) = min over completions from j of (primary + lam * resource). Any completion that spends at most the
remaining resource r has primary >= D(j) - lam * r, a valid lower bound. lam is found by walking the
lower convex hull between the best-primary and the best-resource routes (a few DP passes in numpy);
the feasible hull route found on the way is the incumbent every label must beat.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np

from inferchain.marketplace.route_index import HopTable

# Hull-walk iterations; any multiplier gives a valid bound, more only make it tighter.
_HULL_STEPS = 6
# Relative slack of the float (Lagrangian) bounds.
_SLACK = 1e-9


@dataclass(frozen=True)
class SearchHop:
    start: int
    end: int
    row: int  # representative offer row
    lat_us: int
    price: int


def search(
    table: HopTable, start: int, end: int, max_price: float, max_lat_us: float, objective: str
) -> list[SearchHop] | None:
    """Lexicographically best route from ``start`` to ``end`` within both caps, or None if none exists."""
    fastest, cheapest = table.best_to_end(end, "latency"), table.best_to_end(end, "price")
    lb_lat, lb_price = fastest.primary, cheapest.primary
    by_latency = objective == "latency"
    # primary objective vs the resource whose cap binds
    cap, other_cap = (max_price, max_lat_us) if by_latency else (max_lat_us, max_price)
    lam, dual, incumbent = 0.0, [0.0] * (table.num_layers + 1), math.inf
    if math.isfinite(cap):
        fast = (fastest.primary[start], fastest.secondary[start])  # (lat, price)
        cheap = (cheapest.secondary[start], cheapest.primary[start])  # (lat, price)
        best_primary, best_resource = (fast, cheap) if by_latency else (cheap, fast)
        lam, dual, incumbent = _lagrangian(table, start, end, by_latency, cap, best_primary, best_resource)
        if incumbent > other_cap:  # the hull route breaks the other cap: no incumbent yet
            incumbent = math.inf
    # The Lagrangian bounds are floats: loosen them by a relative slack (large prices make lam * price
    # big), so rounding can only keep a label, never drop it or pop it too late.
    slack = 0.5 + _SLACK * (abs(incumbent if math.isfinite(incumbent) else 0.0) + lam * (cap if lam else 0.0))
    slack += _SLACK * max((abs(d) for d in dual if math.isfinite(d)), default=0.0)
    bound_cap = min(incumbent, max_lat_us if by_latency else max_price) + slack

    lat_of: list[int] = [0]
    price_of: list[int] = [0]
    at: list[int] = [start]
    parent: list[int] = [-1]
    via: list[tuple[int, int, int]] = [(-1, -1, -1)]  # (from boundary, to boundary, hop index)
    dead: list[bool] = [False]
    # Per boundary front of live labels, sorted by latency (prices then strictly decrease).
    front_lat: dict[int, list[int]] = {start: [0]}
    front_price: dict[int, list[int]] = {start: [0]}
    front_id: dict[int, list[int]] = {start: [0]}

    def key(label: int) -> tuple[float, float, int]:
        # Lower bounds on the final (primary, secondary); the Lagrangian bound tightens the primary one.
        b, lat, price = at[label], lat_of[label], price_of[label]
        f_lat, f_price = lat + lb_lat[b], price + lb_price[b]
        if not lam:
            return (f_lat, f_price, label) if by_latency else (f_price, f_lat, label)
        if by_latency:
            return (max(f_lat, lat + dual[b] - lam * (max_price - price) - slack), f_price, label)
        return (max(f_price, price + dual[b] - lam * (max_lat_us - lat) - slack), f_lat, label)

    heap = [key(0)]
    while heap:
        label = heapq.heappop(heap)[2]
        if dead[label]:
            continue
        b = at[label]
        if b == end:
            return _unwind(table, label, parent, via)
        lat0, price0 = lat_of[label], price_of[label]
        for j, hs in table.hops[b].items():
            if j > end:
                continue
            lat_room = max_lat_us - lat0 - lb_lat[j]
            price_room = max_price - price0 - lb_price[j]
            if lat_room < 0 or price_room < 0:
                continue
            lo = bisect_left(hs.neg_price, -price_room)  # hops cheap enough (prices fall along the list)
            hi = bisect_right(hs.lat, lat_room)  # hops fast enough
            for h in range(lo, hi):
                lat1, price1 = lat0 + hs.lat[h], price0 - hs.neg_price[h]
                if lam:
                    if by_latency:
                        bound = lat1 + dual[j] - lam * (max_price - price1)
                    else:
                        bound = price1 + dual[j] - lam * (max_lat_us - lat1)
                    if bound > bound_cap:
                        continue
                if not _admit(front_lat, front_price, front_id, dead, j, lat1, price1, len(lat_of)):
                    continue
                lat_of.append(lat1)
                price_of.append(price1)
                at.append(j)
                parent.append(label)
                via.append((b, j, h))
                dead.append(False)
                heapq.heappush(heap, key(len(lat_of) - 1))
    return None


def _admit(
    front_lat: dict[int, list[int]],
    front_price: dict[int, list[int]],
    front_id: dict[int, list[int]],
    dead: list[bool],
    j: int,
    lat: int,
    price: int,
    new_id: int,
) -> bool:
    """Insert (lat, price) into boundary j's front unless dominated; kill the labels it dominates."""
    lats = front_lat.setdefault(j, [])
    prices = front_price.setdefault(j, [])
    ids = front_id.setdefault(j, [])
    pos = bisect_left(lats, lat)
    if pos > 0 and prices[pos - 1] <= price:
        return False
    if pos < len(lats) and lats[pos] == lat and prices[pos] <= price:
        return False
    stop = pos
    while stop < len(lats) and prices[stop] >= price:
        dead[ids[stop]] = True
        stop += 1
    del lats[pos:stop], prices[pos:stop], ids[pos:stop]
    lats.insert(pos, lat)
    prices.insert(pos, price)
    ids.insert(pos, new_id)
    return True


def _unwind(table: HopTable, label: int, parent: list[int], via: list[tuple[int, int, int]]) -> list[SearchHop]:
    hops: list[SearchHop] = []
    while parent[label] >= 0:
        b, j, h = via[label]
        hs = table.hops[b][j]
        hops.append(SearchHop(b, j, hs.row[h], hs.lat[h], -hs.neg_price[h]))
        label = parent[label]
    hops.reverse()
    return hops


def _lagrangian(
    table: HopTable,
    start: int,
    end: int,
    by_latency: bool,
    cap: float,
    best_primary: tuple[float, float],
    best_resource: tuple[float, float],
) -> tuple[float, list[float], float]:
    """(lam, D per boundary, primary cost of the best resource-feasible hull route) for the bound."""

    def split(point: tuple[float, float]) -> tuple[float, float]:  # (lat, price) -> (primary, resource)
        return point if by_latency else (point[1], point[0])

    low = split(best_primary)  # best primary, breaks the cap
    high = split(best_resource)  # least resource, meets the cap (checked by the caller)
    lam, dual = 0.0, [0.0] * (table.num_layers + 1)
    for _ in range(_HULL_STEPS):
        if low[1] <= high[1] or high[0] <= low[0]:
            break
        lam = (high[0] - low[0]) / (low[1] - high[1])
        dual, point = _relaxed(table, start, end, by_latency, lam)
        value = point[0] + lam * point[1]
        if value >= low[0] + lam * low[1] - 1e-9 * max(1.0, abs(value)):
            break  # no hull point below the line: lam is optimal
        if point[1] <= cap:
            high = point
        else:
            low = point
    return lam, dual, high[0]


def _relaxed(
    table: HopTable, start: int, end: int, by_latency: bool, lam: float
) -> tuple[list[float], tuple[int, int]]:
    """Backward DP of primary + lam * resource to ``end``; also the (primary, resource) of its route."""
    dual = np.full(table.num_layers + 1, np.inf)
    dual[end] = 0.0
    pick: dict[int, int] = {}
    for b in range(end - 1, start - 1, -1):
        j, lat, price = table.flat[b]
        if j.size == 0:
            continue
        values = (lat + lam * price if by_latency else price + lam * lat) + dual[j]
        k = int(np.argmin(values))
        dual[b] = values[k]
        pick[b] = k
    primary = resource = 0
    b = start
    while b != end:
        j, lat, price = table.flat[b]
        k = pick[b]
        hop_lat, hop_price = int(lat[k]), int(price[k])
        primary += hop_lat if by_latency else hop_price
        resource += hop_price if by_latency else hop_lat
        b = int(j[k])
    return dual.tolist(), (primary, resource)
