"""The gateway's shared state, handed to its routers through `app.state.gateway`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.keys import KeyStore
from inferchain.marketplace.gateway.metering import Meter
from inferchain.marketplace.gateway.runner import Runners

if TYPE_CHECKING:
    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.gateway.paid import PaidMode


@dataclass
class Gateway:
    sessions: sessionmaker[Session]
    runners: Runners
    book: OfferBook | None = None  # quotes prices from the market's book when set
    domain: str = "127.0.0.1"  # the domain sign-in messages must name
    chain_id: int = 31337
    resellers: frozenset[str] | None = None  # wallets allowed to sign in (checksummed); None: any wallet
    default_max_tokens: int = 256
    admin_token_ttl_s: float = 3600.0
    # Route price cap (token wei per 1k tokens, whole route) for requests that set no `max_price_per_1k`; in paid
    # mode it also bounds what a request may cost, so it is what a request reserves and must find in escrow.
    max_price_per_1k: int | None = None
    paid: PaidMode | None = None  # buy for resellers from their escrow (None: free sessions)
    keys: KeyStore = field(init=False)
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        if self.paid is not None and self.book is None and self.max_price_per_1k is None:
            raise ValueError("a paid gateway needs a price cap (max_price_per_1k) or a market book to quote from")
        self.keys = KeyStore(self.sessions)
        self.meter = Meter(self.sessions, self.paid.escrow_balance if self.paid is not None else None)
