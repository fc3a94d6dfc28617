"""settlement: tariffs, payers, settlements, invoices, actions, events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 13:50:14.296644
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
        "lightning_cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("add_index", sa.BigInteger(), nullable=False),
        sa.Column("settle_index", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "payers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "tariffs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ln_invoices",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payment_hash", sa.String(length=64), nullable=False),
        sa.Column("bolt11", sa.Text(), nullable=True),
        sa.Column("amount_msat", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("price_msat_per_kwh", sa.BigInteger(), nullable=False),
        sa.Column("fee_msat", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amount_paid_msat", sa.BigInteger(), nullable=True),
        sa.Column("settle_index", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key"),
        sa.UniqueConstraint("payment_hash"),
    )
    with op.batch_alter_table("ln_invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ln_invoices_session_number"), ["session_number"], unique=False)
        batch_op.create_index("ix_ln_invoices_status", ["status"], unique=False)

    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.create_index("ix_session_events_session", ["session_number", "id"], unique=False)

    op.create_table(
        "settlement_actions",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("settlement_actions", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_actions_pending", ["status", "session_number"], unique=False)

    op.create_table(
        "settlements",
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("payer_id", sa.String(length=32), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("tariff_id", sa.String(length=32), nullable=True),
        sa.Column("tariff", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("bill", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payer_id"],
            ["payers.id"],
        ),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_number"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlements_closed"), ["closed"], unique=False)
        batch_op.create_index(batch_op.f("ix_settlements_payer_id"), ["payer_id"], unique=False)

    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tariff_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key("fk_chargers_tariff_id", "tariffs", ["tariff_id"], ["id"])

    with op.batch_alter_table("id_tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payer_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key("fk_id_tags_payer_id", "payers", ["payer_id"], ["id"], ondelete="CASCADE")


def downgrade() -> None:
    with op.batch_alter_table("id_tags", schema=None) as batch_op:
        batch_op.drop_constraint("fk_id_tags_payer_id", type_="foreignkey")
        batch_op.drop_column("payer_id")

    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_constraint("fk_chargers_tariff_id", type_="foreignkey")
        batch_op.drop_column("tariff_id")

    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlements_payer_id"))
        batch_op.drop_index(batch_op.f("ix_settlements_closed"))

    op.drop_table("settlements")
    with op.batch_alter_table("settlement_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_actions_pending")

    op.drop_table("settlement_actions")
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.drop_index("ix_session_events_session")

    op.drop_table("session_events")
    with op.batch_alter_table("ln_invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_ln_invoices_status")
        batch_op.drop_index(batch_op.f("ix_ln_invoices_session_number"))

    op.drop_table("ln_invoices")
    op.drop_table("tariffs")
    op.drop_table("payers")
    op.drop_table("lightning_cursors")
