"""The gateway's shared state, handed to its routers through `app.state.gateway`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.keys import KeyStore
from inferchain.marketplace.gateway.metering import Meter
from inferchain.marketplace.gateway.runner import Runners

if TYPE_CHECKING:
    from inferchain.marketplace.book import OfferBook


@dataclass
class Gateway:
    sessions: sessionmaker[Session]
    runners: Runners
    book: OfferBook | None = None  # quotes prices from the market's book when set; price 0 otherwise
    domain: str = "127.0.0.1"  # the domain sign-in messages must name
    chain_id: int = 31337
    resellers: frozenset[str] | None = None  # wallets allowed to sign in (checksummed); None: any wallet
    default_max_tokens: int = 256
    admin_token_ttl_s: float = 3600.0
    balance: Callable[[str], int] | None = None  # reseller -> escrow wei it can still spend; None: unchecked
    keys: KeyStore = field(init=False)
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyStore(self.sessions)
        self.meter = Meter(self.sessions)
