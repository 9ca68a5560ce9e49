"""Tasks: mass operations run in the background by any replica, and the output of exports.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

A task is claimed by one runner at a time: the claim sets `claim` (a token of that claim) and `lease_until`;
every batch locks the task row, checks the token and renews the lease in the transaction that applies the
batch's effect and moves `position`. A runner that dies stops renewing, and once its lease lapses another
runner claims the task and resumes from `position`: whatever the dead runner committed is behind it, whatever
it had not committed never happened. A runner that only stalled finds its token replaced at its next batch
and stops before applying anything.

An export's output is kept in `task_output`, one row per batch (a chunk of CSV or NDJSON bytes), rather than
in a file: any replica may run the task and any replica may be asked for the result, and a table is the one
storage they all share. Chunks are written and read one at a time, so neither side holds more than one batch
in memory whatever the campaign's size.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE tasks (
            id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind         text        NOT NULL CHECK (kind IN ('export', 'close', 'replay')),
            params       jsonb       NOT NULL,
            state        text        NOT NULL DEFAULT 'queued'
                                     CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            done         bigint      NOT NULL DEFAULT 0,
            total        bigint,
            position     jsonb,
            result       jsonb,
            error        text,
            claim        uuid,
            lease_until  timestamptz,
            attempts     integer     NOT NULL DEFAULT 0,
            created_at   timestamptz NOT NULL DEFAULT now(),
            started_at   timestamptz,
            finished_at  timestamptz
        )
    """)
    # What a runner looks for: queued tasks and running ones whose lease may have lapsed, oldest first.
    op.execute("CREATE INDEX tasks_open ON tasks (id) WHERE state IN ('queued', 'running')")
    op.execute("""
        CREATE TABLE task_output (
            task_id  bigint  NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            chunk    integer NOT NULL,
            data     bytea   NOT NULL,
            PRIMARY KEY (task_id, chunk)
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE task_output")
    op.execute("DROP TABLE tasks")
