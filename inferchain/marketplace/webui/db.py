"""The web UI's tables (own SQLAlchemy metadata, the market's engine): browser chats and their receipts.

A receipt row is written only once both signatures are in (the node's and the buyer's wallet countersignature), so
every row can be settled by anyone (`PaymentEscrow.settleBatch`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Engine, Float, ForeignKey, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from inferchain.wallet.receipts import Receipt, SignedReceipt


class Base(DeclarativeBase):
    pass


class ChatRow(Base):
    __tablename__ = "webui_chats"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    buyer: Mapped[str] = mapped_column(String(42), index=True)
    model_id: Mapped[str] = mapped_column(String(80))
    prompt: Mapped[str] = mapped_column(String)
    answer: Mapped[str] = mapped_column(String)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    route: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    cost: Mapped[str] = mapped_column(String(80))  # token wei, decimal text (uint256)
    receipt_errors: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class ReceiptRow(Base):
    __tablename__ = "webui_receipts"

    key: Mapped[str] = mapped_column(String(66), primary_key=True)  # the escrow's replay key, 0x-hex
    chat_id: Mapped[str] = mapped_column(ForeignKey("webui_chats.id"), index=True)
    node: Mapped[str] = mapped_column(String(42), index=True)
    receipt: Mapped[dict[str, Any]] = mapped_column(JSON)  # Receipt.to_json, price as text
    node_sig: Mapped[str] = mapped_column(String(140))
    buyer_sig: Mapped[str] = mapped_column(String(140))
    amount: Mapped[str] = mapped_column(String(80))


def init_webui_db(engine: Engine) -> sessionmaker[Session]:
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def receipt_json(signed: SignedReceipt) -> dict[str, Any]:
    """A countersigned receipt for the pages: fields, signatures, amount and key (big integers as text)."""
    r = signed.receipt
    data = r.to_json()
    data["price_per_1k"] = str(r.price_per_1k)
    return {
        "key": "0x" + r.key.hex(),
        "receipt": data,
        "message": {k: str(v) if isinstance(v, int) else v for k, v in _message_hex(r).items()},
        "node_sig": "0x" + signed.node_signature.hex(),
        "buyer_sig": "0x" + signed.buyer_signature.hex(),
        "amount": str(r.amount_owed),
    }


def _message_hex(r: Receipt) -> dict[str, Any]:
    return {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in r.message().items()}


def save_chat(factory: sessionmaker[Session], chat: ChatRow, receipts: list[SignedReceipt]) -> None:
    with factory.begin() as s:
        s.add(chat)
        s.flush()
        for signed in receipts:
            j = receipt_json(signed)
            s.add(
                ReceiptRow(
                    key=j["key"],
                    chat_id=chat.id,
                    node=signed.receipt.node,
                    receipt=j["receipt"],
                    node_sig=j["node_sig"],
                    buyer_sig=j["buyer_sig"],
                    amount=j["amount"],
                )
            )


def stored_receipt(row: ReceiptRow) -> SignedReceipt:
    data = dict(row.receipt)
    data["price_per_1k"] = int(data["price_per_1k"])
    return SignedReceipt(Receipt.from_json(data), bytes.fromhex(row.node_sig[2:]), bytes.fromhex(row.buyer_sig[2:]))


def chats_of(factory: sessionmaker[Session], buyer: str, limit: int = 100) -> list[tuple[ChatRow, list[ReceiptRow]]]:
    with factory() as s:
        chats = s.scalars(
            select(ChatRow).where(ChatRow.buyer == buyer).order_by(ChatRow.created_at.desc()).limit(limit)
        ).all()
        out = []
        for c in chats:
            rows = s.scalars(select(ReceiptRow).where(ReceiptRow.chat_id == c.id)).all()
            out.append((c, list(rows)))
        return out


def receipts_of_node(factory: sessionmaker[Session], node: str, limit: int = 500) -> list[ReceiptRow]:
    with factory() as s:
        return list(s.scalars(select(ReceiptRow).where(ReceiptRow.node == node).limit(limit)).all())
