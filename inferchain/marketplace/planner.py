"""Route planner: the cheapest or fastest chain of offers covering a model's layers, within the buyer's caps.

Cost model (see docs/routing.md). A hop is one node serving a contiguous sub-span [i, j) of its offered
span. The client drives the chain, so every hop costs one client<->node round trip, independently:

    latency per token = sum over hops of (rtt_ms + (j - i) * ms_per_layer)   [+ failure penalty]
    price per 1k tokens = sum over hops of (j - i) * price_per_1k

``plan`` is exact: it returns the lexicographic optimum ((latency, price) for ``objective="latency"``,
(price, latency) for ``objective="price"``) among all routes within both caps, where spans may overlap and
be cut anywhere. Among equally good routes the choice is random (seedable) and weighted by free slots.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from inferchain.marketplace.route_index import HopTable, OfferArrays, build_hop_table
from inferchain.marketplace.route_search import SearchHop, prepare, search

Objective = Literal["latency", "price"]

# Sanity bound on an offer's price: 1e9 INFER (18 decimals) per 1k tokens per layer. Prices are exact
# Python ints; the index stores them as int64 multiples of a per-model quantum (see ``_price_units``).
MAX_PRICE_PER_1K = 10**27
# Route prices inside the index (num_layers * the largest price unit) must stay below this.
_INDEX_PRICE_LIMIT = 2**62


@dataclass(frozen=True, slots=True)
class Offer:
    """A node's promise to serve layers [start, end) of a model (already verified by the caller).

    price_per_1k: integer token wei per 1k tokens PER LAYER served.
    ms_per_layer: compute time per layer per token on that node (see ``ms_per_layer_from_tokens_per_s``).
    rtt_ms: the client's measured round-trip time to the node.
    routable: staked, not slashed or jailed, not expired -- decided by the caller.
    """

    node_id: str
    model_id: str
    start: int
    end: int
    price_per_1k: int
    ms_per_layer: float
    rtt_ms: float
    free_slots: int
    max_slots: int
    expires_at: float
    routable: bool = True
    region: str = ""

    @property
    def num_layers(self) -> int:
        return self.end - self.start


def ms_per_layer_from_tokens_per_s(tokens_per_s: float, span_layers: int) -> float:
    """Convert a node's reported throughput over its whole span (tokens/s) to ms per layer per token."""
    if tokens_per_s <= 0 or span_layers <= 0:
        raise ValueError("throughput and span length must be positive")
    return 1000.0 / tokens_per_s / span_layers


class Hop(NamedTuple):
    node_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Route:
    model_id: str
    hops: tuple[Hop, ...]
    price_per_1k: int
    est_latency_ms: float
    hop_price_per_1k: tuple[int, ...]
    hop_latency_ms: tuple[float, ...]


class InvalidOfferError(ValueError):
    """An offer the planner cannot index (unknown model, bad span, negative price or timing)."""


class NoRouteError(Exception):
    """No route satisfies the request; ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownModelError(NoRouteError):
    pass


class UncoveredLayersError(NoRouteError):
    def __init__(self, reason: str, gaps: list[tuple[int, int]]) -> None:
        super().__init__(reason)
        self.gaps = gaps  # half-open [start, end) layer ranges no eligible offer serves


class PriceCapError(NoRouteError):
    def __init__(self, cheapest: int, max_price: int) -> None:
        super().__init__(f"cheapest route costs {cheapest} > max_price {max_price} (wei per 1k tokens)")
        self.cheapest, self.max_price = cheapest, max_price


class LatencyCapError(NoRouteError):
    def __init__(self, fastest_ms: float, max_latency_ms: float) -> None:
        super().__init__(f"fastest route takes {fastest_ms:g} ms > max_latency {max_latency_ms:g} ms")
        self.fastest_ms, self.max_latency_ms = fastest_ms, max_latency_ms


class CapsConflictError(NoRouteError):
    """Each cap alone can be met, but no single route meets both."""


@dataclass
class _Penalty:
    us: int
    until: float


class RoutePlanner:
    """In-memory offer book per model, indexed into hop tables for fast exact quotes.

    The table of a model is rebuilt lazily on the next quote after a change that affects costs or
    eligibility (span, price, timing, routable, free_slots crossing zero, removal, expiry, failure
    penalties). Updates that only change free_slots (above zero), max_slots or a later expiry are free.
    """

    def __init__(
        self,
        models: Mapping[str, int] | None = None,
        *,
        failure_penalty_ms: float = 1000.0,
        failure_ttl_s: float = 300.0,
        seed: int | None = None,
        clock=time.time,
    ) -> None:
        self._num_layers: dict[str, int] = {}
        self._offers: dict[str, dict[str, Offer]] = {}
        self._tables: dict[str, HopTable] = {}
        self._min_expiry: dict[str, float] = {}
        self._penalties: dict[str, _Penalty] = {}
        self._failures: dict[str, int] = {}
        self.failure_penalty_ms = failure_penalty_ms
        self.failure_ttl_s = failure_ttl_s
        self._rng = random.Random(seed)
        self._clock = clock
        for model_id, layers in (models or {}).items():
            self.add_model(model_id, layers)

    # ----- the book ---------------------------------------------------------------------------------
    def add_model(self, model_id: str, num_layers: int) -> None:
        if num_layers <= 0:
            raise ValueError(f"model {model_id!r}: num_layers must be positive, got {num_layers}")
        if self._num_layers.get(model_id, num_layers) != num_layers:
            raise ValueError(f"model {model_id!r} is already registered with {self._num_layers[model_id]} layers")
        self._num_layers[model_id] = num_layers
        self._offers.setdefault(model_id, {})

    def num_layers(self, model_id: str) -> int:
        try:
            return self._num_layers[model_id]
        except KeyError:
            raise UnknownModelError(f"model {model_id!r} is not registered with the planner") from None

    def upsert(self, offer: Offer) -> None:
        """Add or replace the offer of (offer.node_id, offer.model_id)."""
        self._validate(offer)
        book = self._offers[offer.model_id]
        old = book.get(offer.node_id)
        book[offer.node_id] = offer
        self._min_expiry[offer.model_id] = min(self._min_expiry.get(offer.model_id, math.inf), offer.expires_at)
        if old is None or _cost_key(old) != _cost_key(offer):
            self._tables.pop(offer.model_id, None)

    def remove(self, node_id: str, model_id: str | None = None) -> int:
        """Drop a node's offers (for one model or all); returns how many were removed."""
        removed = 0
        for mid in [model_id] if model_id is not None else list(self._offers):
            if self._offers.get(mid, {}).pop(node_id, None) is not None:
                removed += 1
                self._tables.pop(mid, None)
        return removed

    def expire(self, now: float) -> int:
        """Drop offers whose expires_at <= now; returns how many were dropped."""
        dropped = 0
        for mid, book in self._offers.items():
            if self._min_expiry.get(mid, math.inf) > now:
                continue
            stale = [nid for nid, o in book.items() if o.expires_at <= now]
            for nid in stale:
                del book[nid]
            if stale:
                dropped += len(stale)
                self._tables.pop(mid, None)
            self._min_expiry[mid] = min((o.expires_at for o in book.values()), default=math.inf)
        return dropped

    def offers(self, model_id: str) -> list[Offer]:
        self.num_layers(model_id)
        return list(self._offers[model_id].values())

    def coverage(self, model_id: str) -> list[int]:
        """How many eligible (routable, free-slot) offers serve each layer."""
        counts = [0] * (self.num_layers(model_id) + 1)
        for o in self._offers[model_id].values():
            if o.routable and o.free_slots > 0:
                counts[o.start] += 1
                counts[o.end] -= 1
        return list(np.cumsum(counts[:-1]).tolist())

    # ----- failures ---------------------------------------------------------------------------------
    def report_failure(self, node_id: str, now: float | None = None) -> None:
        """Penalise a node that failed: +failure_penalty_ms per recent failure, until failure_ttl_s passes."""
        now = self._clock() if now is None else now
        self._drop_expired_penalties(now)
        count = self._failures.get(node_id, 0) + 1
        self._failures[node_id] = count
        self._penalties[node_id] = _Penalty(round(self.failure_penalty_ms * 1000) * count, now + self.failure_ttl_s)
        self._invalidate_node(node_id)

    def penalty_ms(self, node_id: str, now: float | None = None) -> float:
        self._drop_expired_penalties(self._clock() if now is None else now)
        p = self._penalties.get(node_id)
        return p.us / 1000 if p else 0.0

    def _drop_expired_penalties(self, now: float) -> None:
        for node_id in [n for n, p in self._penalties.items() if p.until <= now]:
            del self._penalties[node_id]
            self._failures.pop(node_id, None)
            self._invalidate_node(node_id)

    def _invalidate_node(self, node_id: str) -> None:
        for mid, book in self._offers.items():
            if node_id in book:
                self._tables.pop(mid, None)

    # ----- quotes -----------------------------------------------------------------------------------
    def prepare(self, model_id: str, now: float | None = None) -> None:
        """Build the model's index now (hop table and the search's bound tables for whole-model quotes),
        e.g. right after a batch of book updates, so that the next quotes do not pay for it. Optional:
        quotes build whatever is missing on their own."""
        num_layers = self.num_layers(model_id)
        now = self._clock() if now is None else now
        self.expire(now)
        self._drop_expired_penalties(now)
        prepare(self._table(model_id, set()), num_layers)

    def plan(
        self,
        model_id: str,
        max_price_per_1k: int | None = None,
        max_latency_ms: float | None = None,
        objective: Objective = "latency",
        *,
        exclude: Iterable[str] = (),
        now: float | None = None,
    ) -> Route:
        """Best route over all layers [0, L). None for a cap means unlimited. Raises NoRouteError."""
        return self.plan_range(
            model_id,
            0,
            self.num_layers(model_id),
            max_price_per_1k,
            max_latency_ms,
            objective,
            exclude=exclude,
            now=now,
        )

    def plan_range(
        self,
        model_id: str,
        start: int,
        end: int,
        max_price_per_1k: int | None = None,
        max_latency_ms: float | None = None,
        objective: Objective = "latency",
        *,
        exclude: Iterable[str] = (),
        now: float | None = None,
    ) -> Route:
        """Best route over layers [start, end) only -- for re-planning the missing span on fail-over."""
        num_layers = self.num_layers(model_id)
        if not 0 <= start < end <= num_layers:
            raise ValueError(f"layer range [{start}, {end}) is not inside [0, {num_layers})")
        if objective not in ("latency", "price"):
            raise ValueError(f"objective must be 'latency' or 'price', got {objective!r}")
        if max_price_per_1k is not None and max_price_per_1k < 0:
            raise ValueError("max_price_per_1k must be >= 0")
        if max_latency_ms is not None and max_latency_ms < 0:
            raise ValueError("max_latency_ms must be >= 0")
        now = self._clock() if now is None else now
        self.expire(now)
        self._drop_expired_penalties(now)
        excluded = set(exclude)
        table = self._table(model_id, excluded)

        gaps = _gaps(table.covered, start, end)
        if gaps:
            raise UncoveredLayersError(self._uncovered_reason(model_id, gaps, excluded), gaps)
        quantum = table.offers.price_quantum
        # Index prices are multiples of the quantum: price <= cap  <=>  units <= cap // quantum.
        price_cap: float = math.inf if max_price_per_1k is None else max_price_per_1k // quantum
        lat_cap: float = math.inf if max_latency_ms is None else math.floor(max_latency_ms * 1000 + 1e-6)

        fastest = table.best_to_end(end, "latency")
        cheapest = table.best_to_end(end, "price")
        if fastest.primary[start] > lat_cap:
            raise LatencyCapError(fastest.primary[start] / 1000, float(max_latency_ms or 0))
        if cheapest.primary[start] > price_cap:
            raise PriceCapError(int(cheapest.primary[start]) * quantum, int(max_price_per_1k or 0))
        # When the unconstrained lexicographic optimum already meets the other cap it is the answer, and
        # its equally good alternatives are known (ties in the DP), so the choice among them is random.
        best = fastest if objective == "latency" else cheapest
        lat, price = (best.primary[start], best.secondary[start])
        if objective == "price":
            lat, price = price, lat
        if lat <= lat_cap and price <= price_cap:
            path = self._walk_ties(table, best, start, end, objective)
        else:
            found = search(table, start, end, price_cap, lat_cap, objective)
            if found is None:
                raise self._conflict(table, start, end, price_cap, lat_cap, objective, max_price_per_1k, max_latency_ms)
            path = found
        return self._route(model_id, table, path)

    # ----- internals --------------------------------------------------------------------------------
    def _validate(self, offer: Offer) -> None:
        layers = self._num_layers.get(offer.model_id)
        if layers is None:
            raise InvalidOfferError(f"offer of {offer.node_id!r}: unknown model {offer.model_id!r}")
        if not 0 <= offer.start < offer.end <= layers:
            raise InvalidOfferError(
                f"offer of {offer.node_id!r}: span [{offer.start}, {offer.end}) is not inside [0, {layers})"
            )
        if not 0 <= offer.price_per_1k <= MAX_PRICE_PER_1K:
            raise InvalidOfferError(f"offer of {offer.node_id!r}: price_per_1k out of range")
        for name in ("ms_per_layer", "rtt_ms"):
            value = getattr(offer, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidOfferError(f"offer of {offer.node_id!r}: {name} must be finite and >= 0")
        if offer.free_slots < 0 or offer.max_slots < 0:
            raise InvalidOfferError(f"offer of {offer.node_id!r}: slot counts must be >= 0")

    def _table(self, model_id: str, excluded: set[str]) -> HopTable:
        book = self._offers[model_id]
        if excluded & book.keys():  # fail-over re-planning: a one-off table without those nodes
            return self._build(model_id, excluded)
        table = self._tables.get(model_id)
        if table is None:
            table = self._tables[model_id] = self._build(model_id, set())
        return table

    def _build(self, model_id: str, excluded: set[str]) -> HopTable:
        rows = [
            o for o in self._offers[model_id].values() if o.routable and o.free_slots > 0 and o.node_id not in excluded
        ]
        penalty = {n: p.us for n, p in self._penalties.items()}
        units, quantum, exact = _price_units([o.price_per_1k for o in rows], self._num_layers[model_id])
        arrays = OfferArrays(
            node_ids=tuple(o.node_id for o in rows),
            start=np.array([o.start for o in rows], dtype=np.int64),
            end=np.array([o.end for o in rows], dtype=np.int64),
            rtt_us=np.array([round(o.rtt_ms * 1000) + penalty.get(o.node_id, 0) for o in rows], dtype=np.int64),
            layer_us=np.array([round(o.ms_per_layer * 1000) for o in rows], dtype=np.int64),
            price=np.array(units, dtype=np.int64),
            price_quantum=quantum,
            price_exact=exact,
        )
        return build_hop_table(arrays, self._num_layers[model_id])

    def _walk_ties(self, table: HopTable, best, start: int, end: int, objective: str) -> list[SearchHop]:
        path: list[SearchHop] = []
        b = start
        while b != end:
            j, h = self._rng.choice(best.succ[b])
            hs = table.hops[b][j]
            path.append(SearchHop(b, j, hs.row[h], hs.lat[h], -hs.neg_price[h]))
            b = j
        return path

    def _route(self, model_id: str, table: HopTable, path: list[SearchHop]) -> Route:
        book = self._offers[model_id]
        chosen: list[tuple[str, SearchHop]] = []
        for hop in path:
            rows = table.offers.equivalents(hop.start, hop.end, hop.lat_us, hop.price)
            # Equal nodes for this hop: pick one at random, weighted by current free slots (live values).
            weights = [book[table.offers.node_ids[r]].free_slots for r in rows]
            row = self._rng.choices(rows, weights=weights)[0]
            node = table.offers.node_ids[row]
            # Exact price in wei from the offer itself (the index may count in units of a quantum).
            hop = SearchHop(hop.start, hop.end, row, hop.lat_us, (hop.end - hop.start) * book[node].price_per_1k)
            if chosen and chosen[-1][0] == node:  # only possible with rtt 0: merging costs nothing
                prev = chosen[-1][1]
                hop = SearchHop(prev.start, hop.end, row, prev.lat_us + hop.lat_us, prev.price + hop.price)
                chosen.pop()
            chosen.append((node, hop))
        return Route(
            model_id=model_id,
            hops=tuple(Hop(node, h.start, h.end) for node, h in chosen),
            price_per_1k=sum(h.price for _, h in chosen),
            est_latency_ms=sum(h.lat_us for _, h in chosen) / 1000,
            hop_price_per_1k=tuple(h.price for _, h in chosen),
            hop_latency_ms=tuple(h.lat_us / 1000 for _, h in chosen),
        )

    def _uncovered_reason(self, model_id: str, gaps: list[tuple[int, int]], excluded: set[str]) -> str:
        parts = []
        for a, z in gaps:
            serving = [o for o in self._offers[model_id].values() if o.start < z and o.end > a]
            full = sum(1 for o in serving if o.routable and o.free_slots == 0)
            unroutable = sum(1 for o in serving if not o.routable)
            skipped = sum(1 for o in serving if o.node_id in excluded)
            why = [
                f"{n} {what}"
                for n, what in ((full, "at capacity"), (unroutable, "not routable"), (skipped, "excluded"))
                if n
            ]
            where = f"layer {a}" if z - a == 1 else f"layers {a}-{z - 1}"
            parts.append(
                f"{where} {'is' if z - a == 1 else 'are'} served by no routable node with free slots"
                + (f" ({', '.join(why)})" if why else "")
            )
        return f"model {model_id!r}: " + "; ".join(parts)

    def _conflict(self, table, start, end, price_cap, lat_cap, objective, max_price, max_latency) -> NoRouteError:
        # Say how far the best route under the objective's own cap misses the other cap.
        if objective == "latency":
            alt = search(table, start, end, price_cap, math.inf, "latency")
            got = sum(h.lat_us for h in alt or []) / 1000
            msg = f"fastest route within max_price {max_price} takes {got:g} ms > max_latency {max_latency:g} ms"
        else:
            alt = search(table, start, end, math.inf, lat_cap, "price")
            got_price = sum(h.price for h in alt or []) * table.offers.price_quantum
            msg = f"cheapest route within max_latency {max_latency:g} ms costs {got_price} > max_price {max_price}"
        return CapsConflictError(msg)


def _cost_key(o: Offer) -> tuple:
    return (o.start, o.end, o.price_per_1k, o.ms_per_layer, o.rtt_ms, o.routable, o.free_slots > 0)


def _price_units(prices: list[int], num_layers: int) -> tuple[list[int], int, bool]:
    """Prices as int64-safe units of a quantum: (units, quantum in wei, exact).

    The quantum is the gcd of the prices, so units * quantum == price exactly and every comparison and
    tie in the index is exact. Real prices are decimal amounts of an 18-decimal token (0.01 INFER =
    10**16 wei), so the gcd is large and the units small. Only if num_layers * max(units) would still
    overflow the int64 columns (prices up to MAX_PRICE_PER_1K with no common factor) is the quantum raised
    and prices rounded UP to it: routes then still meet the price cap, but the choice among routes whose
    prices differ by less than num_layers quanta is not exact (price_exact=False). Route.price_per_1k is
    always the exact sum in wei.
    """
    quantum = math.gcd(*prices) or 1
    units = [p // quantum for p in prices]
    top = max(units, default=0)
    if top * num_layers < _INDEX_PRICE_LIMIT:
        return units, quantum, True
    quantum = -(-max(prices) * num_layers // _INDEX_PRICE_LIMIT) + 1
    return [-(-p // quantum) for p in prices], quantum, False


def _gaps(covered: list[bool], start: int, end: int) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    layer = start
    while layer < end:
        if covered[layer]:
            layer += 1
            continue
        gap_start = layer
        while layer < end and not covered[layer]:
            layer += 1
        gaps.append((gap_start, layer))
    return gaps
