"""A subscription's new events are read and attempted by one dispatcher at a time, under a lease; a delivery's
row is written once, when its first attempt ends.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

Before, the fan-out queued each delivery claimed (one write) and the recorder wrote its attempt (a second). Now the
dispatcher holding a subscription's fan-out lease (`fanout_owner`, a token of its own for each time it takes the
lease, and `fanout_until`) reads its events after the cursor, attempts them, and inserts each delivery as its first
attempt ends (delivered, or pending with its body for a retry), moving the cursor past every event whose delivery
is written, in the same transaction. A dispatcher that dies leaves the lease to pass: the next one reads from the
cursor again, and what was attempted but not written is sent again (at least once).

Downgrading drops the lease: deliveries being attempted for the first time at that moment are sent again by the
older code (stop the dispatchers first).
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE subscriptions ADD COLUMN fanout_owner uuid, ADD COLUMN fanout_until timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE subscriptions DROP COLUMN fanout_owner, DROP COLUMN fanout_until")
