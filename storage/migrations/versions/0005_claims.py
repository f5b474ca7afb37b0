"""outbox claims with tokens, reply parts, failed inbound events kept for retry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        # Which claim holds the row: an outcome is written only under the same token.
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        # How many parts of a long reply went out already: a retry resumes after them.
        batch.add_column(sa.Column("parts_sent", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("parts_sent")
        batch.drop_column("claim_token")
