"""Hop table of one model's offer book: for every layer pair (b, j) the Pareto-optimal single hops.

A hop is one node serving layers [b, j) of the model. Its per-token latency is ``rtt + (j - b) * compute``
and its price ``(j - b) * price_per_layer``. Latencies are integer microseconds and prices integer wei, so
every sum the search makes is exact and ties are real ties. numpy is used only here, to build the table
once per change of the book; the search itself walks plain Python lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Above this many candidates the dominance check is done in row blocks to bound memory (n x block bools).
_DOMINANCE_BLOCK = 1024


@dataclass(frozen=True)
class OfferArrays:
    """The eligible offers of one model as parallel int64 columns (row i = offer i)."""

    node_ids: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    rtt_us: np.ndarray  # round-trip time plus any failure penalty
    layer_us: np.ndarray  # compute per layer per token
    price: np.ndarray  # per 1k tokens per layer, in units of ``price_quantum`` wei (see planner._price_units)
    price_quantum: int = 1  # wei per price unit of the index
    price_exact: bool = True  # False: prices were rounded up to the quantum (huge, incommensurable prices)
    _price_groups: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.node_ids)

    def equivalents(self, b: int, j: int, lat_us: int, price: int) -> list[int]:
        """Rows that can serve [b, j) at exactly this latency and price (the ties among equal nodes)."""
        k = j - b
        if price % k:
            return []
        rows = self._rows_by_price().get(price // k)
        if rows is None:
            return []
        mask = (self.start[rows] <= b) & (self.end[rows] >= j) & (self.rtt_us[rows] + k * self.layer_us[rows] == lat_us)
        return rows[mask].tolist()

    def _rows_by_price(self) -> dict[int, np.ndarray]:
        """Offer rows grouped by price per layer (built once: a hop's ties share its price per layer)."""
        if not self._price_groups and len(self):
            order = np.argsort(self.price, kind="stable")
            prices, first = np.unique(self.price[order], return_index=True)
            groups = np.split(order, first[1:])
            self._price_groups.update(zip(prices.tolist(), groups, strict=True))
        return self._price_groups


@dataclass
class HopSet:
    """Pareto-optimal hops over one layer pair, sorted by latency ascending (so price descending)."""

    lat: list[int]
    neg_price: list[int]  # negated so that it is ascending and bisect-able
    row: list[int]  # a representative offer row for each hop


@dataclass
class BestToEnd:
    """Lexicographic best routes from every boundary to one end boundary (backward DP)."""

    primary: list[float]  # best primary cost from boundary i (inf where the end is unreachable)
    secondary: list[float]
    succ: list[list[tuple[int, int]]]  # all (next boundary, hop index) achieving the optimum: ties


@dataclass
class HopTable:
    num_layers: int
    offers: OfferArrays
    hops: list[dict[int, HopSet]]  # hops[b][j]
    flat: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per b, its hops as (j, lat, price, row)
    covered: list[bool]  # layer l is served by at least one eligible offer
    _best: dict[tuple[int, str], BestToEnd] = field(default_factory=dict)
    # Per-query-independent search structures (route_search), built lazily and dropped with the table.
    search_cache: dict = field(default_factory=dict)

    def best_to_end(self, end: int, objective: str) -> BestToEnd:
        """Cached backward DP: least (latency, price) or (price, latency) from each boundary to ``end``."""
        key = (end, objective)
        cached = self._best.get(key)
        if cached is None:
            cached = self._best[key] = _best_to_end(self, end, objective)
        return cached


def build_hop_table(offers: OfferArrays, num_layers: int) -> HopTable:
    start, end, rtt, layer, price = offers.start, offers.end, offers.rtt_us, offers.layer_us, offers.price
    order = np.argsort(start, kind="stable")
    starts_sorted = start[order]
    cut = np.searchsorted(starts_sorted, np.arange(num_layers + 1), side="left")
    diff = np.zeros(num_layers + 1, dtype=np.int64)
    np.add.at(diff, start, 1)
    np.add.at(diff, end, -1)
    covered = (np.cumsum(diff)[:num_layers] > 0).tolist()

    hops: list[dict[int, HopSet]] = [{} for _ in range(num_layers + 1)]
    empty = np.empty(0, dtype=np.int64)
    flat = [(empty, empty, empty, empty)] * (num_layers + 1)
    alive = np.empty(0, dtype=np.int64)  # Pareto candidates covering the current boundary
    for b in range(num_layers):
        cand = np.concatenate([alive[end[alive] > b], order[cut[b] : cut[b + 1]]])
        if cand.size == 0:
            alive = cand
            continue
        # Starting at b, an offer is useless if another one reaching at least as far is no slower per hop,
        # no slower per layer and no dearer per layer. Dominance at b carries over to b + 1, so the
        # survivors are the only candidates to carry forward.
        cand = cand[_undominated(-end[cand], rtt[cand], layer[cand], price[cand])]
        alive = cand
        hops[b], flat[b] = _hops_from(b, cand, end, rtt, layer, price)
    return HopTable(num_layers=num_layers, offers=offers, hops=hops, flat=flat, covered=covered)


def _undominated(*cols: np.ndarray) -> np.ndarray:
    """Mask of rows not dominated (all columns minimised); of identical rows the first one survives."""
    n = cols[0].size
    keep = np.ones(n, dtype=bool)
    idx = np.arange(n)
    for lo in range(0, n, _DOMINANCE_BLOCK):
        hi = min(n, lo + _DOMINANCE_BLOCK)
        le = np.ones((hi - lo, n), dtype=bool)
        eq = np.ones((hi - lo, n), dtype=bool)
        for col in cols:
            a = col[lo:hi, None]
            le &= a <= col[None, :]
            eq &= a == col[None, :]
        dominated_by_block = le & (~eq | (idx[lo:hi, None] < idx[None, :]))
        keep &= ~dominated_by_block.any(axis=0)
    return keep


def _hops_from(
    b: int, cand: np.ndarray, end: np.ndarray, rtt: np.ndarray, layer: np.ndarray, price: np.ndarray
) -> tuple[dict[int, HopSet], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Pareto hop sets from boundary b to every reachable j, from the candidate rows covering b."""
    lens = end[cand] - b
    rows = np.repeat(cand, lens)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    k = np.arange(rows.size) - first + 1  # hop length 1..len for each candidate
    j = b + k
    lat = rtt[rows] + k * layer[rows]
    cost = k * price[rows]
    order = np.lexsort((cost, lat, j))
    j, lat, cost, rows = j[order], lat[order], cost[order], rows[order]
    # Segmented running minimum of price within each j-group (sorted by latency): keep a hop only if it
    # is strictly cheaper than every faster-or-equal hop of the same pair. Prices are replaced by ranks
    # and groups by descending offsets so that one cumulative minimum does all groups without overflow.
    ranks = np.unique(cost, return_inverse=True)[1].astype(np.int64)
    width = int(ranks.max()) + 1
    v = ranks + (int(j.max()) - j) * width
    prev_min = np.concatenate(([np.iinfo(np.int64).max], np.minimum.accumulate(v)[:-1]))
    keep = v < prev_min
    j, lat, cost, rows = j[keep], lat[keep], cost[keep], rows[keep]
    bounds = np.flatnonzero(np.diff(j)) + 1
    starts = [0, *bounds.tolist()]
    stops = [*bounds.tolist(), int(j.size)]
    js, lats, negs, rws = j.tolist(), lat.tolist(), (-cost).tolist(), rows.tolist()
    sets = {js[a]: HopSet(lats[a:z], negs[a:z], rws[a:z]) for a, z in zip(starts, stops, strict=True)}
    return sets, (j, lat, cost, rows)


def _best_to_end(table: HopTable, end: int, objective: str) -> BestToEnd:
    inf = float("inf")
    n = table.num_layers
    primary: list[float] = [inf] * (n + 1)
    secondary: list[float] = [inf] * (n + 1)
    succ: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
    primary[end] = secondary[end] = 0
    by_latency = objective == "latency"
    for i in range(end - 1, -1, -1):
        best_p, best_s = inf, inf
        ties: list[tuple[int, int]] = []
        for j, hs in table.hops[i].items():
            if j > end or primary[j] == inf:
                continue
            # latency-first: fastest hop (index 0); price-first: cheapest hop (last index)
            h = 0 if by_latency else len(hs.lat) - 1
            hop_p, hop_s = (hs.lat[h], -hs.neg_price[h]) if by_latency else (-hs.neg_price[h], hs.lat[h])
            p, s = primary[j] + hop_p, secondary[j] + hop_s
            if p < best_p or (p == best_p and s < best_s):
                best_p, best_s, ties = p, s, [(j, h)]
            elif p == best_p and s == best_s:
                ties.append((j, h))
        primary[i], secondary[i], succ[i] = best_p, best_s, ties
    return BestToEnd(primary, secondary, succ)
