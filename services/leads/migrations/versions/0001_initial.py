"""leads, outbox, processed events, idempotency keys

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 02:38:29.914255
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('principal', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('response_headers', sa.Text(), nullable=True),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('leads',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('company', sa.String(length=200), nullable=True),
    sa.Column('contact_name', sa.String(length=200), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=50), nullable=True),
    sa.Column('region', sa.String(length=100), nullable=True),
    sa.Column('industry', sa.String(length=100), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('campaign', sa.String(length=200), nullable=True),
    sa.Column('interest', sa.Text(), nullable=True),
    sa.Column('quoted_price', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('estimated_value', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('score_reasons', sa.JSON(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('follow_up_due_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('last_activity_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('touches', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index('ix_leads_created', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_leads_external_id', ['external_id'], unique=False)
        batch_op.create_index('ix_leads_owner_created', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_leads_status', ['status'], unique=False)
        batch_op.create_index('ix_leads_team_created', ['team_id', 'created_at', 'id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('message_key', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('published_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['id'], unique=False, sqlite_where=sa.text('published_at IS NULL'), postgresql_where=sa.text('published_at IS NULL'))
        batch_op.create_index('ix_outbox_published_at', ['published_at'], unique=False)

    op.create_table('processed_events',
    sa.Column('consumer', sa.String(length=100), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('processed_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id', name=op.f('pk_processed_events'))
    )
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.create_index('ix_processed_events_processed_at', ['processed_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.drop_index('ix_processed_events_processed_at')

    op.drop_table('processed_events')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_published_at')
        batch_op.drop_index('ix_outbox_pending', sqlite_where=sa.text('published_at IS NULL'), postgresql_where=sa.text('published_at IS NULL'))

    op.drop_table('outbox')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_index('ix_leads_team_created')
        batch_op.drop_index('ix_leads_status')
        batch_op.drop_index('ix_leads_owner_created')
        batch_op.drop_index('ix_leads_external_id')
        batch_op.drop_index('ix_leads_created')

    op.drop_table('leads')
    op.drop_table('idempotency_keys')
