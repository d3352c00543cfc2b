"""visit plans, daily reports and what a rep's day holds

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:46.602321
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('attainment_snapshots',
    sa.Column('subject_type', sa.String(length=10), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=20), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('target', sa.Numeric(precision=16, scale=2), nullable=False),
    sa.Column('actual', sa.Numeric(precision=16, scale=2), nullable=False),
    sa.Column('attainment', sa.Numeric(precision=14, scale=1), nullable=False),
    sa.Column('by_team', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('subject_type', 'subject_id', 'metric', 'period', 'day', name=op.f('pk_attainment_snapshots'))
    )
    with op.batch_alter_table('attainment_snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_attainment_snapshots_type_day', ['subject_type', 'day'], unique=False)

    op.create_table('daily_reports',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('market', sa.JSON(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('submitted_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('reviewed_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('reviewed_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daily_reports'))
    )
    with op.batch_alter_table('daily_reports', schema=None) as batch_op:
        batch_op.create_index('ix_daily_reports_day', ['day'], unique=False)
        batch_op.create_index('ix_daily_reports_team_day', ['team_id', 'day'], unique=False)
        batch_op.create_index('ux_daily_reports_owner_day', ['owner_id', 'day'], unique=True)

    op.create_table('known_leads',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('company', sa.String(length=200), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_known_leads'))
    )
    with op.batch_alter_table('known_leads', schema=None) as batch_op:
        batch_op.create_index('ix_known_leads_owner_created', ['owner_id', 'created_at'], unique=False)
        batch_op.create_index('ix_known_leads_team_created', ['team_id', 'created_at'], unique=False)

    op.create_table('lead_activities',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('lead_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('logged_by', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_activities'))
    )
    with op.batch_alter_table('lead_activities', schema=None) as batch_op:
        batch_op.create_index('ix_lead_activities_by_occurred', ['logged_by', 'occurred_at'], unique=False)

    op.create_table('order_facts',
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('total', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('confirmed_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('cancelled_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_order_facts'))
    )
    with op.batch_alter_table('order_facts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_facts_account_id'), ['account_id'], unique=False)
        batch_op.create_index('ix_order_facts_owner_account', ['owner_id', 'account_id', 'confirmed_at'], unique=False)
        batch_op.create_index('ix_order_facts_owner_confirmed', ['owner_id', 'confirmed_at'], unique=False)
        batch_op.create_index('ix_order_facts_team_confirmed', ['team_id', 'confirmed_at'], unique=False)

    op.create_table('payment_facts',
    sa.Column('payment_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('paid_on', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('payment_id', name=op.f('pk_payment_facts'))
    )
    with op.batch_alter_table('payment_facts', schema=None) as batch_op:
        batch_op.create_index('ix_payment_facts_owner_paid', ['owner_id', 'paid_on'], unique=False)
        batch_op.create_index('ix_payment_facts_team_paid', ['team_id', 'paid_on'], unique=False)

    op.create_table('pipeline_changes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('opportunity_id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('delta', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('changed_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_changes'))
    )
    with op.batch_alter_table('pipeline_changes', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_changes_owner_changed', ['owner_id', 'changed_at'], unique=False)
        batch_op.create_index('ix_pipeline_changes_team_changed', ['team_id', 'changed_at'], unique=False)

    op.create_table('pipeline_positions',
    sa.Column('opportunity_id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.PrimaryKeyConstraint('opportunity_id', name=op.f('pk_pipeline_positions'))
    )
    op.create_table('stage_moves',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('opportunity_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('from_stage', sa.String(length=40), nullable=False),
    sa.Column('to_stage', sa.String(length=40), nullable=False),
    sa.Column('moved_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_moves'))
    )
    with op.batch_alter_table('stage_moves', schema=None) as batch_op:
        batch_op.create_index('ix_stage_moves_owner_account', ['owner_id', 'account_id', 'moved_at'], unique=False)
        batch_op.create_index('ix_stage_moves_owner_moved', ['owner_id', 'moved_at'], unique=False)
        batch_op.create_index('ix_stage_moves_team_moved', ['team_id', 'moved_at'], unique=False)

    op.create_table('daily_report_comments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('report_id', sa.Uuid(), nullable=False),
    sa.Column('author_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['report_id'], ['daily_reports.id'], name=op.f('fk_daily_report_comments_report_id_daily_reports')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daily_report_comments'))
    )
    with op.batch_alter_table('daily_report_comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_daily_report_comments_report_id'), ['report_id'], unique=False)

    op.create_table('market_notes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('report_id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('competitor', sa.String(length=200), nullable=True),
    sa.Column('competitor_key', sa.String(length=200), nullable=True),
    sa.Column('product_category', sa.String(length=100), nullable=True),
    sa.Column('account_id', sa.Uuid(), nullable=True),
    sa.Column('region', sa.String(length=100), nullable=True),
    sa.Column('price_heard', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['report_id'], ['daily_reports.id'], name=op.f('fk_market_notes_report_id_daily_reports')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_market_notes'))
    )
    with op.batch_alter_table('market_notes', schema=None) as batch_op:
        batch_op.create_index('ix_market_notes_category_day', ['product_category', 'day'], unique=False)
        batch_op.create_index('ix_market_notes_competitor_day', ['competitor_key', 'day'], unique=False)
        batch_op.create_index('ix_market_notes_created', ['created_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_market_notes_report_id'), ['report_id'], unique=False)

    op.create_table('visits',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('account_id', sa.Uuid(), nullable=True),
    sa.Column('lead_id', sa.Uuid(), nullable=True),
    sa.Column('contact_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('planned_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('checked_in_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('latitude', sa.Float(), nullable=True),
    sa.Column('longitude', sa.Float(), nullable=True),
    sa.Column('address', sa.String(length=500), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('next_contact_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('activity_id', sa.Uuid(), nullable=True),
    sa.Column('followed_after', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('rescheduled_to', sa.Uuid(), nullable=True),
    sa.Column('rescheduled_from', sa.Uuid(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_visits_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visits'))
    )
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.create_index('ix_visits_account', ['account_id'], unique=False)
        batch_op.create_index('ix_visits_day_status', ['day', 'status'], unique=False)
        batch_op.create_index('ix_visits_owner_account_checked_in', ['owner_id', 'account_id', 'checked_in_at'], unique=False)
        batch_op.create_index('ix_visits_owner_day', ['owner_id', 'day', 'planned_at'], unique=False)
        batch_op.create_index('ix_visits_team_day', ['team_id', 'day'], unique=False)

    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.create_index('ix_activities_creator_occurred', ['created_by', 'occurred_at'], unique=False)



    # What each open deal adds to its owner's pipeline now: the ledger starts from here, so the first
    # change of a deal that predates it is written as that change, not as the whole amount.
    op.execute("INSERT INTO pipeline_positions (opportunity_id, owner_id, team_id, amount) "
               "SELECT id, owner_id, team_id, amount FROM opportunities WHERE status = 'open' AND deleted_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.drop_index('ix_activities_creator_occurred')

    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.drop_index('ix_visits_team_day')
        batch_op.drop_index('ix_visits_owner_day')
        batch_op.drop_index('ix_visits_owner_account_checked_in')
        batch_op.drop_index('ix_visits_day_status')
        batch_op.drop_index('ix_visits_account')

    op.drop_table('visits')
    with op.batch_alter_table('market_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_market_notes_report_id'))
        batch_op.drop_index('ix_market_notes_created')
        batch_op.drop_index('ix_market_notes_competitor_day')
        batch_op.drop_index('ix_market_notes_category_day')

    op.drop_table('market_notes')
    with op.batch_alter_table('daily_report_comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_daily_report_comments_report_id'))

    op.drop_table('daily_report_comments')
    with op.batch_alter_table('stage_moves', schema=None) as batch_op:
        batch_op.drop_index('ix_stage_moves_team_moved')
        batch_op.drop_index('ix_stage_moves_owner_moved')
        batch_op.drop_index('ix_stage_moves_owner_account')

    op.drop_table('stage_moves')
    op.drop_table('pipeline_positions')
    with op.batch_alter_table('pipeline_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_changes_team_changed')
        batch_op.drop_index('ix_pipeline_changes_owner_changed')

    op.drop_table('pipeline_changes')
    with op.batch_alter_table('payment_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_facts_team_paid')
        batch_op.drop_index('ix_payment_facts_owner_paid')

    op.drop_table('payment_facts')
    with op.batch_alter_table('order_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_order_facts_team_confirmed')
        batch_op.drop_index('ix_order_facts_owner_confirmed')
        batch_op.drop_index('ix_order_facts_owner_account')
        batch_op.drop_index(batch_op.f('ix_order_facts_account_id'))

    op.drop_table('order_facts')
    with op.batch_alter_table('lead_activities', schema=None) as batch_op:
        batch_op.drop_index('ix_lead_activities_by_occurred')

    op.drop_table('lead_activities')
    with op.batch_alter_table('known_leads', schema=None) as batch_op:
        batch_op.drop_index('ix_known_leads_team_created')
        batch_op.drop_index('ix_known_leads_owner_created')

    op.drop_table('known_leads')
    with op.batch_alter_table('daily_reports', schema=None) as batch_op:
        batch_op.drop_index('ux_daily_reports_owner_day')
        batch_op.drop_index('ix_daily_reports_team_day')
        batch_op.drop_index('ix_daily_reports_day')

    op.drop_table('daily_reports')
    with op.batch_alter_table('attainment_snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_attainment_snapshots_type_day')

    op.drop_table('attainment_snapshots')
