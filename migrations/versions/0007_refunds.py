"""refunds: what satwatt paid back to a driver's wallet (LNURL-withdraw), recorded before it is paid

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("active_for", sa.Integer(), nullable=True),
        sa.Column("amount_msat", sa.BigInteger(), nullable=False),
        sa.Column("bolt11", sa.Text(), nullable=False),
        sa.Column("payment_hash", sa.String(length=64), nullable=False),
        sa.Column("fee_limit_msat", sa.BigInteger(), nullable=False),
        sa.Column("fee_msat", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key"),
        sa.UniqueConstraint("active_for"),
        sa.UniqueConstraint("payment_hash"),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refunds_session_number"), ["session_number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refunds_session_number"))
    op.drop_table("refunds")
