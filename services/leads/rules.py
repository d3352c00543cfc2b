"""The scoring and assignment rule documents (admin- and marketing-editable, versioned) and scoring a
lead by them."""
from __future__ import annotations

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.settings import Settings

from . import domain, scoring
from .batch import batch
from .db import (
    MONEY_BLIND_ROLES,
    Lead,
    RuleDocument,
)
from .events import leads_event

SCORING, ASSIGNMENT = "scoring", "assignment"


DEFAULT_RULES = {SCORING: scoring.DEFAULT_RULES, ASSIGNMENT: []}


# Reads of rules and of the directory replica never flush: a flush in the middle of a change would
# write the lead twice and bump its version twice for one request.
def rules(uow: UnitOfWork, name: str) -> list[dict]:
    known = batch(uow).rules
    if name not in known:
        with uow.session.no_autoflush:
            doc = uow.session.get(RuleDocument, name)
        known[name] = doc.body["rules"] if doc else DEFAULT_RULES[name]
    return known[name]


def get_rule_document(uow: UnitOfWork, name: str) -> dict:
    doc = uow.session.get(RuleDocument, name)
    return {"rules": doc.body["rules"] if doc else DEFAULT_RULES[name], "version": doc.version if doc else 0}


def put_rule_document(uow: UnitOfWork, settings: Settings, principal: Principal, name: str, body: dict,
                      check_version) -> dict:
    doc = uow.session.get(RuleDocument, name, with_for_update=True)
    check_version(doc.version if doc else 0)
    if name == SCORING and principal.role in MONEY_BLIND_ROLES:
        # A rule on a field one may not read is a question about it, answered by every score.
        current = doc.body["rules"] if doc else DEFAULT_RULES[SCORING]
        domain.check_money_rules_kept(current, body["rules"])
    if doc is None:
        doc = RuleDocument(name=name, body=body, version=1, updated_by=principal.user_id, updated_at=utcnow())
        uow.session.add(doc)
    else:
        doc.body, doc.updated_by, doc.updated_at = body, principal.user_id, utcnow()
    uow.session.flush()
    uow.publish(*leads_event(settings, f"{name}_rules.updated", f"rules:{name}",
                             {"rules": body["rules"], "version": doc.version}, actor=principal.user_id))
    return {"rules": body["rules"], "version": doc.version}


def rescore(uow: UnitOfWork, lead: Lead) -> None:
    facts = {f: getattr(lead, f, None) for f in scoring.SCORABLE_FIELDS}
    lead.score, lead.score_reasons = scoring.score(facts, rules(uow, SCORING))
    lead.score_public = scoring.public_score(lead.score_reasons)
