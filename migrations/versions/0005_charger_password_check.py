"""chargers: a keyed digest of the last password that passed the scrypt check

Checking a charger's password with scrypt costs tens of milliseconds of CPU (and 16 MB); a whole fleet
reconnecting after a restart would spend minutes on it. After a successful check satwatt keeps
HMAC-SHA256(key, charger id, stored hash, password), keyed with a secret kept in the data directory (not
in the database), and checks later connections against it; a new password (a new stored hash) or a
wrong one falls back to scrypt.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_check", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("password_check")
