"""scanners: whether one ever heartbeated, so a Redis that lost its health reports still
judges a scanner that never reports again

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    # false for every scanner already registered: each one's next heartbeat sets it (the health
    # hashes already in Redis carry no mark that SQL was told), so none needs guessing here
    with op.batch_alter_table("scanners") as batch_op:
        batch_op.add_column(
            sa.Column("reports_health", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("scanners") as batch_op:
        batch_op.drop_column("reports_health")
