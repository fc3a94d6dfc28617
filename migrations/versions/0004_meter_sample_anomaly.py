"""meter samples: the reason a reading is implausible

An implausible reading (csms.charging.plausibility: from the future, a register out of range, below an
earlier one or faster than the connector's power) is kept as received and flagged with its reason; it
is never priced. NULL: a plausible reading (and every sample stored before this revision).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anomaly", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.drop_column("anomaly")
