"""The node's signed offer: what it serves, at what price and speed, where; re-signed before it expires.

The record type and its verification live in `inferchain.wallet.offers` (one EIP-712 definition); this module
measures the node's throughput, signs offers with the node's wallet key, keeps the current one fresh, and
writes it to `offer.json` in the node's data folder (what a publisher or an operator reads).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from eth_account.signers.local import LocalAccount

from inferchain.models.span import SpanModel
from inferchain.wallet.offers import Offer, SignedOffer, model_id_bytes32
from inferchain.wallet.typed_data import Domain

OFFER_FILE = "offer.json"
DEFAULT_OFFER_TTL_S = 600


def measure_throughput(span: SpanModel, tokens: int = 32, rounds: int = 2) -> float:
    """Tokens per second this span sustains on a prefill of `tokens` (best of `rounds`)."""
    hidden = torch.zeros(1, tokens, span.info.hidden_size)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        span.forward(hidden, 0, span.new_cache(), span.start, span.end)
        best = min(best, time.perf_counter() - t0)
    return tokens / max(best, 1e-9)


class OfferSigner:
    """Signs the node's offer and re-signs it when less than half of its lifetime is left."""

    def __init__(
        self,
        account: LocalAccount,
        domain: Domain,
        model_id: str,
        span: tuple[int, int],
        price_per_1k: int,
        ttl_s: int = DEFAULT_OFFER_TTL_S,
        path: Path | None = None,
        region: str = "",
    ) -> None:
        self.account, self.domain, self.region = account, domain, region
        self.model_id, self.span, self.price_per_1k = model_id_bytes32(model_id), span, price_per_1k
        self.ttl_s, self.path = ttl_s, path
        self.multiaddrs: tuple[str, ...] = ()
        self.throughput = 0.0
        self.signed: SignedOffer | None = None

    def sign(self, multiaddrs: list[str] | None = None, throughput: float | None = None) -> SignedOffer:
        if multiaddrs is not None:
            self.multiaddrs = tuple(multiaddrs[:16])
        if throughput is not None:
            self.throughput = throughput
        now = int(time.time())
        offer = Offer(
            node=self.account.address,
            model_id=self.model_id,
            span_start=self.span[0],
            span_end=self.span[1],
            price_per_1k=self.price_per_1k,
            throughput_milli=int(self.throughput * 1000),
            multiaddrs=self.multiaddrs,
            issued_at=now,
            expiry=now + self.ttl_s,
            region=self.region,
        )
        self.signed = offer.sign(self.account, self.domain)
        if self.path is not None:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.signed.to_json(), indent=1))
            os.replace(tmp, self.path)
        return self.signed

    def current(self, now: float | None = None) -> dict[str, Any] | None:
        """The offer to publish now (re-signed if past half its lifetime); None before the node listens."""
        if self.signed is None:
            return None
        now = time.time() if now is None else now
        if self.signed.offer.expiry - now < self.ttl_s / 2:
            self.sign()
        return self.signed.to_json()
