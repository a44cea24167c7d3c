"""The gateway's tables (own SQLAlchemy metadata beside the market's book, same engine): resellers, API keys,
per-request usage rows (reserve -> settle), admin sign-in nonces and admin tokens.

Amounts are integers of token wei; token counts are integers. Times are UNIX seconds (floats).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Engine, Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

GATEWAY_SCHEMA_VERSION = 1


class GatewaySchemaError(RuntimeError):
    """The database holds gateway tables of another schema version."""


class GatewayBase(DeclarativeBase):
    pass


class GatewaySchemaRow(GatewayBase):
    __tablename__ = "gateway_schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class ResellerRow(GatewayBase):
    """A reseller: a wallet (checksummed address) that signed in; its escrow pays for its customers' usage."""

    __tablename__ = "gateway_resellers"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    max_price_per_1k: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # default caps for its keys
    max_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKeyRow(GatewayBase):
    """One customer key. Only the SHA-256 of its secret is stored; limits are None when unlimited."""

    __tablename__ = "gateway_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part of the key
    reseller: Mapped[str] = mapped_column(String(42), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    rotated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spend_per_month: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageRow(GatewayBase):
    """One request: reserved before any work (its worst case), settled after with what it really used."""

    __tablename__ = "gateway_usage"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the response id (chatcmpl-..., cmpl-...)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    reseller: Mapped[str] = mapped_column(String(42), index=True)
    model_id: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), index=True)  # reserved | settled | failed
    created_at: Mapped[float] = mapped_column(Float, index=True)
    settled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger)
    reserved_spend: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spend: Mapped[int] = mapped_column(BigInteger, default=0)
    price_per_1k: Mapped[int] = mapped_column(BigInteger, default=0)
    route: Mapped[list[Any]] = mapped_column(JSON, default=list)
    receipts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class AdminNonceRow(GatewayBase):
    __tablename__ = "gateway_admin_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class AdminTokenRow(GatewayBase):
    __tablename__ = "gateway_admin_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    expires_at: Mapped[float] = mapped_column(Float)


def init_gateway_db(engine: Engine) -> sessionmaker[Session]:
    """Create the gateway tables if missing and check their schema version; returns a session factory."""
    GatewayBase.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions.begin() as s:
        row = s.scalar(select(GatewaySchemaRow))
        if row is None:
            s.add(GatewaySchemaRow(id=1, version=GATEWAY_SCHEMA_VERSION))
        elif row.version != GATEWAY_SCHEMA_VERSION:
            raise GatewaySchemaError(
                f"gateway tables are schema version {row.version}; this build reads {GATEWAY_SCHEMA_VERSION}"
            )
    return sessions
