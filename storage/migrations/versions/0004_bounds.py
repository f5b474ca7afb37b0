"""one limit per field that fits the platforms' maxima; link codes that resist guessing

Link codes remember the app they were shown in (a code works only in the other app),
and each attempt to type one is kept for an hour, so an identity gets a few tries
an hour, not unlimited guesses at six digits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("link_codes") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
    op.create_table(
        "link_attempts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("identity_id", BigId, nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_link_attempts_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_attempts")),
    )
    op.create_index(
        op.f("ix_link_attempts_identity_id"), "link_attempts", ["identity_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_link_attempts_identity_id"), table_name="link_attempts")
    op.drop_table("link_attempts")
    with op.batch_alter_table("link_codes") as batch:
        batch.drop_column("channel")
