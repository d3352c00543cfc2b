"""customer lookup: company_key and account_id indexes, for the gateway's customer view

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 05:10:00
"""
from alembic import op
import sqlalchemy as sa

from services.leads.dedupe import keys_for

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    op.add_column('leads', sa.Column('company_key', sa.String(length=200), nullable=True))
    leads = sa.table('leads', sa.column('id', sa.Uuid), sa.column('company', sa.String),
                     sa.column('company_key', sa.String))
    conn = op.get_bind()
    # Backfill in id order, a batch at a time, so a large table never sits in memory at once.
    last = None
    while True:
        stmt = sa.select(leads.c.id, leads.c.company).where(leads.c.company.is_not(None)).order_by(leads.c.id)
        if last is not None:
            stmt = stmt.where(leads.c.id > last)
        rows = conn.execute(stmt.limit(_BATCH)).all()
        if not rows:
            break
        conn.execute(leads.update().where(leads.c.id == sa.bindparam('b_id')).values(company_key=sa.bindparam('b_key')),
                     [{'b_id': r.id, 'b_key': keys_for({'company': r.company})['company_key']} for r in rows])
        last = rows[-1].id
    op.create_index('ix_leads_company_key', 'leads', ['company_key'])
    op.create_index('ix_leads_account_id', 'leads', ['account_id'])


def downgrade() -> None:
    op.drop_index('ix_leads_account_id', table_name='leads')
    op.drop_index('ix_leads_company_key', table_name='leads')
    op.drop_column('leads', 'company_key')
