"""A chain of remote spans covering layers [0, L), with fail-over that replays a lost span's inputs.

The client holds every hop's past inputs and can replay them, exactly as first sent and at their original
positions, into a replacement for a node that died or stalled. Greedy output after fail-over therefore equals the
fault-free run.

Relay (on by default): each node pushes its output straight to the next node of the route, as Petals' servers
push to one another, and still answers it to the client: a token crosses 4 links instead of 6, and the client,
off the critical path, keeps each hop's inputs and checks that the input each node says it got (its digest) is
the output the previous node answered. A node that cannot reach its successor says so per step and the client
forwards that output itself. A failed or mismatched relayed step replaces the hops from there to the end of the
route (later nodes may hold a push the client never saw; healthy ones are re-opened, not excluded) and the client
drives every hop for the rest of that generation.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pubsub import Pubsub

from inferchain.client.remote import RETRYABLE, RemoteError, RemoteSpan, Timeouts, request_once
from inferchain.marketplace.planner import NoRouteError, Offer, RoutePlanner
from inferchain.p2p.gossip import offer_topic
from inferchain.p2p.host import ensure_connected, parse_peer_addr
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode
from inferchain.wire.tensors import WireDType

if TYPE_CHECKING:
    from inferchain.marketplace.verify import OfferVerifier
    from inferchain.trust.validator import SessionEvidence
    from inferchain.wallet.buyer import Buyer
    from inferchain.wallet.receipts import SignedReceipt

log = logging.getLogger(__name__)


class Penalties(Protocol):
    def penalised(self, wallet: str | None) -> bool: ...


PENALISED = "penalised"  # RemoteError code of a node dropped because its wallet was slashed or jailed
PINGS = 3  # round trips timed per peer on a refresh; the route uses the fastest


@dataclass(frozen=True)
class RouteLimits:
    """What the buyer will accept: a price cap (token wei per 1k tokens, whole route), a per-token latency cap,
    and which to minimise within them ("latency" or "price"). None: no cap."""

    max_price_per_1k: int | None = None
    max_latency_ms: float | None = None
    objective: Literal["latency", "price"] = "latency"


@dataclass
class KnownPeer:
    info: PeerInfo
    node: m.NodeInfo | None = None
    rtt_ms: float = float("inf")
    failed_at: float | None = None

    @property
    def name(self) -> str:
        return str(self.info.peer_id)


@dataclass
class Hop:
    remote: RemoteSpan
    inputs: list[np.ndarray] = field(default_factory=list)  # every chunk sent, in order, from position 0

    @property
    def start(self) -> int:
        return self.remote.start

    @property
    def end(self) -> int:
        return self.remote.end


@dataclass
class FailoverEvent:
    failed_peer: str
    layers: tuple[int, int]
    reason: str
    replacement: list[tuple[str, int, int]]
    replayed_tokens: int


def _link_to(peer: PeerInfo, key: bytes) -> tuple[str, bytes] | None:
    """Where the previous node pushes to reach `peer` (its first known address), with the link's key."""
    return (f"{peer.addrs[0]}/p2p/{peer.peer_id}", key) if peer.addrs else None


class Chain:
    """Trio-side state of one generation: the hops, their past inputs, and the fail-over policy."""

    def __init__(
        self,
        host: IHost,
        peers: list[PeerInfo],
        model_id: str,
        num_layers: int,
        hidden_size: int,
        max_length: int,
        dtype: WireDType = "f16",
        timeouts: Timeouts | None = None,
        max_failovers: int = 4,
        session_id: str | None = None,
        buyer: Buyer | None = None,
        verifier: OfferVerifier | None = None,
        limits: RouteLimits | None = None,
        penalties: Penalties | None = None,
        wallets: dict[str, str] | None = None,
        relay: bool = True,
    ) -> None:
        """`relay`: nodes push each output to the next hop themselves (see the module docstring).
        `buyer`: open paid sessions for this buyer and countersign each node's receipt at close.
        `verifier`: check announcements' signed offers (paid network) against the chain before routing on them.
        `penalties` (e.g. marketplace.verify.PenaltyWatch) + `wallets` (peer id -> wallet; verified offers add to
        it): a node whose wallet is slashed or jailed is dropped before the next step it would serve, and its span
        fails over to other nodes (its unfinished session earns it no receipt)."""
        self.verifier = verifier
        self.penalties = penalties
        self.wallets: dict[str, str] = dict(wallets or {})
        self.limits = limits or RouteLimits()
        self.host = host
        self.buyer = buyer
        self.receipts: list[SignedReceipt] = []
        self.evidence: list[SessionEvidence] = []  # what validators need, per countersigned receipt
        self.known = [KnownPeer(p) for p in peers]
        self.model_id, self.num_layers, self.hidden_size = model_id, num_layers, hidden_size
        self.max_length, self.dtype = max_length, dtype
        self.timeouts = timeouts or Timeouts()
        self.max_failovers = max_failovers
        self.session_id = session_id or "0x" + secrets.token_hex(32)
        self.hops: list[Hop] = []
        self.failovers: list[FailoverEvent] = []
        self._dead: set[str] = set()
        self.planner = RoutePlanner({model_id: num_layers})
        self.dropped_announcements: Counter[str] = Counter()  # reason -> count
        self.relay = relay  # switched off for good after a fail-over

    async def refresh(self) -> None:
        """Ask every known peer what it serves and how loaded it is, and measure the round trip (the best of
        `PINGS`): all peers at once (one busy node delays the answer by its running step, not every later peer's)."""
        async with trio.open_nursery() as nursery:
            for peer in self.known:
                if peer.name not in self._dead:
                    nursery.start_soon(self._refresh_one, peer)

    async def _refresh_one(self, peer: KnownPeer) -> None:
        try:
            reply = await request_once(self.host, peer.info, m.InfoRequest(), self.timeouts)
            samples = []
            for _ in range(PINGS):  # timed on the open connection: a dial is not a round trip
                t0 = time.perf_counter()
                await request_once(self.host, peer.info, m.Ping(), self.timeouts)
                samples.append(time.perf_counter() - t0)
        except RemoteError:
            peer.node = None
            self.planner.remove(peer.name)
            return
        peer.rtt_ms = min(samples) * 1000  # one ping that met a busy moment must not steer the route
        if isinstance(reply, m.NodeInfo) and reply.model_id == self.model_id:
            peer.node = reply
            self.planner.upsert(self._offer(peer, reply))
        else:
            peer.node = None
            self.planner.remove(peer.name)

    def _offer(self, peer: KnownPeer, node: m.NodeInfo, expires_at: float | None = None) -> Offer:
        """What a peer of a static list offers: its span at no price, timed by its own report and our ping."""
        return Offer(
            node_id=peer.name,
            model_id=self.model_id,
            start=node.start,
            end=node.end,
            price_per_1k=int(node.price_per_1k),
            ms_per_layer=node.ms_per_layer or 1.0,
            rtt_ms=peer.rtt_ms if peer.rtt_ms != float("inf") else 1000.0,
            free_slots=max(0, node.max_sessions - node.sessions),
            max_slots=node.max_sessions,
            expires_at=expires_at or time.time() + 3600,
        )

    async def discover(self, pubsub: Pubsub, bootstrap: list[PeerInfo], wait_s: float, settle_s: float = 1.0) -> int:
        """Join the model's offer topic through the bootstrap peers and collect node announcements until every
        layer is covered (plus `settle_s` for alternatives) or `wait_s` passes. Returns the peers learned."""
        subscription = await pubsub.subscribe(offer_topic(self.model_id))
        for peer in bootstrap:
            with contextlib.suppress(Exception), trio.move_on_after(self.timeouts.connect_s):
                await ensure_connected(self.host, peer, self.timeouts.connect_s)
        learned = 0
        deadline = trio.current_time() + wait_s
        covered_at: float | None = None
        try:
            while trio.current_time() < deadline and (covered_at is None or trio.current_time() < covered_at):
                with trio.move_on_at(min(deadline, covered_at or deadline)):
                    message = await subscription.get()
                    learned += self._learn(message)
                if covered_at is None and min(self.planner.coverage(self.model_id), default=0) > 0:
                    covered_at = trio.current_time() + settle_s
        finally:
            await pubsub.unsubscribe(offer_topic(self.model_id))
        return learned

    def _learn(self, message: Any) -> int:
        """Take one announcement off the topic; returns 1 for a new peer. Invalid ones are counted and dropped."""
        try:
            announce = m.decode(message.data)
            if not isinstance(announce, m.Announce):
                raise ValueError(f"not an announcement: {announce.t}")
            sender = str(ID(message.from_id))
            if announce.peer_id != sender:
                raise ValueError(f"announcement for {announce.peer_id} published by {sender}")
            if announce.info.model_id != self.model_id:
                raise ValueError("announcement for another model")
            if announce.expires_at < time.time():
                raise ValueError("expired")  # gossip may deliver an old copy late
            peer = next((p for p in self.known if p.name == sender), None)
            new = peer is None
            if peer is None:
                peer = KnownPeer(parse_peer_addr(announce.addrs[0]))
                self.known.append(peer)
            if announce.signed_offer is not None and self.verifier is not None:
                rtt = peer.rtt_ms if peer.rtt_ms != float("inf") else None
                from inferchain.marketplace.verify import Rejected

                verified = self.verifier.verify_announce(announce, sender, self.model_id, rtt_ms=rtt)
                if isinstance(verified, Rejected):
                    if new:
                        self.known.remove(peer)
                    raise ValueError(f"offer rejected: {verified.reason}")
                offer = verified.offer
                if verified.wallet is not None:
                    self.wallets[peer.name] = verified.wallet
            else:
                offer = self._offer(peer, announce.info, expires_at=announce.expires_at)
            peer.node = announce.info
            self.planner.upsert(offer)
            return int(new)
        except Exception as e:  # anything a peer can publish must not break discovery
            self.dropped_announcements[str(e)[:80]] += 1
            log.debug("dropped announcement: %s", e)
            return 0

    async def _open_cover(self, start: int, end: int, relay: bool = False) -> list[Hop]:
        """Open sessions on a cover of [start, end), trying other peers when one refuses or is unreachable;
        `relay`: link each hop to the next (a fresh random key per link)."""
        by_name = {p.name: p for p in self.known}
        self._dead.update(name for name in by_name if self._penalised(name))
        for _ in range(len(self.known) + 1):
            route = self.planner.plan_range(
                self.model_id,
                start,
                end,
                self.limits.max_price_per_1k,
                self.limits.max_latency_ms,
                self.limits.objective,
                exclude=self._dead,
            )
            remotes = [RemoteSpan(self.host, by_name[name].info, a, b, self.dtype, self.timeouts)
                       for name, a, b in route.hops]  # fmt: skip
            links = [secrets.token_bytes(32) for _ in remotes[1:]] if relay else []
            errors = await self._open_all(remotes, links)
            if not errors:
                return [Hop(r) for r in remotes]
            for remote in remotes:  # those that opened (a failed one has nothing to close)
                await remote.close()
            fatal = next((e for e in errors if e.code not in RETRYABLE), None)
            if fatal is not None:
                raise fatal
            for e in errors:
                self._dead.add(e.peer)
                self.planner.report_failure(e.peer)
        raise NoRouteError(f"could not open sessions covering layers {start}:{end}")

    async def _open_all(self, remotes: list[RemoteSpan], links: list[bytes]) -> list[RemoteError]:
        """Open a session on every hop at once (one round trip for the route, not one per hop); the errors.
        `links`: relay keys, one per pair of neighbouring hops (empty: no relay)."""
        errors: list[RemoteError] = []

        async def open_one(i: int, remote: RemoteSpan) -> None:
            remote.buyer = self.buyer
            relay_key = links[i - 1] if links and i > 0 else None
            relay_to = _link_to(remotes[i + 1].peer, links[i]) if links and i + 1 < len(remotes) else None
            try:
                await remote.open(
                    self.session_id, self.model_id, self.hidden_size, self.max_length, relay_key, relay_to
                )
            except RemoteError as e:
                errors.append(e)

        try:
            async with trio.open_nursery() as nursery:
                for i, remote in enumerate(remotes):
                    nursery.start_soon(open_one, i, remote)
        except BaseException:  # cancelled or a bug: release what did open
            with trio.CancelScope(shield=True):
                for remote in remotes:
                    await remote.close()
            raise
        return errors

    def _penalised(self, peer: str) -> bool:
        return self.penalties is not None and self.penalties.penalised(self.wallets.get(peer))

    async def open(self) -> None:
        await self.refresh()
        self.hops = await self._open_cover(0, self.num_layers, relay=self.relay)

    def route(self) -> list[tuple[str, int, int]]:
        return [(h.remote.name, h.start, h.end) for h in self.hops]

    async def forward(self, hidden: np.ndarray, position: int) -> np.ndarray:
        """Run hidden states for tokens at `position`.. through every hop; fail over where a hop fails."""
        relay = self.relay and not any(self._penalised(h.remote.name) for h in self.hops)
        i, pushed = 0, False  # pushed: hop i's input was relayed to it by hop i - 1 (the client sends nothing)
        while i < len(self.hops):
            hop = self.hops[i]
            hop.inputs.append(hidden)
            try:
                if not pushed:
                    if self._penalised(hop.remote.name):
                        raise RemoteError(hop.remote.name, PENALISED, "its wallet was slashed or jailed on-chain")
                    await hop.remote.send(hidden, position, relay=relay)
                hidden, reply = await hop.remote.receive()
            except RemoteError as e:
                # With relay on, this hop may already have pushed this step onward: replace the rest of the route.
                through = len(self.hops) if relay and hop.remote.relaying else i + 1
                self.relay = relay = False
                replacement, hidden = await self._recover(i, e, through)
                i, pushed = i + len(replacement), False
                continue
            i += 1
            pushed = reply.relayed and i < len(self.hops)
            if pushed:
                self.hops[i].remote.expect_relayed(position, reply.x)
        return hidden

    async def _recover(self, index: int, error: RemoteError, through: int) -> tuple[list[Hop], np.ndarray]:
        """Fail over hops [index, through); if a replacement fails during replay, try again with the next one."""
        while True:
            retryable = error.code in RETRYABLE or error.code == PENALISED
            if not retryable or len(self.failovers) >= self.max_failovers:
                raise error
            try:
                return await self._fail_over(index, error, through)
            except RemoteError as again:
                self._dead.add(again.peer)
                self.planner.report_failure(again.peer)
                error = again

    async def _fail_over(self, index: int, error: RemoteError, through: int) -> tuple[list[Hop], np.ndarray]:
        """Replace hops [index, through) with a fresh cover of their layers and replay hop `index`'s inputs through
        it. Only the failed node is excluded (an expired session, or a relayed input that does not match, excludes
        none: the session may be re-opened on the same node; who altered a relayed input is not known)."""
        failed, replaced = self.hops[index], self.hops[index:through]
        if error.code not in (ErrorCode.SESSION_EXPIRED, "relay_mismatch"):
            self._dead.add(failed.remote.name)
            self.planner.report_failure(failed.remote.name)
        for hop in replaced:
            await hop.remote.abort()
        await self.refresh()
        new_hops = await self._open_cover(failed.start, replaced[-1].end)
        chunks = failed.inputs
        try:
            for hop in new_hops:
                outputs, position = [], 0
                for chunk in chunks:
                    hop.inputs.append(chunk)
                    outputs.append(await hop.remote.forward(chunk, position))
                    position += chunk.shape[1]
                chunks = outputs
        except RemoteError:
            for hop in new_hops:
                await hop.remote.abort()
            raise
        self.hops[index:through] = new_hops
        self.failovers.append(
            FailoverEvent(
                failed_peer=failed.remote.name,
                layers=(failed.start, failed.end),
                reason=f"{error.code}: {error.message}",
                replacement=[(h.remote.name, h.start, h.end) for h in new_hops],
                replayed_tokens=sum(c.shape[1] for c in failed.inputs),
            )
        )
        return new_hops, chunks[-1]

    async def close(self) -> dict[str, int]:
        """Close every hop; returns the token count each node reported."""
        counts: dict[str, int] = {}
        for hop in self.hops:
            counts[hop.remote.name] = await hop.remote.close()
            if hop.remote.receipt is not None:
                self.receipts.append(hop.remote.receipt)
            if hop.remote.evidence is not None:
                self.evidence.append(hop.remote.evidence)
        return counts
