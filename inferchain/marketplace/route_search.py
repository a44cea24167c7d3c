"""Exact search for the best route under a price cap and a latency cap (bi-objective A* on a hop table).

Labels are partial routes (latency, price) ending at a layer boundary. They are popped in lexicographic
order of (primary + lower bound, secondary + lower bound), where the lower bounds are the exact
single-objective best costs from that boundary to the end. Both bounds are consistent, so keys never
decrease along a route and the first label popped at the end boundary is the lexicographic optimum.
Labels that cannot meet a cap even with the best completion, or that another label at the same boundary
dominates, are dropped; neither can lead to a better feasible route, so the search stays exact.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from inferchain.marketplace.route_index import HopTable


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
    lb_lat = table.best_to_end(end, "latency").primary
    lb_price = table.best_to_end(end, "price").primary
    by_latency = objective == "latency"

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
        b = at[label]
        f_lat, f_price = lat_of[label] + lb_lat[b], price_of[label] + lb_price[b]
        return (f_lat, f_price, label) if by_latency else (f_price, f_lat, label)

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


def _unwind(
    table: HopTable, label: int, parent: list[int], via: list[tuple[int, int, int]]
) -> list[SearchHop]:
    hops: list[SearchHop] = []
    while parent[label] >= 0:
        b, j, h = via[label]
        hs = table.hops[b][j]
        hops.append(SearchHop(b, j, hs.row[h], hs.lat[h], -hs.neg_price[h]))
        label = parent[label]
    hops.reverse()
    return hops
