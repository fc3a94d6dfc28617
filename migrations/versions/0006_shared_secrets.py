"""shared_secrets: server secrets every process of a cluster agrees on

In cluster mode (CSMS_NATS_URL) the settlement secret, from which invoice preimages are derived, must be
the same in every process: a session taken over by another process re-creates its invoices with the
same payment hashes. The first process to start writes it here (seeded from its data directory's secret
file, so a one-process PostgreSQL installation keeps its invoices' hashes when it becomes a cluster).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shared_secrets",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shared_secrets")
