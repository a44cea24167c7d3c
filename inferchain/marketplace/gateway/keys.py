"""API keys: random, shown once, stored only as SHA-256 hashes, compared in constant time; revoke and rotate
act on the next request because every request reads the key's row.

A key reads `ick_<id>_<secret>`: the id (public, 12 hex) finds the row, the secret (32 random bytes) proves it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.db import ApiKeyRow, ResellerRow

_KEY = re.compile(r"^ick_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    tokens_per_day: int | None = None
    spend_per_month: int | None = None
    requests_per_minute: int | None = None


@dataclass(frozen=True)
class RouteDefaults:
    """A reseller's caps for its customers' requests that name none (None: no cap of that kind)."""

    max_price_per_1k: int | None = None  # token wei per 1k tokens, whole route
    max_latency_ms: float | None = None  # estimated ms per token


@dataclass(frozen=True)
class KeyInfo:
    id: str
    reseller: str
    name: str
    created_at: float
    revoked_at: float | None
    limits: Limits
    defaults: RouteDefaults = RouteDefaults()


def _defaults(reseller: ResellerRow | None) -> RouteDefaults:
    return RouteDefaults(reseller.max_price_per_1k, reseller.max_latency_ms) if reseller else RouteDefaults()


def _info(row: ApiKeyRow, reseller: ResellerRow | None = None) -> KeyInfo:
    limits = Limits(row.tokens_per_day, row.spend_per_month, row.requests_per_minute)
    return KeyInfo(row.id, row.reseller, row.name, row.created_at, row.revoked_at, limits, _defaults(reseller))


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, reseller: str, name: str = "", limits: Limits | None = None) -> tuple[KeyInfo, str]:
        """A new key for `reseller`'s customer; returns its info and the key itself (never stored, shown once)."""
        limits = limits or Limits()
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=key_id, reseller=reseller, name=name, secret_sha256=_digest(secret), created_at=time.time(),
            tokens_per_day=limits.tokens_per_day, spend_per_month=limits.spend_per_month,
            requests_per_minute=limits.requests_per_minute,
        )  # fmt: skip
        with self.sessions.begin() as s:
            s.add(row)
        return _info(row), f"ick_{key_id}_{secret}"

    def authenticate(self, presented: str) -> KeyInfo | None:
        """The live key `presented` names, or None (unknown, malformed, wrong secret or revoked)."""
        m = _KEY.match(presented.strip())
        key_id, secret = (m.group(1), m.group(2)) if m else ("", presented)
        with self.sessions() as s:
            row = s.get(ApiKeyRow, key_id) if key_id else None
            stored = row.secret_sha256 if row is not None else _DUMMY
            # always one hash and one constant-time compare, whether or not the id exists
            ok = hmac.compare_digest(_digest(secret), stored) and row is not None
            if not ok or row is None or row.revoked_at is not None:
                return None
            return _info(row, s.get(ResellerRow, row.reseller))  # its reseller's defaults, read on every request

    def list(self, reseller: str) -> list[KeyInfo]:
        with self.sessions() as s:
            rows = s.scalars(select(ApiKeyRow).where(ApiKeyRow.reseller == reseller).order_by(ApiKeyRow.created_at))
            return [_info(r) for r in rows]

    def get(self, reseller: str, key_id: str) -> KeyInfo | None:
        with self.sessions() as s:
            row = s.get(ApiKeyRow, key_id)
            return _info(row) if row is not None and row.reseller == reseller else None

    def revoke(self, reseller: str, key_id: str) -> KeyInfo | None:
        with self.sessions.begin() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.reseller != reseller:
                return None
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return _info(row)

    def rotate(self, reseller: str, key_id: str) -> tuple[KeyInfo, str] | None:
        """A new secret for the same key id (usage and limits stay); the old secret stops working at once."""
        with self.sessions.begin() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.reseller != reseller or row.revoked_at is not None:
                return None
            secret = secrets.token_urlsafe(32)
            row.secret_sha256, row.rotated_at = _digest(secret), time.time()
            return _info(row), f"ick_{key_id}_{secret}"

    def defaults(self, reseller: str) -> RouteDefaults:
        with self.sessions() as s:
            return _defaults(s.get(ResellerRow, reseller))

    def set_defaults(self, reseller: str, defaults: RouteDefaults) -> RouteDefaults:
        """The reseller's default caps; they apply to its keys' next requests."""
        with self.sessions.begin() as s:
            row = s.get(ResellerRow, reseller)
            if row is None:
                row = ResellerRow(address=reseller, created_at=time.time())
                s.add(row)
            row.max_price_per_1k, row.max_latency_ms = defaults.max_price_per_1k, defaults.max_latency_ms
        return defaults

    def set_limits(self, reseller: str, key_id: str, limits: Limits) -> KeyInfo | None:
        with self.sessions.begin() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.reseller != reseller:
                return None
            row.tokens_per_day, row.spend_per_month = limits.tokens_per_day, limits.spend_per_month
            row.requests_per_minute = limits.requests_per_minute
            return _info(row)
