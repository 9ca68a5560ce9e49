"""A covering index for campaign statistics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Counts by status and delivery times of one campaign come from the index alone (an index-only scan),
never from the table's rows.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX messages_campaign_stats ON messages (campaign, status) INCLUDE (sent_at, final_at) "
        "WHERE campaign IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX messages_campaign_stats")
