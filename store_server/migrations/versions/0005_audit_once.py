"""audit_log: one row per device event (written inline and again by the jobs, it counts once)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    # A device's event id is unique in its outbox; rows whose device was deleted (NULL) are
    # left alone, as two devices' events may share an id.
    op.execute(
        sa.text(
            "DELETE FROM audit_log WHERE device_id IS NOT NULL AND event_id IS NOT NULL "
            "AND id NOT IN (SELECT MIN(id) FROM audit_log WHERE device_id IS NOT NULL "
            "AND event_id IS NOT NULL GROUP BY device_id, event_id)"
        )
    )
    op.create_index("uq_audit_device_event", "audit_log", ["device_id", "event_id"], unique=True)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("uq_audit_device_event", table_name="audit_log")
