"""CSV lead import: the upload becomes a job; the worker works through it in chunks.

Each chunk's leads, its rejected rows and the job's progress (`rows_done`) commit in one
transaction, so a worker killed mid-import resumes exactly where the last chunk ended: nothing is
imported twice and nothing half. Rows go through the same intake as every other lead (dedupe,
scoring, assignment), as the importer: a row whose prospect is a lead the importer may not change
becomes a duplicate claim on it (counted in `claimed`), never a merge into it.

The file is read as a stream, never parsed whole: memory stays at the file's bytes plus one chunk,
whatever the number of rows, and a file over the row cap (LEADS_IMPORT_MAX_ROWS, 200,000) is
refused at upload.
"""
from __future__ import annotations

import csv
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Iterator

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crmkit import csvfile
from crmkit.auth import Principal
from crmkit.csvfile import encoding_of, header_key
from crmkit.db import Database, utcnow
from crmkit.errors import NotFound, ValidationFailed
from crmkit.settings import Settings

from . import domain
from .db import LeadImport, LeadImportError
from .events import leads_event
from .intake import intake, prefetch_duplicates
from .people import importer_active, replica_principal, successor_now
from .schemas import ImportRowSchema

log = logging.getLogger(__name__)
CHUNK_ROWS = 1000
ERRORS_SHOWN = 1000

# Header → field. Matching ignores case, spaces, underscores and hyphens.
_HEADERS = {
    "company": ["company", "companyname", "公司", "公司名称", "企业", "企业名称", "单位"],
    "contact_name": ["contactname", "contact", "name", "联系人", "姓名", "联系人姓名"],
    "phone": ["phone", "tel", "telephone", "mobile", "电话", "手机", "联系电话", "手机号"],
    "email": ["email", "mail", "emailaddress", "邮箱", "电子邮箱", "邮件"],
    "region": ["region", "area", "地区", "区域", "省份"],
    "industry": ["industry", "行业"],
    "source": ["source", "来源", "线索来源"],
    "interest": ["interest", "兴趣", "意向", "需求", "意向产品"],
    "quoted_price": ["quotedprice", "quote", "price", "报价"],
    "estimated_value": ["estimatedvalue", "value", "预计金额", "预估金额", "金额"],
    "campaign": ["campaign", "活动", "市场活动"],
    "external_id": ["externalid", "外部编号"],
}
_HEADER_LOOKUP = {alias: field for field, aliases in _HEADERS.items() for alias in aliases}
# Sources as people write them in Chinese spreadsheets.
_SOURCES_ZH = {"网站": "web", "官网": "web", "电话": "phone", "推荐": "referral", "转介绍": "referral",
               "展会": "event", "活动": "event", "会议": "event", "市场": "marketing", "营销": "marketing",
               "导入": "import", "其他": "other"}
_row_schema = ImportRowSchema()


def max_rows() -> int:
    return int(os.environ.get("LEADS_IMPORT_MAX_ROWS", "200000"))


def header_of(content: bytes, encoding: str) -> dict[int, str]:
    """Column index → field, for the columns we know; 422 when none is known."""
    try:
        header = next(csvfile.reader(content, encoding), None)
    except csv.Error as exc:
        raise ValidationFailed(f"not a CSV file: {exc}", errors={"file": [str(exc)]}) from None
    mapping = {i: _HEADER_LOOKUP[header_key(h)] for i, h in enumerate(header or []) if header_key(h) in _HEADER_LOOKUP}
    if "company" not in mapping.values() and "contact_name" not in mapping.values():
        raise ValidationFailed("the header names no company or contact column",
                               errors={"file": [f"known headers: {sorted(_HEADERS)} or their Chinese names"]})
    return mapping


def rows_of(content: bytes, encoding: str, mapping: dict[int, str]) -> Iterator[tuple[int, dict]]:
    """(line number, raw fields) of each data row, one at a time."""
    reader = csvfile.reader(content, encoding)
    next(reader)
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank lines are not rows anyone meant
            raw: dict[str, str] = {}
            for i, value in enumerate(values):
                # Two headers may name one field (电话 and 手机): the first non-empty value wins.
                if i in mapping and value.strip() and mapping[i] not in raw:
                    raw[mapping[i]] = value.strip()
            yield reader.line_num, raw
    except csv.Error as exc:  # e.g. a cell over the csv module's 128 KiB limit, a stray CR
        raise ValidationFailed(f"line {reader.line_num}: {exc}") from None


def count_rows(content: bytes, encoding: str, mapping: dict[int, str], cap: int) -> int:
    """The number of data rows; 422 past the cap (reading no further than cap + 1 rows). Counted by
    the csv reader itself: it ends rows on a bare CR too, so counting newline bytes would not do."""
    counted = sum(1 for _ in itertools.islice(rows_of(content, encoding, mapping), cap + 1))
    if counted > cap:
        raise ValidationFailed(f"the file has more than {cap} rows; split it into several imports",
                               errors={"file": [f"at most {cap} rows"]})
    return counted


class _Cursor:
    """This process's place in one job's rows: the next chunk continues the stream where the last
    one stopped, and a job resumed elsewhere (another worker, a restart) skips what is done."""

    def __init__(self, job_id: uuid.UUID, rows: Iterator[tuple[int, dict]], position: int):
        self.job_id, self.rows, self.position = job_id, rows, position

    def take(self, count: int) -> list[tuple[int, dict]]:
        chunk = list(itertools.islice(self.rows, count))
        self.position += len(chunk)
        return chunk


_cursor: _Cursor | None = None


def _rows_from(job: LeadImport, start: int) -> _Cursor:
    global _cursor
    if _cursor is None or _cursor.job_id != job.id or _cursor.position != start:
        encoding = encoding_of(job.content)
        rows = rows_of(job.content, encoding, header_of(job.content, encoding))
        _cursor = _Cursor(job.id, rows, 0)
        _cursor.take(start)  # a resumed job: skip the rows already imported
    return _cursor


def _clean(raw: dict) -> dict:
    if "source" in raw:
        raw["source"] = _SOURCES_ZH.get(raw["source"], raw["source"].casefold())
    for money in ("quoted_price", "estimated_value"):
        if money in raw:
            raw[money] = raw[money].replace(",", "").replace("¥", "").replace("￥", "").strip()
    return raw


# ---- API side ----------------------------------------------------------------------------------------
def create_job(uow, principal: Principal, filename: str | None, content: bytes) -> LeadImport:
    # A file we cannot read, or one over the row cap, is refused now, not in the worker.
    encoding = encoding_of(content)
    rows = count_rows(content, encoding, header_of(content, encoding), max_rows())
    job = LeadImport(id=uuid.uuid4(), status="queued", filename=(filename or "")[:300] or None, content=content,
                     requested_by=principal.user_id, requested_role=principal.role,
                     requested_team=principal.primary_team, rows=rows, rows_done=0, created=0, merged=0, claimed=0,
                     rejected=0, created_at=utcnow(), updated_at=utcnow())
    uow.session.add(job)
    return job


def get_job(uow, principal: Principal, job_id: uuid.UUID) -> dict:
    job = uow.session.get(LeadImport, job_id)
    if job is None or (job.requested_by != principal.user_id and principal.role not in ("admin", "executive")):
        raise NotFound(f"import {job_id} not found")
    errors = uow.session.execute(select(LeadImportError).where(LeadImportError.job_id == job.id)
                                 .order_by(LeadImportError.row).limit(ERRORS_SHOWN)).scalars().all()
    return {**{c: getattr(job, c) for c in ("id", "status", "filename", "rows", "rows_done", "created", "merged",
                                              "claimed", "rejected", "failure", "created_at", "finished_at")},
            "errors": [{"row": e.row, "errors": e.errors} for e in errors], "error_count": job.rejected}


# ---- worker side --------------------------------------------------------------------------------------
def process_next_chunk(db: Database, settings: Settings) -> bool:
    """Work one chunk of the oldest unfinished job; False when there is nothing to do."""
    with db.uow() as uow:
        stmt = (select(LeadImport).where(LeadImport.status.in_(("queued", "running")))
                .order_by(LeadImport.created_at).limit(1))
        if uow.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)  # several workers share the queue
        job = uow.session.execute(stmt).scalar_one_or_none()
        if job is None:
            return False
        try:
            # Never past the cap, whatever the file turned out to hold (the count at upload bounds it).
            chunk = _rows_from(job, job.rows_done).take(max(0, min(CHUNK_ROWS, max_rows() - job.rows_done)))
        except ValidationFailed as exc:
            job.status, job.failure, job.finished_at = "failed", exc.detail, utcnow()
            _finished(uow, settings, job)
            uow.commit()
            return True
        job.status = "running"
        # The importer as the directory knows them now (their managed teams decide what a row may
        # merge into); the role and team recorded at upload if the replica has lost them.
        if not importer_active(uow, job.requested_by):
            job.status, job.failure, job.finished_at = "failed", "the importer was deactivated", utcnow()
            _finished(uow, settings, job)
            uow.commit()
            return True
        requester = replica_principal(uow, job.requested_by) or Principal(
            user_id=job.requested_by, role=job.requested_role,
            teams=(job.requested_team,) if job.requested_team else ())
        owner_id, team_id = domain.initial_ownership(Principal(
            user_id=job.requested_by, role=job.requested_role, teams=(job.requested_team,) if job.requested_team else ()))
        if owner_id is not None:
            # The owner's lock before any lead row: a handover takes it before the rows it moves.
            successor_now(uow, owner_id)
        valid = []
        for line, raw in chunk:
            try:
                valid.append(_row_schema.load(_clean(raw)))
            except ValidationError as exc:
                uow.session.add(LeadImportError(job_id=job.id, row=line, errors=exc.messages))
                job.rejected += 1
        prefetch_duplicates(uow, valid)
        for fields in valid:
            result = intake(uow, settings, fields, owner_id=owner_id, team_id=team_id,
                            created_by=job.requested_by, actor=job.requested_by, via="import", principal=requester)
            if result.claim is not None:
                job.claimed += 1
            elif result.merged:
                job.merged += 1
            else:
                job.created += 1
        job.rows_done += len(chunk)
        job.updated_at = utcnow()
        if len(chunk) < CHUNK_ROWS or job.rows_done >= min(job.rows or max_rows(), max_rows()):
            job.rows = job.rows_done
            job.status, job.finished_at = "completed", utcnow()
            _finished(uow, settings, job)
        uow.commit()
        return True


def _finished(uow, settings: Settings, job: LeadImport) -> None:
    """lead_import.finished, in the transaction that ends the job: the uploader is told once."""
    uow.publish(*leads_event(settings, "lead_import.finished", job.id, {
        "job_id": job.id, "requested_by": job.requested_by, "filename": job.filename, "status": job.status,
        "rows": job.rows, "created": job.created, "merged": job.merged, "claimed": job.claimed,
        "rejected": job.rejected, "failure": job.failure}, actor=job.requested_by))


def _fail_current_job(db: Database, settings: Settings, reason: str) -> None:
    with db.uow() as uow:
        job = uow.session.execute(select(LeadImport).where(LeadImport.status.in_(("queued", "running")))
                                  .order_by(LeadImport.created_at).limit(1)).scalar_one_or_none()
        if job is not None:
            job.status, job.failure, job.finished_at = "failed", reason[:2000], utcnow()
            _finished(uow, settings, job)
            uow.commit()


def run_imports(db: Database, settings: Settings, stop: threading.Event, *, idle_wait: float = 1.0,
                max_failures: int = 3) -> None:
    """The worker's import loop: chunks back to back while there is work, a short nap when not.
    A chunk that keeps failing fails its job (with the reason), so one file never blocks the queue;
    a database outage is not the file's fault and is simply waited out."""
    failures = 0
    while not stop.is_set():
        try:
            busy = process_next_chunk(db, settings)
            failures = 0
        except OperationalError:
            log.warning("database unavailable; import waits", exc_info=True)
            stop.wait(5.0)
            continue
        except Exception as exc:
            failures += 1
            log.exception("import chunk failed (%d of %d)", failures, max_failures)
            if failures >= max_failures:
                _fail_current_job(db, settings, f"{type(exc).__name__}: {exc}")
                failures = 0
            stop.wait(1.0)
            continue
        if not busy:
            stop.wait(idle_wait)
