"""`InferenceSession`: the synchronous Python API for running a model through a chain of nodes.

Embeddings and the LM head stay local; the chain runs on a libp2p host living on its own trio thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from inferchain.client.chain import Chain, FailoverEvent, Penalties, RouteLimits
from inferchain.client.remote import Timeouts
from inferchain.models.span import ModelHead
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire.tensors import WireDType

if TYPE_CHECKING:
    from inferchain.marketplace.verify import OfferVerifier
    from inferchain.trust.validator import SessionEvidence
    from inferchain.wallet.buyer import Buyer
    from inferchain.wallet.receipts import SignedReceipt


class InferenceSession:
    """One generation's worth of state: sessions on every node of the route, and the position reached.

    `step(token_ids)` sends tokens through the chain and returns the logits of the last one.
    """

    def __init__(
        self,
        model: str | Path | ModelHead,
        peers: Sequence[str],
        *,
        max_length: int = 2048,
        wire_dtype: WireDType = "f16",
        timeouts: Timeouts | None = None,
        host: HostThread | None = None,
        session_id: str | None = None,
        bootstrap: Sequence[str] = (),
        discover_s: float = 15.0,
        buyer: Buyer | None = None,
        limits: RouteLimits | None = None,
        penalties: Penalties | None = None,
        wallets: dict[str, str] | None = None,
        verifier: OfferVerifier | None = None,
        relay: bool = True,
    ) -> None:
        """`limits`: the buyer's price and latency caps and objective for the planner's route (and re-routes).
        `peers`: nodes to use directly. `bootstrap`: peers to join the network through; nodes announced on
        the model's offer topic are discovered (for up to `discover_s` seconds) and used too. `buyer`: open paid
        sessions and countersign each node's receipt at close; they are in `receipts` afterwards. `penalties` (a
        `marketplace.verify.PenaltyWatch`), `wallets` (peer id -> wallet) and `verifier` (checks discovered signed
        offers, learning their wallets): a node slashed or jailed mid-generation is dropped before its next step
        and its span fails over (same greedy output). `relay`: each node pushes its output straight to the next
        node (4 links per token instead of 6; the client still gets every output, see client/chain.py)."""
        self.head = model if isinstance(model, ModelHead) else ModelHead(model)
        self._own_host = host is None
        self.host = host or HostThread(load_or_create_identity(None), with_pubsub=bool(bootstrap))
        info = self.head.info
        self.chain = Chain(
            self.host.host,
            [parse_peer_addr(p) for p in peers],
            model_id=info.model_id,
            num_layers=info.num_layers,
            hidden_size=info.hidden_size,
            max_length=max_length,
            dtype=wire_dtype,
            timeouts=timeouts,
            session_id=session_id,
            buyer=buyer,
            limits=limits,
            penalties=penalties,
            wallets=wallets,
            verifier=verifier,
            relay=relay,
        )
        self.max_length = max_length
        self.position = 0
        self.node_tokens: dict[str, int] = {}
        try:
            if bootstrap:
                if self.host.pubsub is None:
                    raise ValueError("discovery needs a HostThread started with_pubsub=True")
                entry = [parse_peer_addr(b) for b in bootstrap]
                self.host.call(self.chain.discover, self.host.pubsub, entry, discover_s)
            self.host.call(self.chain.open)
        except BaseException:
            self.close()
            raise

    @property
    def route(self) -> list[tuple[str, int, int]]:
        return self.chain.route()

    @property
    def failovers(self) -> list[FailoverEvent]:
        return self.chain.failovers

    def step(self, token_ids: Sequence[int]) -> torch.Tensor:
        if self.position + len(token_ids) > self.max_length:
            raise ValueError(f"session would exceed its max_length of {self.max_length} tokens")
        hidden = self.head.embed(list(token_ids)).numpy()
        out = self.host.call(self.chain.forward, hidden, self.position)
        self.position += len(token_ids)
        return self.head.logits(torch.from_numpy(out.astype("float32")))  # a writable copy

    @property
    def receipts(self) -> list[SignedReceipt]:
        """Receipts the nodes signed and this session countersigned (after `close`)."""
        return self.chain.receipts

    @property
    def evidence(self) -> list[SessionEvidence]:
        """Per countersigned receipt: the inputs sent and the node's activation sketch, for validators."""
        return self.chain.evidence

    def close(self) -> None:
        try:
            if self.chain.hops:
                self.node_tokens = self.host.call(self.chain.close)
                self.chain.hops = []
        finally:
            if self._own_host:
                self.host.close()

    def __enter__(self) -> InferenceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
