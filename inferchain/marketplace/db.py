"""The market's database: SQLAlchemy 2 tables for the persisted offer book (SQLite by default, PostgreSQL too).

The schema is created with `create_all` and stamped with one `schema_version` row; a database stamped with
another version is refused with a clear error rather than read wrongly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Engine, Float, Integer, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

SCHEMA_VERSION = 1


class SchemaVersionError(RuntimeError):
    """The database was created by another schema version of the market."""


class Base(DeclarativeBase):
    pass


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class ModelRow(Base):
    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    num_layers: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")


class OfferRow(Base):
    """The latest verified offer of one node for one model."""

    __tablename__ = "offers"

    node_id: Mapped[str] = mapped_column(String(100), primary_key=True)  # libp2p peer id
    model_id: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)
    wallet: Mapped[str | None] = mapped_column(String(42), nullable=True)  # None: free swarm, unsigned
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    price_per_1k: Mapped[int] = mapped_column(BigInteger)  # token wei per 1k tokens per layer (< 2**62)
    ms_per_layer: Mapped[float] = mapped_column(Float)
    rtt_ms: Mapped[float] = mapped_column(Float)
    free_slots: Mapped[int] = mapped_column(Integer)
    max_slots: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    addrs: Mapped[list[str]] = mapped_column(JSON)
    signed_offer: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / 'market.sqlite'}"


def make_engine(url: str) -> Engine:
    """An engine for `url` (sqlite:///PATH or postgresql+psycopg://...); SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if path and path != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def init_db(engine: Engine) -> sessionmaker[Session]:
    """Create the tables if missing, stamp or check the schema version; returns a session factory."""
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory.begin() as session:
        row = session.get(SchemaVersionRow, 1)
        if row is None:
            session.add(SchemaVersionRow(id=1, version=SCHEMA_VERSION))
        elif row.version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the market database has schema version {row.version}; this inferchain reads {SCHEMA_VERSION}"
            )
    return factory
