"""Paid mode: the gateway buys inference for its resellers.

Each reseller's wallet holds the escrow deposit and authorises the gateway's key on the escrow
(`setSignerAuthorization(gatewayKey, true)`). Sessions open as the reseller (the receipts' buyer) and the gateway's
key countersigns each node's receipt on the stream after checking it (`inferchain.wallet.buyer.Buyer`), so nodes
started with `--wallet` serve the gateway as they serve any buyer, and the escrow pays them from the reseller's
deposit when the settlement worker submits those receipts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from inferchain.wallet.buyer import Buyer
from inferchain.wallet.chain import Chain

AUTH_TTL_S = 30.0  # how long the escrow's answer "is the gateway key authorised by this reseller" is reused


@dataclass
class PaidMode:
    chain: Chain
    signer: LocalAccount  # the gateway's key: countersigns receipts for resellers that authorised it
    _authorized: dict[str, tuple[float, bool]] = field(default_factory=dict)

    @property
    def signer_address(self) -> str:
        return str(self.signer.address)

    def buyer(self, reseller: str, max_price_per_1k: int) -> Buyer:
        """The countersigner for one request: buyer `reseller`, per-layer price at most `max_price_per_1k`."""
        return Buyer(self.signer, self.chain.deployment.receipt_domain, max_price_per_1k, buyer=reseller)

    def escrow_balance(self, reseller: str) -> int:
        return self.chain.escrow_balance(reseller)

    def authorized(self, reseller: str) -> bool:
        """Whether `reseller` authorised the gateway's key on the escrow (a yes is cached for AUTH_TTL_S; a no is
        asked again every time, so a reseller that just authorised the key is served at once)."""
        now = time.monotonic()
        hit = self._authorized.get(reseller)
        if hit is not None and hit[1] and now - hit[0] < AUTH_TTL_S:
            return True
        ok = self.chain.is_authorized_signer(reseller, self.signer_address)
        self._authorized[reseller] = (now, ok)
        return ok
