"""failed sign-ins per address and name, counted in the database (the edge took the other limits)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sign_in_failures',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_started_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_sign_in_failures'))
    )
    op.create_index(op.f('ix_sign_in_failures_window_started_at'), 'sign_in_failures', ['window_started_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sign_in_failures_window_started_at'), table_name='sign_in_failures')
    op.drop_table('sign_in_failures')
