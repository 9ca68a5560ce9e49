"""A sender's own ordering of its callbacks (Plivo's `Sequence`), kept with each history event.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE history ADD COLUMN sequence bigint")


def downgrade() -> None:
    op.execute("ALTER TABLE history DROP COLUMN sequence")
