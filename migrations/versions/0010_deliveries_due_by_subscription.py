"""Due deliveries found per subscription.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

The dispatcher claims a subscription's due deliveries (`subscription_id = $1 AND state = 'pending' AND
next_attempt_at <= now() ORDER BY next_attempt_at`), asks which subscriptions have any due, counts each one's
backlog, and makes a recovered subscriber's retries due at once. An index on `next_attempt_at` alone made each
claim step over every other subscription's due deliveries: one subscriber down for minutes (hundreds of
thousands pending, due again and again) slowed the claims of all the others.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX deliveries_due_by_subscription ON deliveries (subscription_id, next_attempt_at)"
        " WHERE state = 'pending'"
    )
    op.execute("DROP INDEX deliveries_due")


def downgrade() -> None:
    op.execute("CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending'")
    op.execute("DROP INDEX deliveries_due_by_subscription")
