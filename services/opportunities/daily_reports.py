"""Daily sales reports (CONTRACT §4): one per rep per day, drafted from what the day holds (visits,
activities, new leads, deals opened and moved, orders confirmed, money collected) until the rep
submits it, when the draft is frozen and the market section becomes searchable market notes; then
only the manager's review and comments change it. Each use case leaves the commit to its caller."""
from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import aliased

from crmkit import clock
from crmkit.auth import Principal
from crmkit.db import UnitOfWork, upsert, utcnow
from crmkit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.periods import day_bounds, local_day, parse_period
from crmkit.settings import Settings
from crmkit.visibility import SEES_EVERYTHING, visible

from . import domain, people
from .day_db import (
    LEAD_VISIBILITY,
    MARKET_NOTE_VISIBILITY,
    REPORT_VISIBILITY,
    DailyReport,
    KnownLead,
    LeadActivity,
    MarketNote,
    OrderFact,
    PaymentFact,
    ReportComment,
    StageMove,
    Visit,
)
from .db import Account, Activity, DirectoryUser, Opportunity, account_visible, opportunity_visible, visible_row
from .events import event

ZERO = Decimal("0.00")
REPORTERS = ("rep", "manager")  # whose day is reported
# A report's id follows from its rep and day, so two first readers of a day create the same row.
REPORT_NAMESPACE = uuid.UUID("3b9e0c1d-8f5a-4c47-b1c2-6a7d9e0f1a23")


def report_id(owner_id: str, day: dt.date) -> uuid.UUID:
    return uuid.uuid5(REPORT_NAMESPACE, f"{owner_id}/{day.isoformat()}")


def _money(value) -> str:
    return str(Decimal(value or 0).quantize(Decimal("0.01")))


# ---- the draft ---------------------------------------------------------------------------------------
def draft(uow: UnitOfWork, day: dt.date, owner_ids: list[str]) -> dict[str, dict]:
    """What `day` holds for each rep, from the records: a handful of grouped queries whatever the
    number of reps (the worker drafts a thousand at once). JSON-ready: amounts and times as text."""
    start, end = day_bounds(day)
    owners = sorted(set(owner_ids))
    out = {o: {"visits": {"planned": 0, "done": 0, "missed": 0, "rescheduled": 0, "items": []}, "activities": {},
               "calls": 0, "new_leads": 0, "new_leads_by_source": {},
               "opportunities_created": {"count": 0, "amount": _money(0)}, "stage_moves": [],
               "orders_confirmed": {"count": 0, "amount": _money(0)}, "collected": _money(0)} for o in owners}
    if not owners:
        return out
    s = uow.session
    for v in s.execute(select(Visit).where(Visit.owner_id.in_(owners), Visit.day == day)
                       .order_by(Visit.owner_id, Visit.planned_at, Visit.id)).scalars():
        visits = out[v.owner_id]["visits"]
        visits[v.status] += 1
        visits["items"].append({"id": str(v.id), "kind": v.kind, "account_id": _text(v.account_id),
                                "lead_id": _text(v.lead_id), "planned_at": v.planned_at.isoformat(),
                                "status": v.status, "outcome": v.outcome})  # hidden with its record (render)
    for report in out.values():
        visits = report["visits"]
        visits["planned"] = visits["planned"] + visits["done"] + visits["missed"]  # all the day kept to
    # Activities on the rep's own or their team's records only: one on a record of another team (a
    # virtual team's) would be counted for a manager who may not see that record.
    rep = aliased(DirectoryUser)
    deal = aliased(Opportunity)
    ours = case((Activity.opportunity_id.is_(None), or_(Account.owner_id == Activity.created_by,
                                                        Account.team_id == rep.team_id)),
                else_=or_(deal.owner_id == Activity.created_by, deal.team_id == rep.team_id))
    kinds = [*s.execute(select(Activity.created_by, Activity.kind, func.count())
                        .join(rep, rep.id == Activity.created_by).join(Account, Account.id == Activity.account_id)
                        .outerjoin(deal, deal.id == Activity.opportunity_id)
                        .where(Activity.created_by.in_(owners), Activity.occurred_at >= start,
                               Activity.occurred_at < end, ours)
                        .group_by(Activity.created_by, Activity.kind)),
             *s.execute(select(LeadActivity.logged_by, LeadActivity.kind, func.count())
                        .join(rep, rep.id == LeadActivity.logged_by).join(KnownLead, KnownLead.id == LeadActivity.lead_id)
                        .where(LeadActivity.logged_by.in_(owners), LeadActivity.occurred_at >= start,
                               LeadActivity.occurred_at < end, or_(KnownLead.owner_id == LeadActivity.logged_by,
                                                                   KnownLead.team_id == rep.team_id))
                        .group_by(LeadActivity.logged_by, LeadActivity.kind))]
    for owner, kind, count in kinds:
        activities = out[owner]["activities"]
        activities[kind] = activities.get(kind, 0) + count
    for report in out.values():
        report["calls"] = report["activities"].get("call", 0)
    for owner, source, count in s.execute(select(KnownLead.owner_id, KnownLead.source, func.count()).where(
            KnownLead.owner_id.in_(owners), KnownLead.status != "deleted", KnownLead.created_at >= start,
            KnownLead.created_at < end)
            .group_by(KnownLead.owner_id, KnownLead.source)):
        out[owner]["new_leads"] += count
        by_source = out[owner]["new_leads_by_source"]
        by_source[source or "other"] = by_source.get(source or "other", 0) + count
    for owner, count, amount in s.execute(select(Opportunity.owner_id, func.count(), func.sum(Opportunity.amount)).where(
            Opportunity.owner_id.in_(owners), Opportunity.deleted_at.is_(None), Opportunity.created_at >= start,
            Opportunity.created_at < end).group_by(Opportunity.owner_id)):
        out[owner]["opportunities_created"] = {"count": count, "amount": _money(amount)}
    for m in s.execute(select(StageMove).where(StageMove.owner_id.in_(owners), StageMove.moved_at >= start,
                                               StageMove.moved_at < end)
                       .order_by(StageMove.moved_at, StageMove.id)).scalars():
        out[m.owner_id]["stage_moves"].append({"opportunity_id": str(m.opportunity_id), "from_stage": m.from_stage,
                                               "to_stage": m.to_stage, "moved_at": m.moved_at.isoformat()})
    for owner, count, amount in s.execute(select(OrderFact.owner_id, func.count(), func.sum(OrderFact.total)).where(
            OrderFact.owner_id.in_(owners), OrderFact.cancelled_at.is_(None), OrderFact.confirmed_at >= start,
            OrderFact.confirmed_at < end).group_by(OrderFact.owner_id)):
        out[owner]["orders_confirmed"] = {"count": count, "amount": _money(amount)}
    for owner, amount in s.execute(select(PaymentFact.owner_id, func.sum(PaymentFact.amount)).where(
            PaymentFact.owner_id.in_(owners), PaymentFact.paid_on == day).group_by(PaymentFact.owner_id)):
        out[owner]["collected"] = _money(amount)
    return out


def _text(value) -> str | None:
    return None if value is None else str(value)


# ---- the reports ---------------------------------------------------------------------------------------
def _reporters(uow: UnitOfWork, principal: Principal, args: dict) -> list[tuple[str, str | None]]:
    """Whose reports of the day the caller may read: their own, their teams' (a manager), everyone's
    (executives, admins); each (user, team) active in the directory replica."""
    stmt = select(DirectoryUser.id, DirectoryUser.team_id).where(DirectoryUser.active.is_(True),
                                                                 DirectoryUser.role.in_(REPORTERS))
    if principal.role not in SEES_EVERYTHING:
        mine = DirectoryUser.id == principal.user_id
        stmt = stmt.where(mine | DirectoryUser.team_id.in_(principal.manages) if principal.role == "manager" else mine)
    if args.get("owner_id"):
        stmt = stmt.where(DirectoryUser.id == args["owner_id"])
    if args.get("team_id"):
        stmt = stmt.where(DirectoryUser.team_id == args["team_id"])
    return [tuple(r) for r in uow.session.execute(stmt)]


DRAFT_DAYS = 31  # how far back a day still gets its drafts (and may be submitted)


def _check_day_begun(day: dt.date) -> None:
    if day > local_day(clock.now()):
        raise ValidationFailed("that day has not begun", errors={"date": ["in the future"]})


def _recent(day: dt.date) -> bool:
    return day >= local_day(clock.now()) - dt.timedelta(days=DRAFT_DAYS)


def ensure_reports(uow: UnitOfWork, day: dt.date, reporters: list[tuple[str, str | None]]) -> None:
    """The day's draft rows of these reps, where missing (ids follow from rep and day, so a race
    between two first readers inserts one row)."""
    have = set(uow.session.execute(select(DailyReport.owner_id).where(
        DailyReport.day == day, DailyReport.owner_id.in_([r[0] for r in reporters]))).scalars()) if reporters else set()
    missing = [r for r in reporters if r[0] not in have]
    if not missing:
        return
    now = utcnow()
    rows = [{"id": report_id(owner, day), "owner_id": owner, "team_id": team, "day": day, "status": "draft",
             "market": [], "created_at": now, "updated_at": now, "version": 1} for owner, team in missing]
    uow.session.execute(upsert(uow.session, DailyReport).on_conflict_do_nothing(), rows)


def list_reports(uow: UnitOfWork, principal: Principal, args: dict):
    """The day's reports the caller may read, one per rep, drafted where not submitted."""
    day = args["date"]
    _check_day_begun(day)
    if _recent(day):  # an older day lists the reports it has, and drafts no new ones
        ensure_reports(uow, day, _reporters(uow, principal, args))
    stmt = select(DailyReport).where(DailyReport.day == day, visible(principal, REPORT_VISIBILITY))
    for name in ("owner_id", "team_id"):
        if args.get(name):
            stmt = stmt.where(getattr(DailyReport, name) == args[name])
    items, cursor = paginate(uow.session, stmt, model=DailyReport, sort=SortSpec("owner_id", descending=False),
                             limit=args["limit"], cursor=args.get("cursor"))
    return render(uow, principal, items), cursor


def visible_report(uow: UnitOfWork, principal: Principal, rid: uuid.UUID, *, for_update=False) -> DailyReport:
    report = visible_row(uow.session, DailyReport, REPORT_VISIBILITY, principal, rid, for_update=for_update)
    if report is None:
        raise NotFound(f"daily report {rid} not found")
    return report


def _own_draft(uow: UnitOfWork, principal: Principal, rid: uuid.UUID) -> DailyReport:
    report = visible_report(uow, principal, rid, for_update=True)
    if report.owner_id != principal.user_id:
        raise Forbidden("only its rep writes and submits a report; a manager reviews it")
    if report.status != "draft":
        raise Conflict(f"the report is {report.status}: it changes only by comments now")
    return report


def get_report(uow: UnitOfWork, principal: Principal, rid: uuid.UUID) -> dict:
    return render(uow, principal, [visible_report(uow, principal, rid)])[0]


def _check_market(uow: UnitOfWork, principal: Principal, entries: list[dict]) -> list[dict]:
    """Entries tagged to an account the rep sees; an account they do not see is refused as unknown
    (as one that does not exist: the answer says nothing about it)."""
    tagged = {e["account_id"] for e in entries if e.get("account_id")}
    seen = set(uow.session.execute(select(Account.id).where(
        Account.id.in_(tagged), Account.deleted_at.is_(None), account_visible(principal))).scalars()) if tagged else set()
    errors = {str(i): {"account_id": ["unknown account"]} for i, e in enumerate(entries)
              if e.get("account_id") and e["account_id"] not in seen}
    if errors:
        raise ValidationFailed("a market entry names an unknown account", errors={"market": errors})
    return [{"competitor": e.get("competitor"), "product_category": e.get("product_category"),
             "account_id": _text(e.get("account_id")), "price_heard": None if e.get("price_heard") is None
             else _money(e["price_heard"]), "note": e["note"]} for e in entries]


def patch_report(uow: UnitOfWork, principal: Principal, rid: uuid.UUID, changes: dict, check_version) -> dict:
    report = _own_draft(uow, principal, rid)
    check_version(report.version)
    if "market" in changes:
        report.market = _check_market(uow, principal, changes["market"])
    if "notes" in changes:
        report.notes = changes["notes"]
    report.updated_at = utcnow()
    uow.session.flush()
    return render(uow, principal, [report])[0]


def submit(uow: UnitOfWork, settings: Settings, principal: Principal, rid: uuid.UUID) -> dict:
    """The draft is frozen as it stands now, and the market section filed as market notes."""
    report = _own_draft(uow, principal, rid)
    _check_day_begun(report.day)
    if not _recent(report.day):
        raise Conflict(f"a report is submitted within {DRAFT_DAYS} days of its day")
    now = utcnow()
    report.summary = draft(uow, report.day, [report.owner_id])[report.owner_id]
    report.status, report.submitted_at, report.updated_at = "submitted", now, now
    tagged = {uuid.UUID(e["account_id"]) for e in report.market or [] if e.get("account_id")}
    accounts = dict(uow.session.execute(select(Account.id, Account.region).where(
        Account.id.in_(tagged), Account.deleted_at.is_(None), account_visible(principal))).all()) if tagged else {}
    for position, entry in enumerate(report.market or []):
        account_id = uuid.UUID(entry["account_id"]) if entry.get("account_id") else None
        if account_id not in accounts:
            account_id = None  # no longer the rep's to see since it was written: filed untagged
        uow.session.add(MarketNote(
            id=uuid.uuid4(), report_id=report.id, owner_id=report.owner_id, team_id=report.team_id, day=report.day,
            position=position, competitor=entry.get("competitor"),
            competitor_key=(entry.get("competitor") or "").casefold()[:200] or None,  # casefold may lengthen it
            product_category=entry.get("product_category"), account_id=account_id,
            region=accounts.get(account_id) if account_id else None,
            price_heard=Decimal(entry["price_heard"]) if entry.get("price_heard") else None, note=entry["note"],
            created_at=now))
    uow.session.flush()
    _report_event(uow, settings, "daily_report.submitted", report, principal.user_id)
    return render(uow, principal, [report])[0]


def review(uow: UnitOfWork, settings: Settings, principal: Principal, rid: uuid.UUID, comment: str) -> dict:
    """A leader over the rep (their manager, an executive, an admin) reads it, comments, and marks it
    reviewed; reviewing again adds a comment."""
    report = visible_report(uow, principal, rid, for_update=True)
    if report.owner_id == principal.user_id or not domain.may_write(principal, report.owner_id, report.team_id):
        raise Forbidden("a report is reviewed by the rep's manager")
    if report.status == "draft":
        raise Conflict("the report is not submitted yet")
    now = utcnow()
    uow.session.add(ReportComment(id=uuid.uuid4(), report_id=report.id, author_id=principal.user_id, body=comment,
                                  created_at=now))
    report.status, report.reviewed_at, report.reviewed_by, report.updated_at = "reviewed", now, principal.user_id, now
    uow.session.flush()
    _report_event(uow, settings, "daily_report.reviewed", report, principal.user_id, {"comment": comment})
    return render(uow, principal, [report])[0]


def _report_event(uow, settings, kind: str, report: DailyReport, actor, extra: dict | None = None) -> None:
    uow.publish(*event(settings, kind, report.id, {"report": report, "manager_id": people.manager_of(
        uow, report.owner_id), **(extra or {})}, actor=actor))


def render(uow: UnitOfWork, principal: Principal, reports: list[DailyReport]) -> list[dict]:
    """Reports as the caller may read them: drafts recomputed (one batch per day), submitted ones as
    frozen; ids of accounts and leads the caller may not see are left out."""
    drafts_by_day: dict = defaultdict(list)
    for r in reports:
        if r.status == "draft":
            drafts_by_day[r.day].append(r.owner_id)
    drafts = {(day, owner): d for day, owners in drafts_by_day.items() for owner, d in draft(uow, day, owners).items()}
    comments: dict = defaultdict(list)
    if reports:
        for c in uow.session.execute(select(ReportComment).where(ReportComment.report_id.in_([r.id for r in reports]))
                                     .order_by(ReportComment.created_at, ReportComment.id)).scalars():
            comments[c.report_id].append(c)
    out = []
    for r in reports:
        summary = r.summary if r.status != "draft" else drafts[(r.day, r.owner_id)]
        out.append({"id": r.id, "owner_id": r.owner_id, "team_id": r.team_id, "day": r.day, "status": r.status,
                    "notes": r.notes, "market": [dict(e) for e in r.market or []], "summary": _copy(summary),
                    "comments": comments[r.id], "submitted_at": r.submitted_at, "reviewed_at": r.reviewed_at,
                    "reviewed_by": r.reviewed_by, "created_at": r.created_at, "updated_at": r.updated_at,
                    "version": r.version})
    _hide_unseen(uow, principal, out)
    return out


def _copy(summary: dict) -> dict:
    """A copy to hide things in for one reader; the stored summary stays whole."""
    return {**summary, "visits": {**summary["visits"], "items": [dict(i) for i in summary["visits"]["items"]]},
            "stage_moves": [dict(m) for m in summary["stage_moves"]]}


def _hide_unseen(uow: UnitOfWork, principal: Principal, reports: list[dict]) -> None:
    accounts, leads = set(), set()
    for r in reports:
        accounts |= {e["account_id"] for e in r["market"] if e.get("account_id")}
        for item in r["summary"]["visits"]["items"]:
            accounts |= {item["account_id"]} - {None}
            leads |= {item["lead_id"]} - {None}
    seen = set()
    if accounts:
        seen |= {str(i) for i in uow.session.execute(select(Account.id).where(
            Account.id.in_([uuid.UUID(a) for a in accounts]), Account.deleted_at.is_(None),
            account_visible(principal))).scalars()}
    if leads:
        seen |= {str(i) for i in uow.session.execute(select(KnownLead.id).where(
            KnownLead.id.in_([uuid.UUID(x) for x in leads]), visible(principal, LEAD_VISIBILITY))).scalars()}
    deals = {m["opportunity_id"] for r in reports for m in r["summary"]["stage_moves"]}
    if deals:
        seen |= {str(i) for i in uow.session.execute(select(Opportunity.id).where(
            Opportunity.id.in_([uuid.UUID(d) for d in deals]), opportunity_visible(principal))).scalars()}
    for r in reports:
        for e in r["market"]:
            if e.get("account_id") and e["account_id"] not in seen:
                e["account_id"] = None
        for item in r["summary"]["visits"]["items"]:
            item["target_hidden"] = (item["account_id"] or item["lead_id"]) not in seen
            if item["target_hidden"]:
                item["account_id"] = item["lead_id"] = item["outcome"] = None
        for move in r["summary"]["stage_moves"]:
            if move["opportunity_id"] not in seen:  # the deal was handed to another team since
                move["opportunity_id"] = None


# ---- market intelligence -------------------------------------------------------------------------------
def search_market_notes(uow: UnitOfWork, principal: Principal, args: dict):
    """Market notes of submitted reports the caller may read. The region is the tagged account's: it
    is matched, and shown, only where the caller sees that account."""
    seen_accounts = select(Account.id).where(Account.deleted_at.is_(None), account_visible(principal))
    stmt = select(MarketNote).where(visible(principal, MARKET_NOTE_VISIBILITY))
    if args.get("competitor"):
        needle = args["competitor"].casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(MarketNote.competitor_key.like(f"%{needle}%", escape="\\"))
    if args.get("product_category"):
        stmt = stmt.where(func.lower(MarketNote.product_category) == args["product_category"].lower())
    if args.get("region"):
        stmt = stmt.where(MarketNote.region == args["region"], MarketNote.account_id.in_(seen_accounts))
    if args.get("period"):
        period = parse_period(args["period"])
        stmt = stmt.where(MarketNote.day >= period.start.date(), MarketNote.day < period.end.date())
    items, cursor = paginate(uow.session, stmt, model=MarketNote, sort=SortSpec("created_at", descending=True),
                             limit=args["limit"], cursor=args.get("cursor"))
    tagged = {n.account_id for n in items if n.account_id}
    seen = set(uow.session.execute(seen_accounts.where(Account.id.in_(tagged))).scalars()) if tagged else set()
    out = []
    for n in items:
        note = {c: getattr(n, c) for c in ("id", "report_id", "owner_id", "team_id", "day", "competitor",
                                           "product_category", "account_id", "region", "price_heard", "note")}
        if n.account_id not in seen:
            note["account_id"] = note["region"] = None
        out.append(note)
    return out, cursor
