"""completed handovers, remembered so that what arrives later for a leaver goes to the successor

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('completed_handovers',
    sa.Column('handover_id', sa.String(length=64), nullable=False),
    sa.Column('from_user_id', sa.String(length=64), nullable=False),
    sa.Column('to_user_id', sa.String(length=64), nullable=False),
    sa.Column('completed_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('handover_id', name=op.f('pk_completed_handovers'))
    )
    with op.batch_alter_table('completed_handovers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_completed_handovers_from_user_id'), ['from_user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('completed_handovers')
