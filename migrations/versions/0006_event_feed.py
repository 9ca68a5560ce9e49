"""The event feed: one row per committed change of a message, readable gap-free in commit order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Each row is written in the transaction that makes the change and carries the message as it is after the
change (the same columns as `messages`), so that `GET /events` shows what `GET /messages/{id}` showed then.

Gap-free: `position` is taken at insert and becomes visible at commit, so a reader asking for
`position > last` would skip a row whose transaction commits after a later one's. Each row therefore also
records its writing transaction (`tx`, `pg_current_xact_id()`), and readers only serve rows whose
transaction is below the oldest one still running (`pg_snapshot_xmin(pg_current_snapshot())`), in
(tx, position) order, with a cursor made of both: every row a reader has not been given yet sorts after its
cursor. `event_horizon` remembers where pruning got to, so a cursor from before it is refused, not answered
with a silent gap.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE events (
            tx                 xid8        NOT NULL DEFAULT pg_current_xact_id(),
            position           bigint      GENERATED ALWAYS AS IDENTITY,
            source             text        NOT NULL,
            previous_status    text,
            at                 timestamptz NOT NULL,
            id                 text        NOT NULL,
            status             text        NOT NULL,
            partial            boolean     NOT NULL,
            segment_statuses   text[]      NOT NULL,
            segment_updated_at timestamptz[] NOT NULL,
            sent_at            timestamptz NOT NULL,
            expires_at         timestamptz NOT NULL,
            created_at         timestamptz NOT NULL,
            updated_at         timestamptz NOT NULL,
            recipient          text,
            campaign           text,
            error              text,
            text               text,
            final_at           timestamptz,
            registered_at      timestamptz,
            delivery_seconds   double precision,
            version            bigint      NOT NULL,
            PRIMARY KEY (tx, position)
        )
    """)
    # Filtered feeds: one campaign's changes, or only final ones, without reading the others.
    op.execute("CREATE INDEX events_campaign ON events (campaign, tx, position) WHERE campaign IS NOT NULL")
    op.execute("CREATE INDEX events_final ON events (tx, position) WHERE final_at IS NOT NULL")
    # Pruning by age.
    op.execute("CREATE INDEX events_at ON events (at)")
    op.execute("""
        CREATE TABLE event_horizon (
            only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            tx        xid8    NOT NULL,
            position  bigint  NOT NULL
        )
    """)
    op.execute("INSERT INTO event_horizon (tx, position) VALUES ('0'::xid8, 0)")


def downgrade() -> None:
    op.execute("DROP TABLE event_horizon")
    op.execute("DROP TABLE events")
