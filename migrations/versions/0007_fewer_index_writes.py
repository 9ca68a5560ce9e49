"""Fewer index entries written per report; batches written without locking first.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

A report wrote seven index entries on average (pg_waldump, `python -m bench.write_path --wal-records`): the
largest share of its WAL and of PostgreSQL's time. Three of them bought nothing a smaller index does not:

- `messages_id_without_zeros` indexed every id by `ltrim(id, '0')`, for the few SMPP receipts whose ids are
  padded differently from the registered one. An id without leading zeros is its own trimmed form and is
  found by the primary key; only ids that start with a zero need the trimmed index.
- `messages_campaign` (the list's order within a campaign) and `messages_campaign_stats` (counts and
  delivery times by status) were two indexes on the same campaign's rows: one index ordered for the list,
  carrying status and delivery time for the statistics' index-only scan, serves both.
- `events_at` ordered the feed by time for pruning only. The feed's own order (tx, position) follows time
  closely: pruning deletes from its start while the events there are old enough, and the oldest event's age
  is the first one's.

`messages_changed_meanwhile` lets a batch be written without locking its messages first: the write-back
updates a message only if its row version (`xmin`) is still the one the batch read, and this function fails
the whole statement (serialization_failure: nothing of it stays) when some message was changed by another
transaction in between, so the batch is decided again on what is there now.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX messages_id_without_zeros")
    op.execute("CREATE INDEX messages_id_without_zeros ON messages (ltrim(id, '0')) WHERE id LIKE '0%'")
    op.execute("DROP INDEX messages_campaign_stats")
    op.execute("DROP INDEX messages_campaign")
    op.execute(
        "CREATE INDEX messages_campaign ON messages (campaign, sent_at, id) INCLUDE (status, delivery_seconds) "
        "WHERE campaign IS NOT NULL"
    )
    op.execute("DROP INDEX events_at")
    op.execute("""
        CREATE FUNCTION messages_changed_meanwhile(updated bigint, expected bigint) RETURNS bigint
        LANGUAGE plpgsql AS $$
        BEGIN
            IF updated <> expected THEN
                RAISE EXCEPTION 'a message was changed by another transaction since it was read'
                    USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN updated;
        END
        $$
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION messages_changed_meanwhile(bigint, bigint)")
    op.execute("CREATE INDEX events_at ON events (at)")
    op.execute("DROP INDEX messages_campaign")
    op.execute("CREATE INDEX messages_campaign ON messages (campaign, sent_at, id) WHERE campaign IS NOT NULL")
    op.execute(
        "CREATE INDEX messages_campaign_stats ON messages (campaign, status) INCLUDE (delivery_seconds) "
        "WHERE campaign IS NOT NULL"
    )
    op.execute("DROP INDEX messages_id_without_zeros")
    op.execute("CREATE INDEX messages_id_without_zeros ON messages (ltrim(id, '0'))")
