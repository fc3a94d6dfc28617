"""meter samples: deduplicated by what they say, not by their timestamp

A charger with a stuck clock stamps different readings with one timestamp; the old unique key
(charger, connector, timestamp, context, source) kept only the first of them and lost the energy of the
rest. A retried message is the same reading sent again: samples are now unique by a digest of the
reading itself (connector, transaction, source, timestamp and sampled values).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=32), nullable=True))
        batch_op.drop_constraint("uq_meter_samples_reading", type_="unique")
        batch_op.create_unique_constraint("uq_meter_samples_digest", ["charger_id", "digest"])


def downgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.drop_constraint("uq_meter_samples_digest", type_="unique")
        batch_op.drop_column("digest")
        batch_op.create_unique_constraint(
            "uq_meter_samples_reading", ["charger_id", "connector_id", "timestamp", "context", "source"]
        )
