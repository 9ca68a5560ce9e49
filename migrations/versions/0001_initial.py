"""Messages, their history and the quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Every table that grows with traffic carries the message id, and every write touches one message's
rows, so the schema can be distributed by message id (Citus) without a rewrite. Segment statuses live
in arrays on the message row: one row lock covers the whole message and one UPDATE writes it back.
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'NEW','ENQUEUD','ACCEPTD','PDLIVRD','DELIVRD','UNDELIV','REJECTD','EXPIRED','DELETED'"


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE messages (
            id                 text        PRIMARY KEY,
            status             text        NOT NULL CHECK (status IN ({STATUSES})),
            partial            boolean     NOT NULL DEFAULT false,
            segment_statuses   text[]      NOT NULL,
            segment_updated_at timestamptz[] NOT NULL,
            recipient          text,
            campaign           text,
            error              text,
            registered_at      timestamptz,
            sent_at            timestamptz NOT NULL,
            expires_at         timestamptz NOT NULL,
            final_at           timestamptz,
            created_at         timestamptz NOT NULL,
            updated_at         timestamptz NOT NULL,
            CHECK (cardinality(segment_statuses) >= 1),
            CHECK (cardinality(segment_statuses) = cardinality(segment_updated_at))
        )
    """)
    op.execute("CREATE INDEX messages_sent_at ON messages (sent_at, id)")
    op.execute("CREATE INDEX messages_campaign ON messages (campaign, sent_at, id) WHERE campaign IS NOT NULL")
    op.execute("CREATE INDEX messages_recipient ON messages (recipient, sent_at, id) WHERE recipient IS NOT NULL")
    # The expiry sweep's work list: open messages by deadline.
    op.execute("CREATE INDEX messages_open_by_expiry ON messages (expires_at) WHERE final_at IS NULL")

    op.execute("""
        CREATE TABLE history (
            message_id  text        NOT NULL,
            seq         bigint      GENERATED ALWAYS AS IDENTITY,
            status      text,
            raw_status  text,
            segment     integer,
            event_time  timestamptz,
            received_at timestamptz NOT NULL,
            source      text        NOT NULL,
            applied     boolean     NOT NULL,
            reason      text,
            error       text,
            event_id    text,
            PRIMARY KEY (message_id, seq)
        )
    """)
    # A sender's event id is applied once per message, whatever its retries carry.
    op.execute("""
        CREATE UNIQUE INDEX history_event ON history (message_id, source, event_id)
        WHERE event_id IS NOT NULL
    """)

    op.execute("""
        CREATE TABLE quarantine (
            id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id   text,
            dialect      text        NOT NULL,
            received_at  timestamptz NOT NULL,
            method       text        NOT NULL,
            content_type text,
            query        bytea       NOT NULL DEFAULT ''::bytea,
            body         bytea       NOT NULL,
            error        jsonb       NOT NULL
        )
    """)
    op.execute("CREATE INDEX quarantine_dialect ON quarantine (dialect, id)")


def downgrade() -> None:
    op.execute("DROP TABLE quarantine")
    op.execute("DROP TABLE history")
    op.execute("DROP TABLE messages")
