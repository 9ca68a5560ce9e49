"""Autovacuum `messages` after a number of rows written, not after a share of the table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Campaign statistics count a campaign from the `messages_campaign` index alone (an index-only scan), which
needs the visibility map to say that the rows' pages hold nothing newer than every running transaction may
see; until a vacuum has passed over them, each entry costs a heap fetch. Measured on PostgreSQL 15 with a
million messages stored: a 2,500-message campaign written since the last vacuum took 2,500 heap fetches and
25 ms, against 0 and 1.1 ms once vacuumed.

PostgreSQL's defaults start that vacuum after inserts of 20% of the table (and updates of 20%): 200,000
messages at one million stored, 2,000,000 at ten million. At a million messages a day the newest two days of
campaigns, the ones people look at, would be read from the heap, and the window would grow with the table.
A fixed number of rows keeps it the same at any size: about two and a half hours at a million messages a
day. Such a vacuum visits only the pages not yet all-visible (the recent ones), and skips the indexes while
fewer than 2% of the table's pages hold dead rows (PostgreSQL 14 and later), so it stays cheap as the table
grows. Operators may override these per table (`ALTER TABLE messages SET (...)`).
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SETTINGS = {
    "autovacuum_vacuum_insert_scale_factor": "0",
    "autovacuum_vacuum_insert_threshold": "100000",
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "200000",
}


def upgrade() -> None:
    op.execute(f"ALTER TABLE messages SET ({', '.join(f'{k} = {v}' for k, v in SETTINGS.items())})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE messages RESET ({', '.join(SETTINGS)})")
