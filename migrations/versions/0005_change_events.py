"""What the ledger keeps beside the statuses: a version per message, the text sent, delivery times, and
senders' event ids per sender.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

* `version`: one more with every change of the message, so a consumer of its changes can tell an old one
  from a new one. Existing messages start at 1 (the default fills them without rewriting the table).
* `text`: what the platform registered as sent (bounded by the API).
* `delivery_seconds`: sending to DELIVRD by the sender's event time, written once by the report that
  delivers; campaign statistics read it from the covering index, so a sweep's verdict never counts as a
  delivery time. Existing delivered messages take final_at - sent_at, as the statistics did before.
* `sender_events`: a sender's event id is applied once, whatever message a replay of it names (Mobizon
  signs the event id, not its data). Keyed by sender and event id, so it distributes on its own key; it
  replaces the per-message unique index on history.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE messages ADD COLUMN version bigint NOT NULL DEFAULT 1")
    op.execute("ALTER TABLE messages ALTER COLUMN version SET DEFAULT 0")
    op.execute("ALTER TABLE messages ADD COLUMN text text")
    op.execute("ALTER TABLE messages ADD COLUMN delivery_seconds double precision")
    op.execute("""
        UPDATE messages SET delivery_seconds = greatest(0, extract(epoch FROM final_at - sent_at))
        WHERE status = 'DELIVRD' AND final_at IS NOT NULL
    """)
    op.execute("DROP INDEX messages_campaign_stats")
    op.execute(
        "CREATE INDEX messages_campaign_stats ON messages (campaign, status) INCLUDE (delivery_seconds) "
        "WHERE campaign IS NOT NULL"
    )
    op.execute("""
        CREATE TABLE sender_events (
            source      text        NOT NULL,
            event_id    text        NOT NULL,
            message_id  text        NOT NULL,
            received_at timestamptz NOT NULL,
            PRIMARY KEY (source, event_id)
        )
    """)
    op.execute("""
        INSERT INTO sender_events (source, event_id, message_id, received_at)
        SELECT DISTINCT ON (source, event_id) source, event_id, message_id, received_at
        FROM history WHERE event_id IS NOT NULL
        ORDER BY source, event_id, received_at
    """)
    op.execute("DROP INDEX history_event")


def downgrade() -> None:
    op.execute("""
        CREATE UNIQUE INDEX history_event ON history (message_id, source, event_id)
        WHERE event_id IS NOT NULL
    """)
    op.execute("DROP TABLE sender_events")
    op.execute("DROP INDEX messages_campaign_stats")
    op.execute(
        "CREATE INDEX messages_campaign_stats ON messages (campaign, status) INCLUDE (sent_at, final_at) "
        "WHERE campaign IS NOT NULL"
    )
    op.execute("ALTER TABLE messages DROP COLUMN delivery_seconds")
    op.execute("ALTER TABLE messages DROP COLUMN text")
    op.execute("ALTER TABLE messages DROP COLUMN version")
