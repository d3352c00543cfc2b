"""duplicate claims, money-blind scores, conversion refusals, token versions in the directory replica

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lead_duplicate_claims',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('lead_id', sa.Uuid(), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=False),
    sa.Column('claimed_role', sa.String(length=20), nullable=True),
    sa.Column('via', sa.String(length=20), nullable=False),
    sa.Column('brought', sa.JSON(), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_lead_duplicate_claims_lead_id_leads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_duplicate_claims'))
    )
    with op.batch_alter_table('lead_duplicate_claims', schema=None) as batch_op:
        batch_op.create_index('ix_lead_duplicate_claims_lead', ['lead_id', 'created_at'], unique=False)
    with op.batch_alter_table('leads', schema=None) as batch_op:
        # Existing reasons do not name their field, so their public score starts at 0 (see
        # scoring.public_reasons) until the lead is next scored.
        batch_op.add_column(sa.Column('score_public', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('conversion_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('converted_from_status', sa.String(length=20), nullable=True))
    with op.batch_alter_table('lead_imports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.drop_column('token_version')
    with op.batch_alter_table('lead_imports', schema=None) as batch_op:
        batch_op.drop_column('claimed')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_column('converted_from_status')
        batch_op.drop_column('conversion_error')
        batch_op.drop_column('score_public')
    op.drop_table('lead_duplicate_claims')
