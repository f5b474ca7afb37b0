"""set-based bulk queuing: how far a broadcast's queuing got, follow-ups asked

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(sa.Column("queued_through", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("followup_asked_at", sa.DateTime(timezone=True), nullable=True))
    # A broadcast already sending was queued whole, in one transaction, before this.
    op.execute("UPDATE broadcasts SET queued_at = started_at WHERE status <> 'scheduled'")


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("followup_asked_at")
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("queued_through")
