"""The node's receipts: signed at session close, stored durably (SQLite, SQLAlchemy) before they are acknowledged.

Life of a receipt (`state`):

    signed         the node signed it and stored it; sent to the buyer in `closed`
    countersigned  the buyer's countersignature arrived, was checked and stored: settleable; `countersigned` acked
    settled        the escrow paid it (transaction recorded); never submitted again
    failed         the escrow can never pay it (expired, bad signature); `error` says why

Every write is one committed transaction with `synchronous=FULL` (WAL journal): once a reply leaves the node
the row is on disk, whatever happens to the process next. The primary key is the escrow's replay key, so the
store itself refuses a second receipt for the same session and span (that would be equivocation).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import BigInteger, Float, Integer, LargeBinary, String, create_engine, event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from inferchain.trust.commitment import CommitmentBuilder
from inferchain.wallet.receipts import InvalidReceipt, Receipt, SignedReceipt
from inferchain.wallet.typed_data import Domain

DB_FILE = "receipts.sqlite"
SCHEMA_VERSION = 1
STATES = ("signed", "countersigned", "settled", "failed")


class ReceiptStoreError(RuntimeError):
    pass


class DuplicateReceipt(ReceiptStoreError):
    """A receipt for this session and span was already signed: signing another would be equivocation."""


class _Base(DeclarativeBase):
    pass


class _Meta(_Base):
    __tablename__ = "meta"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class _Row(_Base):
    __tablename__ = "receipts"
    key: Mapped[str] = mapped_column(String(66), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(66), index=True)
    buyer: Mapped[str] = mapped_column(String(42))
    node: Mapped[str] = mapped_column(String(42), index=True)
    model_id: Mapped[str] = mapped_column(String(66))
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    tokens_in: Mapped[int] = mapped_column(BigInteger)
    tokens_out: Mapped[int] = mapped_column(BigInteger)
    price_per_1k: Mapped[str] = mapped_column(String(80))  # uint256 as decimal text
    activation_commitment: Mapped[str] = mapped_column(String(66))
    expiry: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[str] = mapped_column(String(80))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    escrow: Mapped[str] = mapped_column(String(42))
    node_signature: Mapped[str] = mapped_column(String(140))
    buyer_signature: Mapped[str | None] = mapped_column(String(140), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    settled_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    settled_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class _SketchRow(_Base):
    """The activation sketch behind each receipt's `activation_commitment` (keccak256 of `sketch`)."""

    __tablename__ = "activation_sketches"
    key: Mapped[str] = mapped_column(String(66), primary_key=True)
    sketch: Mapped[bytes] = mapped_column(LargeBinary)


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


@dataclass(frozen=True)
class StoredReceipt:
    receipt: Receipt
    domain: Domain
    node_signature: bytes
    buyer_signature: bytes | None
    state: str
    error: str | None
    created_at: float
    settled_tx: str | None
    settled_block: int | None

    @property
    def key(self) -> str:
        return _hex(self.receipt.key)

    @property
    def signed(self) -> SignedReceipt:
        if self.buyer_signature is None:
            raise ReceiptStoreError(f"receipt {self.key} has no buyer countersignature")
        return SignedReceipt(self.receipt, self.node_signature, self.buyer_signature)

    def to_json(self) -> dict[str, Any]:
        r = self.receipt.to_json()
        r["price_per_1k"] = str(r["price_per_1k"])
        return {
            "key": self.key,
            "state": self.state,
            "amount": str(self.receipt.amount_owed),
            **r,
            "chain_id": self.domain.chain_id,
            "escrow": self.domain.verifying_contract,
            "countersigned": self.buyer_signature is not None,
            "error": self.error,
            "created_at": self.created_at,
            "settled_tx": self.settled_tx,
            "settled_block": self.settled_block,
        }


def _load(row: _Row) -> StoredReceipt:
    receipt = Receipt(
        session_id=bytes.fromhex(row.session_id[2:]),
        buyer=row.buyer,
        node=row.node,
        model_id=bytes.fromhex(row.model_id[2:]),
        span_start=row.span_start,
        span_end=row.span_end,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        price_per_1k=int(row.price_per_1k),
        activation_commitment=bytes.fromhex(row.activation_commitment[2:]),
        expiry=row.expiry,
    )
    return StoredReceipt(
        receipt=receipt,
        domain=Domain(row.chain_id, row.escrow),
        node_signature=bytes.fromhex(row.node_signature[2:]),
        buyer_signature=bytes.fromhex(row.buyer_signature[2:]) if row.buyer_signature else None,
        state=row.state,
        error=row.error,
        created_at=row.created_at,
        settled_tx=row.settled_tx,
        settled_block=row.settled_block,
    )


class ReceiptStore:
    """The receipts of one node data folder (`receipts.sqlite`)."""

    def __init__(self, path: Path) -> None:
        self.path = path / DB_FILE if path.is_dir() or path.suffix != ".sqlite" else path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we answer
            cur.close()

        _Base.metadata.create_all(self.engine)
        with Session(self.engine) as s, s.begin():
            version = s.get(_Meta, "schema_version")
            if version is None:
                s.add(_Meta(name="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version.value) != SCHEMA_VERSION:
                raise ReceiptStoreError(
                    f"{self.path} has receipt schema {version.value}; this inferchain reads {SCHEMA_VERSION}"
                )

    def close(self) -> None:
        self.engine.dispose()

    # -- writes (each one committed before returning) -----------------------------------------------------

    def add_signed(
        self, receipt: Receipt, node_signature: bytes, domain: Domain, sketch: bytes | None = None
    ) -> StoredReceipt:
        """Stores a signed receipt (and the activation sketch it commits to) in one transaction."""
        now = time.time()
        row = _Row(
            key=_hex(receipt.key),
            session_id=_hex(receipt.session_id),
            buyer=receipt.buyer,
            node=receipt.node,
            model_id=_hex(receipt.model_id),
            span_start=receipt.span_start,
            span_end=receipt.span_end,
            tokens_in=receipt.tokens_in,
            tokens_out=receipt.tokens_out,
            price_per_1k=str(receipt.price_per_1k),
            activation_commitment=_hex(receipt.activation_commitment),
            expiry=receipt.expiry,
            amount=str(receipt.amount_owed),
            chain_id=domain.chain_id,
            escrow=domain.as_dict()["verifyingContract"],
            node_signature=_hex(node_signature),
            buyer_signature=None,
            state="signed",
            error=None,
            created_at=now,
            updated_at=now,
        )
        try:
            with Session(self.engine) as s, s.begin():
                s.add(row)
                if sketch:
                    s.add(_SketchRow(key=row.key, sketch=sketch))
        except IntegrityError:
            raise DuplicateReceipt(f"a receipt for key {_hex(receipt.key)} is already stored") from None
        return self.get(_hex(receipt.key))

    def add_countersignature(self, key: str, buyer_signature: bytes, buyer_signer: str | None = None) -> StoredReceipt:
        """Checks the buyer's countersignature against the stored receipt, then stores it."""
        stored = self.get(key)
        signed = SignedReceipt(stored.receipt, stored.node_signature, buyer_signature)
        signed.check(stored.domain, buyer_signer)  # raises InvalidReceipt
        if stored.buyer_signature is not None and stored.buyer_signature != buyer_signature:
            raise InvalidReceipt(f"receipt {key} already carries another countersignature")
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(_Row)
                .where(_Row.key == key, _Row.state == "signed")
                .values(buyer_signature=_hex(buyer_signature), state="countersigned", updated_at=time.time())
            )
        return self.get(key)

    def mark_settled(self, keys: Iterable[str], tx: str | None, block: int | None) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(_Row)
                .where(_Row.key.in_(list(keys)))
                .values(state="settled", settled_tx=tx, settled_block=block, error=None, updated_at=time.time())
            )

    def mark_failed(self, key: str, error: str, permanent: bool) -> None:
        """Records why settlement failed; a permanent failure is never retried."""
        values: dict[str, Any] = {"error": error[:500], "updated_at": time.time()}
        if permanent:
            values["state"] = "failed"
        with Session(self.engine) as s, s.begin():
            s.execute(update(_Row).where(_Row.key == key, _Row.state != "settled").values(**values))

    # -- reads --------------------------------------------------------------------------------------------

    def get(self, key: str) -> StoredReceipt:
        with Session(self.engine) as s:
            row = s.get(_Row, key)
            if row is None:
                raise ReceiptStoreError(f"no receipt with key {key}")
            return _load(row)

    def sketch(self, key: str) -> bytes | None:
        """The activation sketch stored with receipt `key` (None for receipts without one)."""
        with Session(self.engine) as s:
            row = s.get(_SketchRow, key)
            return None if row is None else bytes(row.sketch)

    def has(self, key: bytes | str) -> bool:
        k = key if isinstance(key, str) else _hex(key)
        with Session(self.engine) as s:
            return s.get(_Row, k) is not None

    def list(self, states: Sequence[str] | None = None, limit: int | None = None) -> list[StoredReceipt]:
        query = select(_Row).order_by(_Row.created_at)
        if states:
            query = query.where(_Row.state.in_(list(states)))
        if limit:
            query = query.limit(limit)
        with Session(self.engine) as s:
            return [_load(r) for r in s.scalars(query)]

    def summary(self) -> dict[str, Any]:
        """Counts and values (token wei, as text) by state."""
        with Session(self.engine) as s:
            rows = s.execute(select(_Row.state, _Row.amount)).all()
        by_state: dict[str, int] = {}
        value: dict[str, int] = {}
        for state, amount in rows:
            by_state[state] = by_state.get(state, 0) + 1
            value[state] = value.get(state, 0) + int(amount)
        return {"by_state": by_state, "value": {k: str(v) for k, v in value.items()}}


class ReceiptSigner:
    """What a paid node does at session close: build the receipt, sign it, store it, then accept the countersign."""

    def __init__(
        self,
        store: ReceiptStore,
        account: LocalAccount,
        domain: Domain,
        price_per_1k: int,
        ttl_s: int,
        authorized: Callable[[str, str], bool] | None = None,
    ) -> None:
        """`authorized(buyer, signer)`: whether the escrow lets `signer` countersign for `buyer` (a reseller's
        gateway key); None: only the buyer itself may countersign."""
        self.store, self.account, self.domain = store, account, domain
        self.price_per_1k, self.ttl_s = price_per_1k, ttl_s
        self.authorized = authorized
        self.earned_wei = 0  # countersigned this run (what settlement will pay, before the protocol fee)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def key_for(self, session_id: bytes, start: int, end: int) -> bytes:
        from eth_abi import encode
        from eth_utils import keccak

        return keccak(encode(["bytes32", "address", "uint32", "uint32"], [session_id, self.address, start, end]))

    def sign(
        self,
        session_id: bytes,
        buyer: str,
        model_id: bytes,
        span: tuple[int, int],
        tokens_in: int,
        tokens_out: int,
        commitment: bytes,
        sketch: bytes | None = None,
        store: bool = True,
    ) -> StoredReceipt:
        """Signs and durably stores the receipt; raises DuplicateReceipt if this session+span was signed before.
        `sketch`: the activation sketch whose keccak256 is `commitment`, stored with it. `store=False` only for the
        test-only equivocating node (inferchain.trust.adversary): signed and sent, never stored."""
        receipt = Receipt(
            session_id=session_id,
            buyer=buyer,
            node=self.address,
            model_id=model_id,
            span_start=span[0],
            span_end=span[1],
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            price_per_1k=self.price_per_1k,
            activation_commitment=commitment,
            expiry=int(time.time()) + self.ttl_s,
        )
        if not store:
            signature = receipt.sign(self.account, self.domain)
            return StoredReceipt(receipt, self.domain, signature, None, "signed", None, time.time(), None, None)
        return self.store.add_signed(receipt, receipt.sign(self.account, self.domain), self.domain, sketch)

    def countersigned(self, key: str, buyer_signature: bytes) -> StoredReceipt:
        signer = None
        if self.authorized is not None:
            pending = self.store.get(key)
            who = pending.receipt.recover(buyer_signature, pending.domain)
            if who != pending.receipt.buyer and self.authorized(pending.receipt.buyer, who):
                signer = who
        stored = self.store.add_countersignature(key, buyer_signature, signer)
        self.earned_wei += stored.receipt.amount_owed
        return stored


_SESSION_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass
class PaidSession:
    """Billing state of one paid session on one stream: who pays, for which span, and what was produced."""

    key: bytes
    session_id: bytes
    buyer: str
    span: tuple[int, int]
    first_tokens: int | None = None  # the prompt (first forward) is `tokens_in`, the rest `tokens_out`
    activations: CommitmentBuilder | None = None
    precision: str = "fp32"  # the weights the node computes with; the sketch commits to it

    def observe(self, tokens_total: int, reply: bytes = b"") -> None:
        """Called after each forward: counts tokens (the first forward is the prompt). `reply` is not used."""
        if self.first_tokens is None:
            self.first_tokens = tokens_total

    def record_activations(self, position: int, wire_input: dict[str, Any], output: Any) -> None:
        """Adds one forward's input (as received) and fp32 output to the session's activation sketch."""
        if self.activations is None:
            self.activations = CommitmentBuilder(int(output.shape[-1]), self.precision)
        self.activations.observe(position, wire_input, output)

    def sketch(self) -> bytes:
        """The serialized activation sketch (inferchain.trust.commitment); its keccak goes into the receipt."""
        if self.activations is None:
            return b""
        return self.activations.sketch().to_bytes()


class SessionBilling:
    """The paid-node rules at `open` and `close`, on top of a ReceiptSigner (raises WireError for the peer)."""

    def __init__(self, signer: ReceiptSigner, model_id: bytes, precision: str = "fp32") -> None:
        """`precision`: the weights the node computes with ("fp32", "int8"), committed in every session's sketch so
        that validators re-run at the same precision."""
        from inferchain.trust.adversary import Adversary

        self.signer = signer
        self.model_id = model_id
        self.precision = precision
        self._active: set[bytes] = set()
        adversary = Adversary.from_env()
        self._equivocate = adversary is not None and adversary.equivocate  # test-only cheating

    def begin(self, session_id: str, buyer: str | None, max_price: str | None, start: int, end: int) -> PaidSession:
        from eth_utils import to_checksum_address

        from inferchain.wire.errors import ErrorCode, WireError

        if buyer is None or max_price is None:
            raise WireError(
                ErrorCode.UNAUTHORIZED, "this node serves paid sessions only: open with `buyer` and `max_price_per_1k`"
            )
        try:
            buyer = to_checksum_address(buyer)
            limit = int(max_price)
        except ValueError:
            raise WireError(
                ErrorCode.BAD_MESSAGE, "`buyer` must be an address and `max_price_per_1k` an integer"
            ) from None
        if not _SESSION_ID.match(session_id):
            raise WireError(ErrorCode.BAD_MESSAGE, "a paid session id must be 0x followed by 64 hex digits")
        if buyer == self.signer.address:
            raise WireError(ErrorCode.BAD_MESSAGE, "a node cannot serve a paid session to itself")
        if limit < self.signer.price_per_1k:
            raise WireError(
                ErrorCode.UNAUTHORIZED,
                f"this node's price is {self.signer.price_per_1k} token wei per 1k tokens per layer, "
                f"above your limit of {limit}",
            )
        sid = bytes.fromhex(session_id[2:])
        key = self.signer.key_for(sid, start, end)
        if (key in self._active or self.signer.store.has(key)) and not self._equivocate:
            raise WireError(
                ErrorCode.BAD_MESSAGE,
                f"a receipt for session {session_id[:10]}… layers {start}:{end} exists; use a new session id",
            )
        self._active.add(key)
        return PaidSession(key, sid, buyer, (start, end), precision=self.precision)

    def end(self, paid: PaidSession) -> None:
        self._active.discard(paid.key)

    def close(self, paid: PaidSession, tokens_total: int) -> StoredReceipt:
        """Signs and stores the session's receipt (durable before the caller replies `closed`)."""
        from eth_utils import keccak

        first = paid.first_tokens or 0
        sketch = paid.sketch()
        commitment = bytes(keccak(sketch)) if sketch else bytes(32)
        again = self._equivocate and self.signer.store.has(paid.key)  # test-only: a second receipt, never stored
        return self.signer.sign(
            paid.session_id, paid.buyer, self.model_id, paid.span, first, tokens_total - first, commitment, sketch,
            store=not again,
        )  # fmt: skip
