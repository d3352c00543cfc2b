"""Approvals HTTP API: the policy document, the caller's queue, one request, a decision."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, require_if_match
from crmkit.web import Blueprint, ctx, principal, roles

from . import approvals, documents
from .approval_schemas import (
    ApprovalListArgsSchema,
    ApprovalPageSchema,
    ApprovalSchema,
    DecisionSchema,
    PolicySchema,
    PolicyStateSchema,
)

approvals_blp = Blueprint("approvals", __name__, description="Approval policies, requests and decisions")
SELLERS = ("rep", "manager", "executive", "admin")
LEADERS = ("manager", "executive", "admin")


@approvals_blp.route("/approval-policies", methods=["GET"])
@approvals_blp.response(200, PolicyStateSchema)
@roles(*LEADERS)
def get_policy():
    """The approval policy: rules on discount, total, terms, delivery and margin, limits, escalation."""
    with ctx().db.uow(readonly=True) as uow:
        return documents.response(approvals.policy(uow))


@approvals_blp.route("/approval-policies", methods=["PUT"])
@approvals_blp.arguments(PolicySchema)
@approvals_blp.response(200, PolicyStateSchema)
@approvals_blp.doc(parameters=[IF_MATCH])
@roles("admin")
def put_policy(document):
    """Replace the approval policy (admin); requests already open keep the chain they were given.

    Needs If-Match with the ETag you last read. Rule keys are unique (422).
    """
    with ctx().db.uow() as uow:
        row = approvals.put_policy(uow, principal(), document, require_if_match)
        uow.commit()
        return documents.response(row)


@approvals_blp.route("/approvals", methods=["GET"])
@approvals_blp.arguments(ApprovalListArgsSchema, location="query", unknown=RAISE)
@approvals_blp.response(200, ApprovalPageSchema)
@roles(*SELLERS)
def list_approvals(args):
    """?status=pending: your queue, oldest first; otherwise the approvals of orders you may see."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = approvals.list_approvals(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@approvals_blp.route("/approvals/<uuid:approval_id>", methods=["GET"])
@approvals_blp.response(200, ApprovalSchema)
@roles(*SELLERS)
def get_approval(approval_id: uuid.UUID):
    """Read one approval request: the rules tripped, the chain and its decisions."""
    with ctx().db.uow(readonly=True) as uow:
        return approvals.get_approval(uow, principal(), approval_id)


@approvals_blp.route("/approvals/<uuid:approval_id>/decision", methods=["POST"])
@approvals_blp.arguments(DecisionSchema)
@approvals_blp.response(200, ApprovalSchema)
@roles(*LEADERS)
def decide(body, approval_id: uuid.UUID):
    """Approve or reject the step waiting for you, with a comment (required to reject); final.

    A rejection without a comment is 422 ("say why you reject it"); nobody decides their own order
    or another approver's step (403), and a request no longer pending takes no decision (409).
    """
    with ctx().db.uow() as uow:
        approval = approvals.decide(uow, ctx().settings, principal(), approval_id, body["decision"],
                                    body.get("comment"))
        uow.commit()
        return approval
