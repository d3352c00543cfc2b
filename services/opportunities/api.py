"""Opportunities HTTP API: the app, with its route modules (account_api, deal_api, report_api, visit_api)."""
from __future__ import annotations

from crmkit.web import create_service_app

from .account_api import accounts_blp
from .bootstrap import context
from .deal_api import deals_blp
from .report_api import report_blp
from .visit_api import visits_blp


def create_app():
    return create_service_app(context=context(), title="CRM opportunities service",
                              blueprints=[accounts_blp, deals_blp, report_blp, visits_blp])
