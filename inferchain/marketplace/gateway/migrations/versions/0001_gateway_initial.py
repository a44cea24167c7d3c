"""The gateway's first tables: resellers, API keys, usage rows, admin nonces and tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_resellers",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("max_price_per_1k", sa.BigInteger(), nullable=True),
        sa.Column("max_latency_ms", sa.Float(), nullable=True),
    )
    op.create_table(
        "gateway_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("reseller", sa.String(42), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("rotated_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("tokens_per_day", sa.BigInteger(), nullable=True),
        sa.Column("spend_per_month", sa.BigInteger(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
    )
    op.create_index("ix_gateway_api_keys_reseller", "gateway_api_keys", ["reseller"])
    op.create_table(
        "gateway_usage",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("reseller", sa.String(42), nullable=False),
        sa.Column("model_id", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("settled_at", sa.Float(), nullable=True),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_spend", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=False),
        sa.Column("price_per_1k", sa.BigInteger(), nullable=False),
        sa.Column("route", sa.JSON(), nullable=False),
        sa.Column("receipts", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
    )
    for column in ("key_id", "reseller", "status", "created_at"):
        op.create_index(f"ix_gateway_usage_{column}", "gateway_usage", [column])
    op.create_table(
        "gateway_admin_nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "gateway_admin_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_gateway_admin_tokens_address", "gateway_admin_tokens", ["address"])


def downgrade() -> None:
    for table in ("gateway_admin_tokens", "gateway_admin_nonces", "gateway_usage", "gateway_api_keys"):
        op.drop_table(table)
    op.drop_table("gateway_resellers")
