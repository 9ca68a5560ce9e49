"""Find a message by its id without leading zeros.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

SMPP receipts carry the SMSC's id padded or not (`id:0000000012345678` for a message registered as
`12345678`, or the other way round); a registered id must match either way.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX messages_id_without_zeros ON messages (ltrim(id, '0'))")


def downgrade() -> None:
    op.execute("DROP INDEX messages_id_without_zeros")
