"""visits: one row per presence (a delivery taken over after its claim lapsed wrote it twice)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    # a presence is one (subscriber, venue, zone, start): the copies a second delivery of the
    # same exit wrote go before the index that keeps them out can be built
    op.execute(
        sa.text(
            "DELETE FROM visits WHERE id NOT IN (SELECT MIN(id) FROM visits "
            "GROUP BY subscriber_id, venue_id, zone, started_at)"
        )
    )
    op.create_index(
        "uq_visits_presence",
        "visits",
        ["subscriber_id", "venue_id", "zone", "started_at"],
        unique=True,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("uq_visits_presence", table_name="visits")
