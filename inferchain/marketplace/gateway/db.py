"""The gateway's tables (own SQLAlchemy metadata beside the market's book, same engine): resellers, API keys,
per-request usage rows (reserve -> settle), the node receipts of paid requests and the settlement batches that
pay them, admin sign-in nonces and admin tokens.

The schema is managed by Alembic (`migrations/`, its own version table `gateway_alembic_version`, so the market's
book and other tables on the same database are never touched): `init_gateway_db` upgrades to the newest revision.
Amounts are integers of token wei (uint256 amounts as decimal text); token counts are integers. Times are UNIX
seconds (floats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Engine, Float, Integer, String, Text, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "gateway_alembic_version"
LEGACY_VERSION_TABLE = "gateway_schema_version"  # before Alembic: create_all + one version row (schema 1)
RECEIPT_STATES = ("pending", "submitted", "settled", "flagged")


class GatewaySchemaError(RuntimeError):
    """The database holds gateway tables this build cannot read (a newer or unknown schema revision)."""


class GatewayBase(DeclarativeBase):
    pass


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


class ReceiptRow(GatewayBase):
    """One node receipt of a paid request, signed by the node and countersigned by the gateway's key for the
    reseller (as the nodes took it on the stream), and its way to the escrow:

        pending    countersigned, waiting for the settlement worker (retried with backoff after a passing error)
        submitted  in a batch transaction recorded before it was broadcast (`batch_tx`)
        settled    paid on-chain: `settled_tx`, `settled_block`, and the `amount` and `fee` the escrow moved
        flagged    will not be paid; `error` says why (expired, bad signature, gave up after `attempts`)
    """

    __tablename__ = "gateway_receipts"

    key: Mapped[str] = mapped_column(String(66), primary_key=True)  # the escrow's replay key
    usage_id: Mapped[str] = mapped_column(String(64), index=True)
    reseller: Mapped[str] = mapped_column(String(42), index=True)  # the receipt's buyer
    node: Mapped[str] = mapped_column(String(42), index=True)
    receipt: Mapped[dict[str, Any]] = mapped_column(JSON)  # Receipt.to_json with price_per_1k as text
    node_signature: Mapped[str] = mapped_column(String(140))
    buyer_signature: Mapped[str] = mapped_column(String(140))
    amount: Mapped[str] = mapped_column(String(80))  # owed (uint256 text); what the escrow moves when settled
    fee: Mapped[str | None] = mapped_column(String(80), nullable=True)  # protocol fee of `amount`, once settled
    expiry: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    batch_tx: Mapped[str | None] = mapped_column(String(66), nullable=True, index=True)
    settled_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    settled_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class BatchRow(GatewayBase):
    """A `settleBatch` transaction, stored signed before it is broadcast: after a crash the worker finds it and
    learns what became of it before anything else is sent (`signed` -> `mined` | `reverted` | `replaced`)."""

    __tablename__ = "gateway_settlement_batches"

    tx_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    raw_tx: Mapped[str] = mapped_column(Text)  # 0x-hex of the signed transaction
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    keys: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gas: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def init_gateway_db(engine: Engine) -> sessionmaker[Session]:
    """Create or upgrade the gateway tables to the newest migration; returns a session factory.

    A database made before the migrations (tables from `create_all`, schema version row 1) is stamped as the
    first revision, then upgraded. Raises GatewaySchemaError for a revision this build does not know."""
    from alembic import command
    from alembic.util.exc import CommandError

    with engine.begin() as conn:
        cfg = _alembic_config(conn)
        tables = set(inspect(conn).get_table_names())
        try:
            if LEGACY_VERSION_TABLE in tables and VERSION_TABLE not in tables:
                command.stamp(cfg, "0001")
            command.upgrade(cfg, "head")
        except CommandError as e:
            raise GatewaySchemaError(f"gateway tables: {e} (written by a newer inferchain?)") from None
    return sessionmaker(engine, expire_on_commit=False)
