"""Offer verification: what a peer publishes on an offer topic becomes a planner `Offer` or a typed rejection.

A signed offer is used only if its EIP-712 signature recovers the wallet it names (in this deployment's
NodeStaking domain, so another chain's or contract's signature fails), that wallet is registered, staked,
not jailed and not slashed on the chain (read through `inferchain.wallet.chain.Chain`, cached with a bound on
size and age; `PenaltyWatch` follows the staking contract's Slashed/Jailed events so a slash is not hidden by that
cache), the model is one this market knows, the span lies within the model's layers, the expiry is in
the future and price and throughput are sane. Anything else is a `Rejected` with a `Rejection` reason; the
verifier counts rejections by reason and never raises on peer input.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from inferchain.marketplace.planner import MAX_PRICE_PER_1K, Offer, ms_per_layer_from_tokens_per_s
from inferchain.wallet.offers import InvalidOffer, SignedOffer, model_id_text
from inferchain.wallet.typed_data import Domain
from inferchain.wire import messages as m

DEFAULT_RTT_MS = 20.0  # the market cannot ping for the buyer; quotes assume this per hop unless measured
MAX_FUTURE_ISSUE_S = 300  # clock skew tolerated on issuedAt
MAX_TOKENS_PER_S = 1_000_000.0  # a throughput claim above this is not a measurement
MAX_WALLETS_TRACKED = 4096  # wallet -> peers kept for dropping a slashed wallet's offers


class Rejection(StrEnum):
    MALFORMED = "malformed"  # not an announcement / offer we can parse
    PEER_MISMATCH = "peer_mismatch"  # announcement names another peer than the one that published it
    WRONG_TOPIC = "wrong_topic"  # announcement for another model than its topic's
    UNKNOWN_MODEL = "unknown_model"
    BAD_SPAN = "bad_span"
    EXPIRED = "expired"
    ISSUED_IN_FUTURE = "issued_in_future"
    BAD_SIGNATURE = "bad_signature"  # unreadable, or recovers another address (wrong key, chain or contract)
    OFFER_MISMATCH = "offer_mismatch"  # signed offer disagrees with its announcement (span, model, peer)
    UNSIGNED = "unsigned"  # paid market: an announcement without a signed offer
    UNREGISTERED = "unregistered"
    UNSTAKED = "unstaked"
    JAILED = "jailed"
    SLASHED = "slashed"
    BAD_PRICE = "bad_price"
    BAD_THROUGHPUT = "bad_throughput"
    CHAIN_UNAVAILABLE = "chain_unavailable"


@dataclass(frozen=True)
class Rejected:
    reason: Rejection
    detail: str

    def __bool__(self) -> bool:  # `if result:` reads as "accepted"
        return False


@dataclass(frozen=True)
class Verified:
    """An offer fit for the planner, with what the book stores beside it."""

    offer: Offer
    addrs: tuple[str, ...]
    wallet: str | None  # None: an unsigned announcement of a free swarm
    signed_offer: dict[str, Any] | None


VerifyResult = Verified | Rejected


@dataclass(frozen=True)
class Standing:
    """A wallet's standing on the staking contract, as far as routing cares."""

    registered: bool
    stake: int
    jailed_until: int
    slashed: int
    routable: bool


class StakingReader(Protocol):
    def node_info(self, node: str) -> dict[str, Any]: ...
    def is_routable(self, node: str) -> bool: ...


class StandingCache:
    """Chain standings per wallet, at most `max_entries` of them, each trusted for `ttl_s` seconds.

    Bounded both ways on purpose: a flood of offers from fresh wallets must not grow memory without end,
    and a slash must reach the book within `ttl_s`. Thread-safe (the listener and HTTP handlers share it).
    """

    def __init__(
        self,
        chain: StakingReader,
        ttl_s: float = 30.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self.chain, self.ttl_s, self.max_entries, self._clock = chain, ttl_s, max_entries, clock
        self._entries: OrderedDict[str, tuple[float, Standing]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, wallet: str) -> Standing:
        """The wallet's standing; reads the chain on a miss or a stale entry (may raise on RPC failure)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(wallet)
            if entry is not None and now - entry[0] < self.ttl_s:
                self._entries.move_to_end(wallet)
                self.hits += 1
                return entry[1]
        info = self.chain.node_info(wallet)
        standing = Standing(
            registered=bool(info["registered"]),
            stake=int(info["stake"]),
            jailed_until=int(info["jailed_until"]),
            slashed=int(info["slashed"]),
            routable=bool(self.chain.is_routable(wallet)),
        )
        with self._lock:
            self.misses += 1
            self._entries[wallet] = (now, standing)
            self._entries.move_to_end(wallet)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return standing

    def forget(self, wallet: str | None = None) -> None:
        with self._lock:
            if wallet is None:
                self._entries.clear()
            else:
                self._entries.pop(wallet, None)


class PenaltyWatch:
    """Follows NodeStaking's `Slashed` and `Jailed` events, so a slash reaches routing within one poll (`poll_s`)
    instead of a cache TTL. `penalised(wallet)` is a set lookup (cheap enough for every decode step); each new
    penalty calls `on_penalty(wallet)` callbacks (forget the cached standing, drop the wallet's offers).

    Polls on its own daemon thread after `start()` (bounded: at most `max_blocks` blocks per poll, stops on
    `close()`); `poll()` can also be called directly. Reads go through `chain.contracts.staking` (a
    `inferchain.wallet.chain.Chain`); an RPC failure is counted and retried at the next poll.
    """

    def __init__(
        self,
        chain: Any,
        poll_s: float = 0.5,
        from_block: int | None = None,
        max_blocks: int = 5_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chain, self.poll_s, self.max_blocks, self._clock = chain, poll_s, max_blocks, clock
        self._next_block = chain.deployment.block if from_block is None else from_block
        self._slashed: set[str] = set()
        self._jailed_until: dict[str, int] = {}
        self._callbacks: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def on_penalty(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def slashed(self, wallet: str) -> bool:
        with self._lock:
            return wallet in self._slashed

    def jailed(self, wallet: str) -> bool:
        with self._lock:
            return self._jailed_until.get(wallet, 0) > self._clock()

    def penalised(self, wallet: str | None) -> bool:
        """Ever slashed or jailed now (what a buyer avoids)."""
        return wallet is not None and (self.slashed(wallet) or self.jailed(wallet))

    def poll(self) -> list[str]:
        """Read new events; returns the wallets penalised since the last poll."""
        staking = self.chain.contracts.staking
        head = int(self.chain.w3.eth.block_number)
        new: list[str] = []
        while self._next_block <= head:
            last = min(head, self._next_block + self.max_blocks - 1)
            slashed = staking.events.Slashed.get_logs(from_block=self._next_block, to_block=last)
            jailed = staking.events.Jailed.get_logs(from_block=self._next_block, to_block=last)
            with self._lock:
                for e in slashed:
                    self._slashed.add(str(e["args"]["node"]))
                    new.append(str(e["args"]["node"]))
                for e in jailed:
                    node = str(e["args"]["node"])
                    self._jailed_until[node] = max(self._jailed_until.get(node, 0), int(e["args"]["until"]))
                    new.append(node)
            self._next_block = last + 1
        for wallet in dict.fromkeys(new):
            for callback in self._callbacks:
                callback(wallet)
        return list(dict.fromkeys(new))

    def start(self) -> PenaltyWatch:
        try:
            self.poll()
        except Exception:  # RPC not answering yet: the thread keeps trying
            self.errors += 1
        self._thread = threading.Thread(target=self._run, name="penalty-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # RPC trouble: the next poll starts from the same block
                self.errors += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PenaltyWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class OfferVerifier:
    """Turns announcements and signed offers into planner offers, or typed rejections (counted by reason).

    `models`: model id -> number of layers this market knows. `domain` + `standings`: the deployment the
    offers must be signed for and the chain view to check wallets against (a paid market). Without them only
    unsigned free-swarm announcements can be used, and only when `allow_unsigned`.
    """

    def __init__(
        self,
        models: Mapping[str, int],
        *,
        domain: Domain | None = None,
        standings: StandingCache | None = None,
        allow_unsigned: bool = False,
        reject_slashed: bool = True,
        max_price_per_1k: int = MAX_PRICE_PER_1K,  # per layer, in wei: a sanity bound (1e9 INFER)
        default_rtt_ms: float = DEFAULT_RTT_MS,
        clock: Callable[[], float] = time.time,
        penalties: PenaltyWatch | None = None,
    ) -> None:
        """`penalties`: slashes and jailings seen on-chain as they happen; a penalised wallet is refused without
        waiting for its cached standing to expire (which is also forgotten at once)."""
        if (domain is None) != (standings is None):
            raise ValueError("a paid market needs both the offer domain and a chain view")
        self.models = dict(models)
        self.domain, self.standings = domain, standings
        self.allow_unsigned, self.reject_slashed = allow_unsigned, reject_slashed
        self.max_price_per_1k, self.default_rtt_ms = max_price_per_1k, default_rtt_ms
        self._clock = clock
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._lock = threading.Lock()
        self.penalties = penalties
        self._peers: OrderedDict[str, set[str]] = OrderedDict()  # wallet -> peers its accepted offers named
        if penalties is not None and standings is not None:
            penalties.on_penalty(standings.forget)

    # ----- announcements off the topic ----------------------------------------------------------------
    def verify_announcement(
        self, data: bytes, from_peer: str, topic_model: str | None = None, rtt_ms: float | None = None
    ) -> VerifyResult:
        """One gossip message: `data` as published, `from_peer` the peer id gossipsub says signed it."""
        try:
            announce = m.decode(data)
        except Exception as e:  # wire errors and anything else a peer can make the decoder raise
            return self._reject(Rejection.MALFORMED, f"undecodable announcement: {e}")
        if not isinstance(announce, m.Announce):
            return self._reject(Rejection.MALFORMED, f"not an announcement: {announce.t}")
        return self.verify_announce(announce, from_peer, topic_model, rtt_ms)

    def verify_announce(
        self, announce: m.Announce, from_peer: str, topic_model: str | None = None, rtt_ms: float | None = None
    ) -> VerifyResult:
        try:
            return self._verify_announce(announce, from_peer, topic_model, rtt_ms)
        except Exception as e:  # never let peer input crash the subscriber
            return self._reject(Rejection.MALFORMED, f"{type(e).__name__}: {e}")

    def _verify_announce(
        self, announce: m.Announce, from_peer: str, topic_model: str | None, rtt_ms: float | None
    ) -> VerifyResult:
        info = announce.info
        if announce.peer_id != from_peer:
            return self._reject(
                Rejection.PEER_MISMATCH, f"announcement for {announce.peer_id} published by {from_peer}"
            )
        if topic_model is not None and info.model_id != topic_model:
            return self._reject(
                Rejection.WRONG_TOPIC, f"announcement for {info.model_id} on the topic of {topic_model}"
            )
        rtt = self.default_rtt_ms if rtt_ms is None else rtt_ms
        free_slots = max(0, info.max_sessions - info.sessions)
        if announce.signed_offer is not None:
            result = self.verify_signed(
                announce.signed_offer, peer_id=from_peer, rtt_ms=rtt, free_slots=free_slots,
                max_slots=info.max_sessions, expires_at=announce.expires_at,
            )  # fmt: skip
            if isinstance(result, Verified) and (result.offer.model_id, result.offer.start, result.offer.end) != (
                info.model_id, info.start, info.end,
            ):  # fmt: skip
                self._uncount()
                return self._reject(
                    Rejection.OFFER_MISMATCH,
                    f"signed offer {result.offer.model_id}[{result.offer.start}:{result.offer.end}) differs from "
                    f"the announced {info.model_id}[{info.start}:{info.end})",
                )
            return result
        if self.domain is not None and not self.allow_unsigned:
            return self._reject(Rejection.UNSIGNED, f"peer {from_peer} announced without a signed offer")
        if not self.allow_unsigned:
            return self._reject(Rejection.UNSIGNED, "this market takes no unsigned (free-swarm) announcements")
        checked = self._check_model_span_expiry(info.model_id, info.start, info.end, announce.expires_at)
        if checked is not None:
            return checked
        ms = info.ms_per_layer if info.ms_per_layer > 0 else 1.0
        if not math.isfinite(ms) or ms > 60_000:
            return self._reject(Rejection.BAD_THROUGHPUT, f"ms_per_layer {ms} is not a measurement")
        offer = Offer(
            node_id=from_peer, model_id=info.model_id, start=info.start, end=info.end, price_per_1k=0,
            ms_per_layer=ms, rtt_ms=rtt, free_slots=free_slots, max_slots=info.max_sessions,
            expires_at=announce.expires_at,
        )  # fmt: skip
        return self._accept(Verified(offer, tuple(announce.addrs), None, None))

    # ----- signed offers ----------------------------------------------------------------------------
    def verify_signed(
        self,
        data: Mapping[str, Any],
        *,
        peer_id: str | None = None,
        rtt_ms: float | None = None,
        free_slots: int = 1,
        max_slots: int = 1,
        expires_at: float | None = None,
    ) -> VerifyResult:
        """A signed offer as JSON (`SignedOffer.to_json`). `peer_id`: the libp2p peer it must belong to (one of
        its multiaddrs ends in /p2p/<peer_id>), else the peer is taken from its first multiaddr."""
        try:
            return self._verify_signed(dict(data), peer_id, rtt_ms, free_slots, max_slots, expires_at)
        except Exception as e:  # never let peer input crash the subscriber
            return self._reject(Rejection.MALFORMED, f"{type(e).__name__}: {e}")

    def _verify_signed(
        self,
        data: dict[str, Any],
        peer_id: str | None,
        rtt_ms: float | None,
        free_slots: int,
        max_slots: int,
        expires_at: float | None,
    ) -> VerifyResult:
        if self.domain is None or self.standings is None:
            return self._reject(Rejection.CHAIN_UNAVAILABLE, "this market has no deployment to verify signed offers")
        model_id, span = data.get("model_id"), data.get("span")
        if not isinstance(model_id, str) or not isinstance(span, list | tuple) or len(span) != 2:
            return self._reject(Rejection.MALFORMED, "a signed offer needs model_id and span [start, end]")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            return self._reject(Rejection.BAD_SPAN, f"span {span!r} is not two integers")
        try:
            expiry = int(data["expiry"])
        except (KeyError, TypeError, ValueError):
            return self._reject(Rejection.MALFORMED, "a signed offer needs an integer expiry")
        checked = self._check_model_span_expiry(model_id, int(span[0]), int(span[1]), expiry)
        if checked is not None:
            return checked
        try:
            signed = SignedOffer.from_json(data)
        except InvalidOffer as e:
            return self._reject(Rejection.MALFORMED, str(e))
        o = signed.offer
        if model_id_text(o.model_id) != model_id:
            return self._reject(Rejection.MALFORMED, f"model id {model_id!r} is not canonical")
        now = self._clock()
        if o.issued_at > now + MAX_FUTURE_ISSUE_S:
            return self._reject(Rejection.ISSUED_IN_FUTURE, f"offer of {o.node} is issued at {o.issued_at}")
        try:
            signer = signed.signer(self.domain)
        except InvalidOffer as e:
            return self._reject(Rejection.BAD_SIGNATURE, str(e))
        if signer != o.node:
            return self._reject(
                Rejection.BAD_SIGNATURE,
                f"offer for {o.node} recovers {signer} in chain {self.domain.chain_id}'s staking domain",
            )
        peer = self._peer_of(o.multiaddrs, peer_id)
        if peer is None:
            return self._reject(
                Rejection.OFFER_MISMATCH, f"none of the offer's multiaddrs names peer {peer_id or '(any)'}"
            )
        if not 0 <= o.price_per_1k <= self.max_price_per_1k:
            return self._reject(Rejection.BAD_PRICE, f"price {o.price_per_1k} per 1k tokens per layer is out of range")
        tokens_per_s = o.throughput_milli / 1000
        if not 0 < tokens_per_s <= MAX_TOKENS_PER_S:
            return self._reject(Rejection.BAD_THROUGHPUT, f"throughput {tokens_per_s} tokens/s is not a measurement")
        standing_rejection = self._check_standing(o.node)
        if standing_rejection is not None:
            return standing_rejection
        offer = Offer(
            node_id=peer,
            model_id=model_id,
            start=o.span_start,
            end=o.span_end,
            price_per_1k=o.price_per_1k,
            ms_per_layer=ms_per_layer_from_tokens_per_s(tokens_per_s, o.span_end - o.span_start),
            rtt_ms=self.default_rtt_ms if rtt_ms is None else rtt_ms,
            free_slots=free_slots,
            max_slots=max_slots,
            expires_at=float(o.expiry) if expires_at is None else min(float(o.expiry), expires_at),
        )
        with self._lock:
            self._peers.setdefault(o.node, set()).add(peer)
            self._peers.move_to_end(o.node)
            while len(self._peers) > MAX_WALLETS_TRACKED:
                self._peers.popitem(last=False)
        return self._accept(Verified(offer, tuple(o.multiaddrs), o.node, signed.to_json()))

    def peers_of(self, wallet: str) -> set[str]:
        """The libp2p peers whose offers this verifier accepted for `wallet` (to drop them when it is slashed)."""
        with self._lock:
            return set(self._peers.get(wallet, ()))

    # ----- checks ------------------------------------------------------------------------------------
    def _check_model_span_expiry(self, model_id: str, start: int, end: int, expiry: float) -> Rejected | None:
        layers = self.models.get(model_id)
        if layers is None:
            return self._reject(Rejection.UNKNOWN_MODEL, f"model {model_id!r} is not known to this market")
        if not 0 <= start < end <= layers:
            return self._reject(Rejection.BAD_SPAN, f"span [{start}, {end}) is not within the model's {layers} layers")
        if not expiry > self._clock():
            return self._reject(Rejection.EXPIRED, f"offer expired at {expiry}")
        return None

    def _check_standing(self, wallet: str) -> Rejected | None:
        assert self.standings is not None
        if self.penalties is not None:
            if self.penalties.jailed(wallet):
                return self._reject(Rejection.JAILED, f"wallet {wallet} was jailed (seen on-chain)")
            if self.reject_slashed and self.penalties.slashed(wallet):
                return self._reject(Rejection.SLASHED, f"wallet {wallet} was slashed (seen on-chain)")
        try:
            s = self.standings.get(wallet)
        except Exception as e:  # RPC down or timing out: drop this offer, the next announcement retries
            return self._reject(Rejection.CHAIN_UNAVAILABLE, f"cannot read {wallet}'s standing: {e}")
        if not s.registered:
            return self._reject(Rejection.UNREGISTERED, f"wallet {wallet} is not a registered node")
        if s.jailed_until > self._clock():
            return self._reject(Rejection.JAILED, f"wallet {wallet} is jailed until {s.jailed_until}")
        if self.reject_slashed and s.slashed > 0:
            return self._reject(Rejection.SLASHED, f"wallet {wallet} has been slashed ({s.slashed} wei)")
        if not s.routable:
            return self._reject(Rejection.UNSTAKED, f"wallet {wallet} does not stake the minimum (stake {s.stake})")
        return None

    @staticmethod
    def _peer_of(multiaddrs: tuple[str, ...], peer_id: str | None) -> str | None:
        peers = [a.rsplit("/p2p/", 1)[1] for a in multiaddrs if "/p2p/" in a]
        if peer_id is not None:
            return peer_id if peer_id in peers else None
        return peers[0] if peers else None

    def _reject(self, reason: Rejection, detail: str) -> Rejected:
        with self._lock:
            self.rejected[reason.value] += 1
        return Rejected(reason, detail)

    def _accept(self, verified: Verified) -> Verified:
        with self._lock:
            self.accepted += 1
        return verified

    def _uncount(self) -> None:
        with self._lock:
            self.accepted -= 1
