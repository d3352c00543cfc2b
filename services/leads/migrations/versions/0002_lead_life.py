"""lead life: dedupe keys, activities, rules, directory, imports

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 03:19:33.923328
"""
from alembic import op
import sqlalchemy as sa
import crmkit.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assignment_cursors',
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('last_user_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_assignment_cursors'))
    )
    op.create_table('directory_teams',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('manager_id', sa.String(length=64), nullable=True),
    sa.Column('parent_team_id', sa.String(length=64), nullable=True),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directory_teams'))
    )
    op.create_table('directory_users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=100), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directory_users'))
    )
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directory_users_team_id'), ['team_id'], unique=False)

    op.create_table('lead_imports',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('filename', sa.String(length=300), nullable=True),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('requested_role', sa.String(length=20), nullable=False),
    sa.Column('requested_team', sa.String(length=64), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('merged', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('failure', sa.Text(), nullable=True),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_imports'))
    )
    op.create_table('rule_documents',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=True),
    sa.Column('updated_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rule_documents'))
    )
    op.create_table('lead_activities',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('lead_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('occurred_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.Column('next_contact_at', crmkit.db.UTCDateTime(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', crmkit.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_lead_activities_lead_id_leads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_activities'))
    )
    with op.batch_alter_table('lead_activities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_activities_lead_id'), ['lead_id'], unique=False)

    op.create_table('lead_import_errors',
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['lead_imports.id'], name=op.f('fk_lead_import_errors_job_id_lead_imports')),
    sa.PrimaryKeyConstraint('job_id', 'row', name=op.f('pk_lead_import_errors'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('phone_key', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('company_contact_key', sa.String(length=420), nullable=True))
        batch_op.add_column(sa.Column('activities', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('assigned_by_rule', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', crmkit.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('converted_at', crmkit.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('account_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('contact_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('opportunity_id', sa.Uuid(), nullable=True))
        batch_op.create_index('ix_leads_company_contact_key', ['company_contact_key'], unique=False)
        batch_op.create_index('ix_leads_email_key', ['email_key'], unique=False)
        batch_op.create_index('ix_leads_owner_status', ['owner_id', 'status'], unique=False)
        batch_op.create_index('ix_leads_phone_key', ['phone_key'], unique=False)

    _backfill_dedupe_keys()


def _backfill_dedupe_keys() -> None:
    """Leads written before this revision get their dedupe keys, in batches."""
    from services.leads.dedupe import keys_for

    bind = op.get_bind()
    leads = sa.table("leads", sa.column("id", sa.Uuid()), sa.column("company"), sa.column("contact_name"),
                     sa.column("email"), sa.column("phone"), sa.column("email_key"), sa.column("phone_key"),
                     sa.column("company_contact_key"))
    rows = bind.execute(sa.select(leads.c.id, leads.c.company, leads.c.contact_name, leads.c.email, leads.c.phone)
                        ).mappings().all()
    for start in range(0, len(rows), 1000):
        batch = [{"lead_id": r["id"], **keys_for(dict(r))} for r in rows[start:start + 1000]]
        if batch:
            bind.execute(leads.update().where(leads.c.id == sa.bindparam("lead_id")).values(
                email_key=sa.bindparam("email_key"), phone_key=sa.bindparam("phone_key"),
                company_contact_key=sa.bindparam("company_contact_key")), batch)



def downgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_index('ix_leads_phone_key')
        batch_op.drop_index('ix_leads_owner_status')
        batch_op.drop_index('ix_leads_email_key')
        batch_op.drop_index('ix_leads_company_contact_key')
        batch_op.drop_column('opportunity_id')
        batch_op.drop_column('contact_id')
        batch_op.drop_column('account_id')
        batch_op.drop_column('converted_at')
        batch_op.drop_column('assigned_at')
        batch_op.drop_column('assigned_by_rule')
        batch_op.drop_column('activities')
        batch_op.drop_column('company_contact_key')
        batch_op.drop_column('phone_key')
        batch_op.drop_column('email_key')

    op.drop_table('lead_import_errors')
    with op.batch_alter_table('lead_activities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_activities_lead_id'))

    op.drop_table('lead_activities')
    op.drop_table('rule_documents')
    op.drop_table('lead_imports')
    with op.batch_alter_table('directory_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directory_users_team_id'))

    op.drop_table('directory_users')
    op.drop_table('directory_teams')
    op.drop_table('assignment_cursors')
