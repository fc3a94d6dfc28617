"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-29 13:34:00.875562
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
        "charger_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("charger_messages", schema=None) as batch_op:
        batch_op.create_index("ix_charger_messages_charger_time", ["charger_id", "received_at"], unique=False)

    op.create_table(
        "chargers",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("lenient", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remote_address", sa.String(length=64), nullable=True),
        sa.Column("vendor", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("serial_number", sa.String(length=255), nullable=True),
        sa.Column("firmware_version", sa.String(length=255), nullable=True),
        sa.Column("booted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("boot_reason", sa.String(length=64), nullable=True),
        sa.Column("meter_interval_s", sa.Integer(), nullable=True),
        sa.Column("meter_interval_status", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "id_tags",
        sa.Column("id_tag", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parent_id_tag", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_tag"),
    )
    op.create_table(
        "connectors",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("plug_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("info", sa.String(length=255), nullable=True),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["charger_id"], ["chargers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("charger_id", "connector_id"),
    )
    op.create_table(
        "sessions",
        sa.Column("number", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=True),
        sa.Column("protocol", sa.String(length=16), nullable=True),
        sa.Column("ocpp_transaction_id", sa.String(length=64), nullable=True),
        sa.Column("remote_start_id", sa.Integer(), nullable=True),
        sa.Column("id_tag", sa.String(length=64), nullable=True),
        sa.Column("id_tag_status", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("start_fingerprint", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meter_start_wh", sa.BigInteger(), nullable=True),
        sa.Column("meter_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meter_stop_wh", sa.BigInteger(), nullable=True),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("power_w", sa.Integer(), nullable=True),
        sa.Column("last_sample_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seq_no", sa.Integer(), nullable=True),
        sa.Column("stop_reason", sa.String(length=64), nullable=True),
        sa.Column("offline_events", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["charger_id"], ["chargers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("number"),
        sa.UniqueConstraint("charger_id", "ocpp_transaction_id", name="uq_sessions_charger_tx"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_charger_state", ["charger_id", "state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sessions_start_fingerprint"), ["start_fingerprint"], unique=False
        )
        batch_op.create_index("ix_sessions_state", ["state"], unique=False)

    op.create_table(
        "meter_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=True),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("context", sa.String(length=32), nullable=False),
        sa.Column("energy_register_wh", sa.BigInteger(), nullable=True),
        sa.Column("power_w", sa.Integer(), nullable=True),
        sa.Column("soc_percent", sa.Integer(), nullable=True),
        sa.Column("after_end", sa.Boolean(), nullable=False),
        sa.Column("sampled_values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "charger_id", "connector_id", "timestamp", "context", "source", name="uq_meter_samples_reading"
        ),
    )
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.create_index("ix_meter_samples_session_time", ["session_number", "timestamp"], unique=False)

    op.create_table(
        "transaction_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("seq_no", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("trigger_reason", sa.String(length=32), nullable=True),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["session_number"], ["sessions.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_number", "seq_no", name="uq_tx_events_seq"),
    )
    with op.batch_alter_table("transaction_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transaction_events_session_number"), ["session_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("transaction_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transaction_events_session_number"))

    op.drop_table("transaction_events")
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_meter_samples_session_time")

    op.drop_table("meter_samples")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_state")
        batch_op.drop_index(batch_op.f("ix_sessions_start_fingerprint"))
        batch_op.drop_index("ix_sessions_charger_state")

    op.drop_table("sessions")
    op.drop_table("connectors")
    op.drop_table("id_tags")
    op.drop_table("chargers")
    with op.batch_alter_table("charger_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_charger_messages_charger_time")

    op.drop_table("charger_messages")
