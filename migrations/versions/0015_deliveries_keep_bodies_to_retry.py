"""A delivery keeps its body only while it may be sent again.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

The body (the event as POSTed, about a kilobyte) was most of what a delivery wrote: on its insert, and again on
the update that recorded its attempt. The dispatcher that queues a delivery claims it at once and holds the body
(service/store/subscriptions.py `queue_deliveries`): the row keeps none, and nearly every first attempt succeeds.
A failed attempt stores it, so that every retry sends the same bytes; a delivered delivery drops it. A delivery
without one (its dispatcher died during the first attempt, or a delivered one is replayed) is sent its event's
body made again from the feed, and is failed, saying why, if the feed no longer keeps the event.

Downgrading drops the deliveries without a body: the delivered ones (their log) and any being attempted for the
first time at that moment (stop the dispatchers first).
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE deliveries ALTER COLUMN body DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE body IS NULL")
    op.execute("ALTER TABLE deliveries ALTER COLUMN body SET NOT NULL")
