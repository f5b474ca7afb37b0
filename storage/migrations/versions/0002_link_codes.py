"""link codes: one person, two apps

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "link_codes",
        sa.Column("id", BigId, nullable=False),
        sa.Column("code", sa.String(length=12), nullable=False),
        sa.Column("resident_id", BigId, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_link_codes_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_codes")),
    )
    op.create_index(op.f("ix_link_codes_code"), "link_codes", ["code"], unique=False)
    op.create_index(op.f("ix_link_codes_resident_id"), "link_codes", ["resident_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_link_codes_resident_id"), table_name="link_codes")
    op.drop_index(op.f("ix_link_codes_code"), table_name="link_codes")
    op.drop_table("link_codes")
