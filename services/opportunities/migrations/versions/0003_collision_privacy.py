"""collision dismissals, the re-detection queue, token versions in the directory replica

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('opportunity_collision_dismissals',
    sa.Column('opportunity_id', sa.Uuid(), nullable=False),
    sa.Column('other_id', sa.Uuid(), nullable=False),
    sa.Column('dismissed_by', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('dismissed_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('opportunity_id', 'other_id', name=op.f('pk_opportunity_collision_dismissals'))
    )
    op.create_table('opportunity_collision_rechecks',
    sa.Column('opportunity_id', sa.Uuid(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('queued_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('opportunity_id', name=op.f('pk_opportunity_collision_rechecks'))
    )
    with op.batch_alter_table('opportunity_collision_rechecks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_opportunity_collision_rechecks_queued_at'), ['queued_at'], unique=False)
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.drop_column('token_version')
    op.drop_table('opportunity_collision_rechecks')
    op.drop_table('opportunity_collision_dismissals')
