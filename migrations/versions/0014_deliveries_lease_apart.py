"""A delivery's lease in a column of its own, outside every index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

A claimed delivery was marked by pushing its `next_attempt_at` past the attempt's timeout. That column is in the
due index, so the claim could never be a HOT update: it wrote a new entry in each of the table's six indexes.
Under a flat-out load most deliveries are claimed that way (the fan-out claims only what fits its window), and
one round of bench.subscriptions counted 1.96 updates per delivery and none HOT (pg_stat_user_tables). With the
lease in `leased_until`, which no index holds, the claim changes no indexed column and stays on its page (the
table keeps half of each page free, 0013): no index entry, a few bytes of WAL. A delivery is due when its
`next_attempt_at` has come and it is not leased (no lease, or one that has passed); the claims skip the leased
ones their walk of the due index meets, at most what the dispatchers hold. Recording an attempt ends the lease.
Deliveries claimed the old way when this runs are still leased by their pushed `next_attempt_at`: due again
when it passes, as before.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE deliveries ADD COLUMN leased_until timestamptz")


def downgrade() -> None:
    # A lease held now is moved back into next_attempt_at, where the older code looks for it.
    op.execute("UPDATE deliveries SET next_attempt_at = leased_until WHERE state = 'pending' AND leased_until > now()")
    op.execute("ALTER TABLE deliveries DROP COLUMN leased_until")
