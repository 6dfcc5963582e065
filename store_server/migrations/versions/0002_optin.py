"""opt-in: used single-use link ids and form nonces

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "optin_used_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_optin_used_nonces_used_at", "optin_used_nonces", ["used_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_optin_used_nonces_used_at", table_name="optin_used_nonces")
    op.drop_table("optin_used_nonces")
