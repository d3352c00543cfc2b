"""The pipeline's stages: one versioned document (admin-editable) that every deal moves through, with
its probabilities and checklists."""
from __future__ import annotations

from sqlalchemy import func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict
from crmkit.settings import Settings

from . import domain
from .batch import batch
from .db import (
    Opportunity,
    PipelineDocument,
)
from .events import event

PIPELINE = "pipeline"


def stages(uow: UnitOfWork) -> list[dict]:
    """The pipeline's stages, read once per transaction."""
    known = batch(uow)
    if known.stages is None:
        with uow.session.no_autoflush:
            doc = uow.session.get(PipelineDocument, PIPELINE)
        known.stages = doc.body["stages"] if doc else domain.DEFAULT_STAGES
    return known.stages


def get_stages(uow: UnitOfWork) -> dict:
    doc = uow.session.get(PipelineDocument, PIPELINE)
    return {"stages": doc.body["stages"] if doc else domain.DEFAULT_STAGES, "version": doc.version if doc else 0}


def put_stages(uow: UnitOfWork, settings: Settings, principal: Principal, body: dict, check_version) -> dict:
    domain.validate_stages(body["stages"])
    doc = uow.session.get(PipelineDocument, PIPELINE, with_for_update=True)
    check_version(doc.version if doc else 0)
    kept = {s["key"] for s in body["stages"]}
    stranded = uow.session.execute(select(Opportunity.stage, func.count()).where(
        Opportunity.status == "open", Opportunity.deleted_at.is_(None), Opportunity.stage.not_in(kept))
        .group_by(Opportunity.stage)).all()
    if stranded:
        raise Conflict("open opportunities are in stages this document removes; move them first",
                       errors={"stages": [f"{stage}: {n} open" for stage, n in stranded]})
    if doc is None:
        doc = PipelineDocument(name=PIPELINE, body=body, version=1, updated_by=principal.user_id, updated_at=utcnow())
        uow.session.add(doc)
    else:
        doc.body, doc.updated_by, doc.updated_at = body, principal.user_id, utcnow()
    uow.session.flush()
    uow.publish(*event(settings, "pipeline.updated", PIPELINE, {"stages": body["stages"], "version": doc.version},
                       actor=principal.user_id))
    return {"stages": body["stages"], "version": doc.version}
