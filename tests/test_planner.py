"""Route planner: error paths, exact optimality vs brute force, overlap and cut, load spread, penalties."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferchain.marketplace import route_search
from inferchain.marketplace.planner import (
    CapsConflictError,
    Hop,
    InvalidOfferError,
    LatencyCapError,
    NoRouteError,
    Offer,
    PriceCapError,
    RoutePlanner,
    UncoveredLayersError,
    UnknownModelError,
    ms_per_layer_from_tokens_per_s,
)

M = "m"


def offer(node, start, end, price=10, ms=1.0, rtt=10.0, free=4, **kw) -> Offer:
    fields = dict(
        node_id=node,
        model_id=M,
        start=start,
        end=end,
        price_per_1k=price,
        ms_per_layer=ms,
        rtt_ms=rtt,
        free_slots=free,
        max_slots=max(free, 4),
        expires_at=1e12,
    )
    fields.update(kw)
    return Offer(**fields)  # type: ignore[arg-type]


def planner(layers: int, *offers: Offer, seed: int = 0, **kw) -> RoutePlanner:
    p = RoutePlanner({M: layers}, seed=seed, **kw)
    for o in offers:
        p.upsert(o)
    return p


def route_cost(route, offers: dict[str, Offer]) -> tuple[float, int]:
    lat, price = 0.0, 0
    for node, a, z in route.hops:
        o = offers[node]
        assert o.start <= a < z <= o.end
        lat += o.rtt_ms + (z - a) * o.ms_per_layer
        price += (z - a) * o.price_per_1k
    return lat, price


def assert_chain(route, start: int, end: int) -> None:
    assert route.hops[0].start == start and route.hops[-1].end == end
    for prev, nxt in zip(route.hops, route.hops[1:], strict=False):
        assert prev.end == nxt.start


# ----- error paths ---------------------------------------------------------------------------------------


def test_uncovered_layers_are_named():
    p = planner(30, offer("a", 0, 12), offer("b", 18, 30))
    with pytest.raises(UncoveredLayersError) as err:
        p.plan(M)
    assert err.value.gaps == [(12, 18)]
    assert "layers 12-17 are served by no routable node" in str(err.value)


def test_uncovered_reason_counts_full_unroutable_and_excluded_nodes():
    p = planner(10, offer("a", 0, 10), offer("full", 0, 10, free=0), offer("jailed", 0, 10, routable=False))
    with pytest.raises(UncoveredLayersError) as err:
        p.plan(M, exclude={"a"})
    reason = str(err.value)
    assert "layers 0-9" in reason
    assert "1 at capacity" in reason and "1 not routable" in reason and "1 excluded" in reason


def test_single_uncovered_layer_and_empty_book():
    p = planner(5, offer("a", 0, 4))
    with pytest.raises(UncoveredLayersError, match="layer 4 is served by no routable node"):
        p.plan(M)
    with pytest.raises(UncoveredLayersError, match="layers 0-4"):
        planner(5).plan(M)


def test_price_cap_error_names_cheapest_price():
    p = planner(10, offer("a", 0, 10, price=7), offer("b", 0, 10, price=9))
    with pytest.raises(PriceCapError, match="cheapest route costs 70 > max_price 69") as err:
        p.plan(M, max_price_per_1k=69)
    assert (err.value.cheapest, err.value.max_price) == (70, 69)
    assert p.plan(M, max_price_per_1k=70).price_per_1k == 70


def test_latency_cap_error_names_fastest_route():
    p = planner(10, offer("a", 0, 10, ms=2.0, rtt=5.0))
    with pytest.raises(LatencyCapError, match="fastest route takes 25 ms > max_latency 24.5 ms"):
        p.plan(M, max_latency_ms=24.5, objective="price")
    assert p.plan(M, max_latency_ms=25).est_latency_ms == 25


def test_caps_that_cannot_be_met_together():
    # fast+dear or slow+cheap: each cap alone is fine, both together are not.
    p = planner(10, offer("fast", 0, 10, price=100, ms=1, rtt=1), offer("cheap", 0, 10, price=1, ms=10, rtt=1))
    with pytest.raises(CapsConflictError, match="fastest route within max_price 50 takes 101 ms > max_latency 50"):
        p.plan(M, max_price_per_1k=50, max_latency_ms=50, objective="latency")
    with pytest.raises(
        CapsConflictError, match="cheapest route within max_latency 50 ms costs 604 > max_price 50"
    ):  # 6 fast + 4 cheap layers
        p.plan(M, max_price_per_1k=50, max_latency_ms=50, objective="price")


def test_unknown_model_and_bad_requests():
    p = planner(10, offer("a", 0, 10))
    with pytest.raises(UnknownModelError, match="'nope' is not registered"):
        p.plan("nope")
    assert issubclass(UnknownModelError, NoRouteError)
    with pytest.raises(ValueError, match="objective"):
        p.plan(M, objective="cheap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not inside"):
        p.plan_range(M, 5, 5)
    with pytest.raises(ValueError, match="not inside"):
        p.plan_range(M, 0, 11)
    with pytest.raises(ValueError, match="max_price"):
        p.plan(M, max_price_per_1k=-1)
    with pytest.raises(ValueError, match="max_latency"):
        p.plan(M, max_latency_ms=-1)


@pytest.mark.parametrize(
    "bad, match",
    [
        (offer("a", 0, 10, model_id="other"), "unknown model"),
        (offer("a", 3, 3), r"span \[3, 3\)"),
        (offer("a", 0, 11), r"span \[0, 11\)"),
        (offer("a", 0, 10, price=-1), "price_per_1k"),
        (offer("a", 0, 10, ms=float("nan")), "ms_per_layer"),
        (offer("a", 0, 10, rtt=-1.0), "rtt_ms"),
        (offer("a", 0, 10, free=-1), "slot"),
    ],
)
def test_invalid_offers_are_refused(bad, match):
    with pytest.raises(InvalidOfferError, match=match):
        planner(10).upsert(bad)


def test_model_registration_is_checked():
    p = planner(10)
    with pytest.raises(ValueError, match="already registered with 10 layers"):
        p.add_model(M, 12)
    with pytest.raises(ValueError, match="positive"):
        p.add_model("x", 0)


# ----- overlap, cut, eligibility -------------------------------------------------------------------------


def test_overlapping_spans_are_cut():
    # a is slow, b is fast but starts at 10: best is a[0,10) + b[10,30) -- b's span overlaps a's.
    p = planner(30, offer("a", 0, 30, ms=5.0), offer("b", 10, 30, ms=1.0))
    route = p.plan(M)
    assert route.hops == (Hop("a", 0, 10), Hop("b", 10, 30))
    assert route.est_latency_ms == 10 + 50 + 10 + 20
    assert route.hop_latency_ms == (60.0, 30.0)
    assert route.price_per_1k == 300 and route.hop_price_per_1k == (100, 200)


def test_price_cap_cuts_inside_both_spans():
    # fast is dear, slow is cheap, both serve everything: the budget decides where to switch.
    fast = offer("fast", 0, 10, price=10, ms=1.0, rtt=1.0)
    slow = offer("slow", 0, 10, price=1, ms=5.0, rtt=1.0)
    p = planner(10, fast, slow)
    route = p.plan(M, max_price_per_1k=64)
    # k fast layers: price 10k + (10-k) <= 64 -> k <= 6; latency 2 + 6 + 4*5 = 28
    assert route.price_per_1k == 64 and route.est_latency_ms == 28
    assert sorted(h.end - h.start for h in route.hops) == [4, 6]


def test_full_unroutable_expired_and_removed_offers_are_skipped():
    p = planner(
        10,
        offer("full", 0, 10, ms=0.1, free=0),
        offer("jailed", 0, 10, ms=0.1, routable=False),
        offer("old", 0, 10, ms=0.1, expires_at=100.0),
        offer("gone", 0, 10, ms=0.1),
        offer("ok", 0, 10, ms=1.0),
    )
    assert p.remove("gone") == 1 and p.remove("gone") == 0
    assert p.plan(M, now=200.0).hops == (Hop("ok", 0, 10),)
    assert [o.node_id for o in p.offers(M)] == ["full", "jailed", "ok"]  # "old" expired during the quote
    p.upsert(offer("full", 0, 10, ms=0.1, free=1))  # a slot frees up: eligible again
    assert p.plan(M, now=200.0).hops == (Hop("full", 0, 10),)


def test_expire_returns_count_and_coverage_counts_eligible_offers():
    p = planner(4, offer("a", 0, 2, expires_at=5.0), offer("b", 0, 4), offer("c", 2, 4, free=0))
    assert p.coverage(M) == [2, 2, 1, 1]
    assert p.expire(5.0) == 1
    assert p.coverage(M) == [1, 1, 1, 1]


def test_free_slot_updates_keep_the_index_and_move_the_weights():
    p = planner(4, offer("a", 0, 4), offer("b", 0, 4))
    p.plan(M)
    table = p._tables[M]
    p.upsert(offer("a", 0, 4, free=1))
    assert p._tables[M] is table  # no cost change: no rebuild
    p.upsert(offer("a", 0, 4, price=11))
    assert M not in p._tables


def test_plan_range_and_exclude_for_failover():
    offers = [offer("a", 0, 10, ms=1), offer("b", 10, 20, ms=1), offer("c", 10, 20, ms=2), offer("d", 20, 30)]
    p = planner(30, *offers)
    assert p.plan(M).hops == (Hop("a", 0, 10), Hop("b", 10, 20), Hop("d", 20, 30))
    repl = p.plan_range(M, 10, 20, exclude={"b"})
    assert repl.hops == (Hop("c", 10, 20),)
    assert repl.est_latency_ms == 10 + 20
    with pytest.raises(UncoveredLayersError, match=r"layers 10-19 .*\(2 excluded\)"):
        p.plan_range(M, 10, 20, exclude={"b", "c"})
    assert p.plan_range(M, 12, 15).hops == (Hop("b", 12, 15),)  # sub-span of an offer


def test_throughput_conversion():
    assert ms_per_layer_from_tokens_per_s(50.0, 10) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        ms_per_layer_from_tokens_per_s(0, 10)


# ----- load spreading and failure penalties --------------------------------------------------------------


def test_equal_nodes_are_spread_and_weighted_by_free_slots():
    p = planner(10, offer("a", 0, 10, free=8), offer("b", 0, 10, free=8), offer("c", 0, 10, free=2), seed=1)
    counts = Counter(p.plan(M).hops[0].node_id for _ in range(1800))
    assert set(counts) == {"a", "b", "c"}
    assert counts["a"] > 2 * counts["c"] and counts["b"] > 2 * counts["c"]
    # seedable: the same seed gives the same sequence of choices
    again = planner(10, offer("a", 0, 10, free=8), offer("b", 0, 10, free=8), offer("c", 0, 10, free=2), seed=1)
    first = [again.plan(M).hops[0].node_id for _ in range(50)]
    assert first == _sequence(seed=1, n=50)


def _sequence(seed: int, n: int) -> list[str]:
    p = planner(10, offer("a", 0, 10, free=8), offer("b", 0, 10, free=8), offer("c", 0, 10, free=2), seed=seed)
    return [p.plan(M).hops[0].node_id for _ in range(n)]


def test_structurally_different_equal_routes_are_spread():
    # one node for [0,10) or two half-span nodes with zero-cost... same totals either way
    whole = offer("whole", 0, 10, ms=1.0, rtt=10.0)
    left = offer("left", 0, 5, ms=1.0, rtt=5.0)
    right = offer("right", 5, 10, ms=1.0, rtt=5.0)
    p = planner(10, whole, left, right, seed=3)
    shapes = Counter(len(p.plan(M).hops) for _ in range(400))
    assert shapes[1] > 50 and shapes[2] > 50


def test_failed_node_is_penalised_until_the_penalty_expires():
    p = planner(10, offer("a", 0, 10, ms=1.0), offer("b", 0, 10, ms=1.5), failure_penalty_ms=100, failure_ttl_s=60)
    assert p.plan(M, now=0).hops[0].node_id == "a"
    p.report_failure("a", now=10.0)
    assert p.penalty_ms("a", now=10.0) == 100
    route = p.plan(M, now=20.0)
    assert route.hops[0].node_id == "b"
    p.report_failure("a", now=30.0)  # a second failure inside the window stacks
    assert p.penalty_ms("a", now=30.0) == 200
    with pytest.raises(LatencyCapError):
        p.plan(M, max_latency_ms=20, exclude={"b"}, now=31.0)  # penalty counts in the estimate
    assert p.plan(M, now=89.0).hops[0].node_id == "b"
    assert p.plan(M, now=90.0).hops[0].node_id == "a"  # 60 s after the last failure: forgiven
    assert p.penalty_ms("a", now=90.0) == 0


def test_zero_rtt_ties_never_chain_a_node_to_itself():
    p = planner(10, offer("a", 0, 10, rtt=0.0), offer("b", 0, 5, rtt=0.0), offer("c", 5, 10, rtt=0.0), seed=2)
    for _ in range(200):
        hops = p.plan(M).hops
        assert all(x.node_id != y.node_id for x, y in zip(hops, hops[1:], strict=False))
        assert_chain(p.plan(M), 0, 10)


# ----- large (real token) prices -------------------------------------------------------------------------

INFER = 10**18  # wei per INFER


def test_real_token_prices_are_exact():
    # 0.01 INFER = 1e16 wei per 1k tokens per layer, up to 1e6 INFER (1e24 wei): far beyond int64 sums
    p = planner(
        80,
        offer("a", 0, 80, price=10**6 * INFER, ms=0.1, rtt=5.0),
        offer("b", 0, 40, price=INFER // 100, ms=1.0, rtt=20.0),
        offer("c", 40, 80, price=INFER // 100 + 10**15, ms=1.0, rtt=20.0),
    )
    fast = p.plan(M)
    assert fast.hops == (Hop("a", 0, 80),) and fast.price_per_1k == 80 * 10**6 * INFER
    cheap = p.plan(M, objective="price")
    assert cheap.price_per_1k == 40 * (INFER // 100) + 40 * (INFER // 100 + 10**15)
    assert isinstance(cheap.price_per_1k, int)
    # a price cap exactly at a route's price admits it, one wei less does not
    capped = p.plan(M, max_price_per_1k=cheap.price_per_1k, objective="latency")
    assert capped.price_per_1k == cheap.price_per_1k
    with pytest.raises(PriceCapError) as err:
        p.plan(M, max_price_per_1k=cheap.price_per_1k - 1)
    assert err.value.cheapest == cheap.price_per_1k


@pytest.mark.parametrize("base, step", [(10**15, 1), (10**22, 10**12), (10**24, 10**16)])
def test_large_prices_match_brute_force_with_ties(base, step):
    # binding caps with large prices that differ by one step (one wei at 1e15, 1e-6 INFER at 1e22 wei):
    # the index (exact whenever num_layers * price / gcd(prices) < 2**62) must see the difference
    offers = [
        offer("a", 0, 4, price=base + step, ms=1.0, rtt=10.0),
        offer("b", 0, 4, price=base, ms=1.0, rtt=10.0),
        offer("c", 0, 2, price=base - 7 * step, ms=2.0, rtt=10.0),
        offer("d", 2, 4, price=base - 5 * step, ms=2.0, rtt=10.0),
        offer("e", 0, 4, price=3 * base, ms=0.5, rtt=1.0),
    ]
    p = planner(4, *offers)
    by_node = {o.node_id: o for o in offers}
    for cap in (4 * base, 4 * base - 1, 4 * base - 24 * step, 12 * base, 4 * base + 3 * step):
        for objective in ("latency", "price"):
            want = brute_force(offers, 0, 4, cap, math.inf, objective)
            route = p.plan(M, max_price_per_1k=cap, objective=objective)
            lat, price = route_cost(route, by_node)
            assert price == route.price_per_1k <= cap
            assert ((lat, price) if objective == "latency" else (price, lat)) == want
    assert p.plan(M, max_price_per_1k=4 * base).hops == (Hop("b", 0, 4),)  # not "a", one wei dearer per layer


def test_incommensurable_huge_prices_still_meet_the_cap():
    # no common quantum fits int64: prices are rounded up inside the index, caps are still honoured
    offers = [offer("a", 0, 80, price=10**27, ms=0.1, rtt=1.0), offer("b", 0, 80, price=10**27 - 10**21 + 1, ms=1.0)]
    p = planner(80, *offers)
    assert p.plan(M, max_price_per_1k=100 * 10**27).hops == (Hop("a", 0, 80),)
    route = p.plan(M, max_price_per_1k=80 * 10**27 - 10**22)  # excludes "a" by 1e22 wei
    assert route.price_per_1k == route_cost(route, {o.node_id: o for o in offers})[1] <= 80 * 10**27 - 10**22
    assert route.hops != (Hop("a", 0, 80),)
    with pytest.raises(InvalidOfferError):
        p.upsert(offer("c", 0, 80, price=10**27 + 1))


# ----- exact optimality against brute force --------------------------------------------------------------


def brute_force(offers: list[Offer], start: int, end: int, max_price, max_lat, objective, exclude=()):
    usable = [o for o in offers if o.routable and o.free_slots > 0 and o.node_id not in exclude]
    best = None

    def walk(b: int, lat: float, price: int) -> None:
        nonlocal best
        if b == end:
            if price <= max_price and lat <= max_lat:
                key = (lat, price) if objective == "latency" else (price, lat)
                best = key if best is None or key < best else best
            return
        for o in usable:
            if o.start <= b < o.end:
                for j in range(b + 1, min(o.end, end) + 1):
                    walk(j, lat + o.rtt_ms + (j - b) * o.ms_per_layer, price + (j - b) * o.price_per_1k)

    walk(start, 0.0, 0)
    return best


@st.composite
def instances(draw):
    layers = draw(st.integers(2, 7))
    # Usually lay down a covering chain first so that most instances have routes and binding caps.
    spans = []
    if draw(st.integers(0, 3)):
        cuts = sorted(draw(st.sets(st.integers(1, layers - 1), max_size=3)))
        spans += list(zip([0, *cuts], [*cuts, layers], strict=True))
    for _ in range(draw(st.integers(1 if not spans else 0, 4))):
        a = draw(st.integers(0, layers - 1))
        spans.append((a, draw(st.integers(a + 1, layers))))
    offers = [
        offer(
            f"n{i}",
            a,
            z,
            price=draw(st.integers(0, 20)),
            ms=float(draw(st.integers(0, 10))),
            rtt=float(draw(st.integers(0, 20))),
            free=draw(st.sampled_from([0, 1, 3, 3, 3])),
            routable=draw(st.sampled_from([False, True, True, True])),
        )
        for i, (a, z) in enumerate(spans)
    ]
    start = draw(st.integers(0, layers - 1))
    end = draw(st.integers(start + 1, layers))
    max_price = draw(st.none() | st.integers(0, 20 * layers))
    max_lat = draw(st.none() | st.integers(0, 10 * layers + 40))
    objective = draw(st.sampled_from(["latency", "price"]))
    exclude = draw(st.sets(st.sampled_from([o.node_id for o in offers]), max_size=1))
    return layers, offers, start, end, max_price, max_lat, objective, exclude


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.integers(0, 3))
def test_planner_matches_brute_force(instance, seed):
    layers, offers, start, end, max_price, max_lat, objective, exclude = instance
    p = planner(layers, *offers, seed=seed)
    price_cap = math.inf if max_price is None else max_price
    lat_cap = math.inf if max_lat is None else max_lat
    want = brute_force(offers, start, end, price_cap, lat_cap, objective, exclude)
    try:
        route = p.plan_range(M, start, end, max_price, max_lat, objective, exclude=exclude)
    except NoRouteError:
        assert want is None
        return
    assert want is not None
    assert_chain(route, start, end)
    by_node = {o.node_id: o for o in offers}
    assert all(by_node[h.node_id].routable and by_node[h.node_id].free_slots > 0 for h in route.hops)
    assert not {h.node_id for h in route.hops} & exclude
    lat, price = route_cost(route, by_node)
    assert (lat, price) == (route.est_latency_ms, route.price_per_1k)
    assert price <= price_cap and lat <= lat_cap
    got = (lat, price) if objective == "latency" else (price, lat)
    assert got == want


@settings(max_examples=150, deadline=None)
@given(instances())
def test_error_kind_matches_brute_force(instance):
    layers, offers, start, end, max_price, max_lat, objective, exclude = instance
    p = planner(layers, *offers)
    inf = math.inf
    try:
        p.plan_range(M, start, end, max_price, max_lat, objective, exclude=exclude)
    except UncoveredLayersError:
        assert brute_force(offers, start, end, inf, inf, objective, exclude) is None
    except LatencyCapError as err:
        fastest = brute_force(offers, start, end, inf, inf, "latency", exclude)
        assert fastest is not None and fastest[0] == err.fastest_ms > max_lat
    except PriceCapError as err:
        cheapest = brute_force(offers, start, end, inf, inf, "price", exclude)
        assert cheapest is not None and cheapest[0] == err.cheapest > max_price
    except CapsConflictError:
        assert brute_force(offers, start, end, max_price, max_lat, objective, exclude) is None
        assert brute_force(offers, start, end, max_price, inf, objective, exclude) is not None
        assert brute_force(offers, start, end, inf, max_lat, objective, exclude) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.floats(0, 1), st.floats(0, 1.5), st.integers(0, 3))
def test_planner_matches_brute_force_when_caps_bind(instance, frac, other_frac, seed):
    """Caps between the cheapest and the fastest route: the exact search (not the shortcut) decides."""
    layers, offers, start, end, _, _, objective, exclude = instance
    inf = math.inf
    fastest = brute_force(offers, start, end, inf, inf, "latency", exclude)
    cheapest = brute_force(offers, start, end, inf, inf, "price", exclude)
    if fastest is None or cheapest is None:
        return
    (fast_lat, fast_price), (cheap_price, cheap_lat) = fastest, cheapest
    if objective == "latency":  # binding price cap, and a latency cap that may or may not bind
        max_price = round(cheap_price + frac * (fast_price - cheap_price))
        max_lat = round(fast_lat + other_frac * (cheap_lat - fast_lat))
    else:
        max_lat = round(fast_lat + frac * (cheap_lat - fast_lat))
        max_price = round(cheap_price + other_frac * (fast_price - cheap_price))
    want = brute_force(offers, start, end, max_price, max_lat, objective, exclude)
    p = planner(layers, *offers, seed=seed)
    try:
        route = p.plan_range(M, start, end, max_price, max_lat, objective, exclude=exclude)
    except CapsConflictError:
        assert want is None
        return
    assert want is not None
    assert_chain(route, start, end)
    lat, price = route_cost(route, {o.node_id: o for o in offers})
    assert price <= max_price and lat <= max_lat
    assert ((lat, price) if objective == "latency" else (price, lat)) == want


def pareto_reference(offers: list[Offer], layers: int, max_price, max_lat, objective):
    """Exact best (primary, secondary) over [0, layers) by full Pareto fronts per boundary (no bounds)."""
    fronts: dict[int, set[tuple[float, int]]] = {0: {(0.0, 0)}}
    for b in range(layers):
        front = sorted(fronts.pop(b, set()))
        kept, best_price = [], math.inf
        for lat, price in front:  # by latency, then price: keep the points no other beats on both
            if price < best_price:
                kept.append((lat, price))
                best_price = price
        for o in offers:
            for j in range(b + 1, o.end + 1) if o.start <= b < o.end else ():
                hop_lat, hop_price = o.rtt_ms + (j - b) * o.ms_per_layer, (j - b) * o.price_per_1k
                fronts.setdefault(j, set()).update(
                    (lat + hop_lat, price + hop_price)
                    for lat, price in kept
                    if lat + hop_lat <= max_lat and price + hop_price <= max_price
                )
    routes = fronts.get(layers, set())
    return min(((lat, price) if objective == "latency" else (price, lat) for lat, price in routes), default=None)


@st.composite
def medium_instances(draw):
    """12-20 layers, 6-14 overlapping offers (a covering chain first), prices from a wide range."""
    layers = draw(st.integers(12, 20))
    cuts = sorted(draw(st.sets(st.integers(1, layers - 1), min_size=1, max_size=4)))
    spans = list(zip([0, *cuts], [*cuts, layers], strict=True))
    for _ in range(draw(st.integers(5, 10))):
        a = draw(st.integers(0, layers - 1))
        spans.append((a, draw(st.integers(a + 1, layers))))
    scale = draw(st.sampled_from([1, 1000, 10**9 + 7]))
    return layers, [
        offer(
            f"n{i}",
            a,
            z,
            price=draw(st.integers(0, 50)) * scale + draw(st.integers(0, 3)),
            ms=float(draw(st.integers(0, 12))),
            rtt=float(draw(st.integers(0, 30))),
        )
        for i, (a, z) in enumerate(spans)
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(medium_instances(), st.floats(0, 1), st.sampled_from(["latency", "price"]), st.sampled_from([1, 2, 3, 1024]))
def test_coarse_bound_tables_stay_exact(instance, frac, objective, buckets):
    """With 1-3 slack buckets per bound table every hop's extra resource is rounded down by a lot: the bounds
    get loose but must never overestimate, so the search still finds the exact optimum (routes of many hops,
    compared with full Pareto fronts)."""
    layers, offers = instance
    inf = math.inf
    fast_lat, fast_price = pareto_reference(offers, layers, inf, inf, "latency")
    cheap_price, cheap_lat = pareto_reference(offers, layers, inf, inf, "price")
    if objective == "latency":
        max_price, max_lat = round(cheap_price + frac * (fast_price - cheap_price)), None
    else:
        max_price, max_lat = None, round(fast_lat + frac * (cheap_lat - fast_lat))
    price_cap, latency_cap = (inf if c is None else c for c in (max_price, max_lat))  # a cap of 0 is a cap
    want = pareto_reference(offers, layers, price_cap, latency_cap, objective)
    with patch.object(route_search, "BUCKETS", buckets):
        route = planner(layers, *offers).plan(M, max_price, max_lat, objective)
    lat, price = route_cost(route, {o.node_id: o for o in offers})
    assert ((lat, price) if objective == "latency" else (price, lat)) == want


def test_prepare_builds_the_bound_tables_ahead_of_quotes():
    offers = [offer("fast", 0, 10, price=10, ms=1.0, rtt=1.0), offer("slow", 0, 10, price=1, ms=5.0, rtt=1.0)]
    p = planner(10, *offers)
    with pytest.raises(UnknownModelError):
        p.prepare("nope")
    p.prepare(M)
    table = p._tables[M]
    built = {key: len(bounds.tables) for key, bounds in table.search_cache.items()}
    # every scale a quote may pick: price slack up to 90 wei fits one table of 1024 one-wei buckets; latency
    # slack up to 40 ms = 40,000 us takes buckets of 1, 4, 16 or 64 us (40,000 // 1024 = 39 < 64)
    assert built == {("bounds", 10, True): 1, ("bounds", 10, False): 4}
    route = p.plan(M, max_price_per_1k=64)
    assert p._tables[M] is table and route.price_per_1k == 64 and route.est_latency_ms == 28
    p.upsert(dataclasses.replace(offers[0], price_per_1k=11))
    assert M not in p._tables  # a cost change drops the tables with the index
