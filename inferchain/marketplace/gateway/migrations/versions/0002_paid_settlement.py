"""Paid gateway sessions: the node receipts of each request and the settlement batches that pay them; drops the
pre-Alembic schema version table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_receipts",
        sa.Column("key", sa.String(66), primary_key=True),
        sa.Column("usage_id", sa.String(64), nullable=False),
        sa.Column("reseller", sa.String(42), nullable=False),
        sa.Column("node", sa.String(42), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("node_signature", sa.String(140), nullable=False),
        sa.Column("buyer_signature", sa.String(140), nullable=False),
        sa.Column("amount", sa.String(80), nullable=False),
        sa.Column("fee", sa.String(80), nullable=True),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("batch_tx", sa.String(66), nullable=True),
        sa.Column("settled_tx", sa.String(66), nullable=True),
        sa.Column("settled_block", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    for column in ("usage_id", "reseller", "node", "state", "batch_tx"):
        op.create_index(f"ix_gateway_receipts_{column}", "gateway_receipts", [column])
    op.create_table(
        "gateway_settlement_batches",
        sa.Column("tx_hash", sa.String(66), primary_key=True),
        sa.Column("raw_tx", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=True),
        sa.Column("gas", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_gateway_settlement_batches_state", "gateway_settlement_batches", ["state"])
    if "gateway_schema_version" in sa.inspect(op.get_bind()).get_table_names():
        op.drop_table("gateway_schema_version")


def downgrade() -> None:
    op.drop_table("gateway_settlement_batches")
    op.drop_table("gateway_receipts")
    op.create_table(
        "gateway_schema_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO gateway_schema_version (id, version) VALUES (1, 1)")
