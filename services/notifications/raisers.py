"""What raises a notification, one dispatch table per topic read (the worker's consumers). Each
handler picks who to tell and words it for each of them from what that person may see of the event:
payload fields marked `x-hidden-from` (money, margins, another team's deal) never reach a
notification. A notification is unique by its event, recipient and kind, and the consumer applies
an event once, so an event delivered three times tells once.

The same handlers keep the reminders (reminders.py) from the dates the events carry."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from crmkit.db import UnitOfWork
from crmkit.periods import time_zone
from crmkit.settings import Settings

from . import inbound, preferences, reminders
from .db import DirectoryUser, Reminder, WaitingApproval
from .inbox import About, notify
from .messages import Text, local_time, render, word


def _name(uow: UnitOfWork, user_id: str | None) -> str:
    user = uow.session.get(DirectoryUser, user_id) if user_id else None
    return (user.name if user is not None and user.name else user_id) or ""


def _executives(uow: UnitOfWork) -> list[str]:
    return list(uow.session.execute(select(DirectoryUser.id).where(
        DirectoryUser.role == "executive", DirectoryUser.active.is_(True)).order_by(DirectoryUser.id)).scalars())


# ---- crm.leads.v1 --------------------------------------------------------------------------------------
def _lead_reminder(uow: UnitOfWork, lead: dict, as_of, *, worked: bool = False) -> None:
    open_ = lead["status"] in reminders.OPEN_LEAD_STATUSES and lead.get("deleted_at") is None
    reminders.keep(uow, record_type="lead", record_id=lead["id"], kind="follow_up",
                   title=lead.get("company") or lead.get("contact_name") or "lead", owner_id=lead["owner_id"],
                   team_id=lead["team_id"], due_at=lead["follow_up_due_at"] if open_ else None, as_of=as_of,
                   worked=worked)


def lead_changed(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.LeadEvent, envelope)
        lead = data["lead"]
        if envelope["type"] == "lead.deleted":
            lead["deleted_at"] = envelope["time"]
        _lead_reminder(uow, lead, envelope["time"])
        if envelope["type"] == "lead.assigned" and data["reason"] != "handover" and lead["owner_id"] \
                and lead["owner_id"] != envelope.get("actor"):
            # A handover tells the successor once for all (handover.completed), not once per lead.
            why = {"rule": "by_rule", "reassigned": "reassigned"}.get(data["reason"] or "", "")
            due = lead["follow_up_due_at"]

            def text(recipient: str, language: str) -> Text:
                zone = preferences.of(uow, recipient).zone
                return render("lead_assigned", language, {
                    "company": lead.get("company") or "-", "contact": lead.get("contact_name") or "-",
                    "why": word(language, why) if why else "",
                    "due": local_time(due, zone) if due else "-"})

            notify(uow, settings, [lead["owner_id"]], "lead_assigned", text,
                   About("lead", lead["id"], None, f"/leads/{lead['id']}"),
                   source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def lead_activity(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.LeadActivity, envelope)
        # The activity is the work the ladder waited for: it starts again from the lead's new date.
        reminders.keep(uow, record_type="lead", record_id=data["lead_id"], kind="follow_up",
                       title=data.get("company") or "lead", owner_id=data["owner_id"], team_id=data["team_id"],
                       due_at=data["follow_up_due_at"], as_of=envelope["time"], worked=True)
        _tell_owner_of_activity(uow, settings, envelope, owner=data["owner_id"], kind=data["kind"],
                                summary=data.get("summary"), title=data.get("company") or "lead",
                                about=About("lead", data["lead_id"], None, f"/leads/{data['lead_id']}"))
    return handle


def _tell_owner_of_activity(uow, settings, envelope, *, owner, kind, summary, title, about: About) -> None:
    actor = envelope.get("actor")
    if not owner or not actor or owner == actor:
        return
    who = _name(uow, actor)
    notify(uow, settings, [owner], "activity_logged",
           lambda _r, language: render("activity_logged", language, {
               "actor": who, "kind": word(language, kind), "title": title, "summary": summary or ""}),
           about, source_key=envelope["id"], event_id=envelope["id"], actor=actor)


def handover_completed(settings: Settings, records: str):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.HandoverCompleted, envelope)
        if data["status"] != "completed" or data["moved"] <= 0:
            return
        leaver = _name(uow, data["from_user_id"])
        notify(uow, settings, [data["to_user_id"]], "records_handed_over",
               lambda _r, language: render("records_handed_over", language, {
                   "moved": data["moved"], "records": word(language, records), "from_user": leaver}),
               About(), source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def import_finished(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        job = inbound.read(inbound.ImportFinished, envelope)
        kind = "import_finished" if job["status"] == "completed" else "import_failed"
        notify(uow, settings, [job["requested_by"]], kind,
               lambda _r, language: render(kind, language, {
                   "file": job.get("filename") or "CSV", "created": job["created"], "merged": job["merged"],
                   "claimed": job["claimed"], "rejected": job["rejected"], "failure": job.get("failure") or ""}),
               About("lead_import", str(job["job_id"]), None, f"/lead-imports/{job['job_id']}"),
               source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def leads_handlers(settings: Settings) -> dict:
    changed = lead_changed(settings)
    kinds = ("lead.created", "lead.updated", "lead.assigned", "lead.merged", "lead.converted", "lead.disqualified",
             "lead.deleted")
    return {**{(k, 1): changed for k in kinds}, ("activity.logged", 1): lead_activity(settings),
            ("handover.completed", 1): handover_completed(settings, "leads"),
            ("lead_import.finished", 1): import_finished(settings)}


# ---- crm.opportunities.v1 ------------------------------------------------------------------------------
def collision(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        sides = inbound.read(inbound.Collision, envelope)["opportunities"]
        # Each person hears of the deals of theirs (as owner or as the team's manager) and of no other:
        # the other deal's name, owner and figures are another team's.
        mine: dict[str, list[dict]] = {}
        for side in sides:
            for person in (side["owner_id"], side["manager_id"]):
                if person and side not in mine.setdefault(person, []):
                    mine[person].append(side)
        for person, deals in sorted(mine.items()):
            for deal in deals:
                notify(uow, settings, [person], "collision",
                       lambda _r, language, d=deal: render("collision", language, {"title": d["name"]}),
                       About("opportunity", str(deal["opportunity_id"]), None,
                             f"/opportunities/{deal['opportunity_id']}"),
                       source_key=f"{envelope['id']}:{deal['opportunity_id']}", event_id=envelope["id"],
                       actor=envelope.get("actor"))
    return handle


def deal_activity(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.DealActivity, envelope)
        record_type, record_id = (("opportunity", str(data["opportunity_id"])) if data["opportunity_id"]
                                  else ("account", str(data["account_id"])))
        title = _record_title(uow, record_type, record_id) or record_type
        reminders.keep(uow, record_type=record_type, record_id=record_id, kind="next_contact", title=title,
                       owner_id=data["owner_id"], team_id=data["team_id"], due_at=data["next_contact_at"],
                       as_of=envelope["time"], account_id=data["account_id"], worked=True)
        link = f"/{'opportunities' if record_type == 'opportunity' else 'accounts'}/{record_id}"
        _tell_owner_of_activity(uow, settings, {**envelope, "actor": data["logged_by"]}, owner=data["owner_id"],
                                kind=data["kind"], summary=data.get("summary"), title=title,
                                about=About(record_type, record_id, data["account_id"], link))
    return handle


def _record_title(uow: UnitOfWork, record_type: str, record_id: str) -> str | None:
    """What a record is called, as this service last heard (its reminder's title)."""
    return uow.session.execute(select(Reminder.title).where(
        Reminder.record_type == record_type, Reminder.record_id == record_id)).scalars().first()


def account_changed(uow: UnitOfWork, envelope: dict) -> None:
    account = inbound.read(inbound.AccountEvent, envelope)["account"]
    if envelope["type"] == "account.deleted":
        reminders.close(uow, record_type="account", record_id=str(account["id"]), as_of=envelope["time"])
    else:
        reminders.move(uow, record_type="account", record_id=str(account["id"]), owner_id=account["owner_id"],
                       team_id=account["team_id"], as_of=envelope["time"])
        _retitle(uow, "account", str(account["id"]), account["name"])


def opportunity_changed(uow: UnitOfWork, envelope: dict) -> None:
    deal = inbound.read(inbound.OpportunityEvent, envelope)["opportunity"]
    if deal["status"] != "open":
        reminders.close(uow, record_type="opportunity", record_id=str(deal["id"]), as_of=envelope["time"])
    else:
        reminders.move(uow, record_type="opportunity", record_id=str(deal["id"]), owner_id=deal["owner_id"],
                       team_id=deal["team_id"], as_of=envelope["time"])
        if deal["name"]:
            _retitle(uow, "opportunity", str(deal["id"]), deal["name"])


def _retitle(uow: UnitOfWork, record_type: str, record_id: str, title: str) -> None:
    for row in uow.session.execute(select(Reminder).where(
            Reminder.record_type == record_type, Reminder.record_id == record_id)).scalars():
        row.title = title[:300]


def visit_changed(uow: UnitOfWork, envelope: dict) -> None:
    """A planned visit is a reminder on the rep's agenda at its time, and so is the day's report (at
    REPORT_DUE_HOUR where the company works) until it is submitted; a visit done, missed or moved stops its own."""
    visit = inbound.read(inbound.VisitEvent, envelope)["visit"]
    record_id = str(visit["id"])
    if envelope["type"] != "visit.planned":
        reminders.close(uow, record_type="visit", record_id=record_id, as_of=envelope["time"],
                        worked=envelope["type"] == "visit.checked_in")
        return
    target = (("account", str(visit["account_id"])) if visit["account_id"] else ("lead", str(visit["lead_id"])))
    title = _record_title(uow, *target) or visit.get("purpose") or target[0]
    reminders.keep(uow, record_type="visit", record_id=record_id, kind="visit", title=title,
                   owner_id=visit["owner_id"], team_id=visit["team_id"], due_at=visit["planned_at"],
                   as_of=envelope["time"], account_id=visit["account_id"])
    report = _report_key(visit["owner_id"], visit["day"])
    if not _submitted(uow, report):
        reminders.keep(uow, record_type="daily_report", record_id=report, kind="daily_report",
                       title=visit["day"].isoformat(), owner_id=visit["owner_id"], team_id=visit["team_id"],
                       due_at=report_due(visit["day"]), as_of=envelope["time"])


REPORT_DUE_HOUR = 18


def report_due(day) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(REPORT_DUE_HOUR), time_zone()).astimezone(dt.UTC)


def _report_key(owner_id: str, day) -> str:
    return f"{owner_id}/{day.isoformat()}"


def _submitted(uow: UnitOfWork, report_key: str) -> bool:
    return uow.session.execute(select(Reminder.id).where(
        Reminder.record_type == "daily_report", Reminder.record_id == report_key,
        Reminder.status == "done")).first() is not None


def _report_done(uow: UnitOfWork, report: dict, as_of) -> None:
    """The day's report reminder is done; kept as done even if no visit had opened it, so a visit
    planned into that day afterwards does not ask for the report again."""
    key = _report_key(report["owner_id"], report["day"])
    reminders.close(uow, record_type="daily_report", record_id=key, as_of=as_of, worked=True)
    if uow.session.execute(select(Reminder.id).where(Reminder.record_type == "daily_report",
                                                     Reminder.record_id == key)).first() is None:
        due = report_due(report["day"])
        uow.session.add(Reminder(id=uuid.uuid4(), record_type="daily_report", record_id=key, kind="daily_report",
                                 title=report["day"].isoformat(), owner_id=report["owner_id"],
                                 team_id=report["team_id"], due_at=due, ladder_start=due, rung=0, status="done",
                                 as_of=as_of))


def report_submitted(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.DailyReportEvent, envelope)
        report = data["report"]
        day = report["day"].isoformat()
        _report_done(uow, report, envelope["time"])
        if data["manager_id"] and data["manager_id"] != report["owner_id"]:
            notify(uow, settings, [data["manager_id"]], "daily_report_submitted",
                   lambda _r, language: render("daily_report_submitted", language, {
                       "rep": _name(uow, report["owner_id"]), "day": day}),
                   About("daily_report", str(report["id"]), None, f"/daily-reports/{report['id']}"),
                   source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def report_reviewed(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.DailyReportEvent, envelope)
        report = data["report"]
        notify(uow, settings, [report["owner_id"]], "daily_report_reviewed",
               lambda _r, language: render("daily_report_reviewed", language, {
                   "day": report["day"].isoformat(), "actor": _name(uow, envelope.get("actor")),
                   "comment": data.get("comment") or ""}),
               About("daily_report", str(report["id"]), None, f"/daily-reports/{report['id']}"),
               source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def opportunities_handlers(settings: Settings) -> dict:
    return {("opportunity.collision_detected", 1): collision(settings),
            **{(k, 1): visit_changed for k in ("visit.planned", "visit.checked_in", "visit.missed", "visit.rescheduled")},
            ("daily_report.submitted", 1): report_submitted(settings),
            ("daily_report.reviewed", 1): report_reviewed(settings),
            ("activity.logged", 1): deal_activity(settings),
            **{(k, 1): account_changed for k in ("account.created", "account.updated", "account.deleted")},
            **{(k, 1): opportunity_changed for k in ("opportunity.created", "opportunity.updated",
                                                    "opportunity.stage_changed", "opportunity.won", "opportunity.lost")},
            ("handover.completed", 1): handover_completed(settings, "opportunities")}


# ---- crm.orders.v1 -------------------------------------------------------------------------------------
def approval(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        data = inbound.read(inbound.ApprovalEvent, envelope)
        item = data["approval"]
        about = About("order", str(item["order_id"]), None, f"/orders/{item['order_id']}")
        number, actor = item["order_number"], envelope.get("actor")
        if envelope["type"] == "approval.decided" and item["status"] != "pending":
            # Told once the approval is closed: approved or rejected at the last level, or closed
            # without a decision (the order was cancelled or changed). A level passed on the way is
            # the next approver's news, not the requester's.
            outcome = {"approved": "approved", "rejected": "rejected"}.get(item["status"], "closed")
            who = _name(uow, data["decided_by"] or actor)
            comment = data.get("comment") if outcome != "closed" else None
            notify(uow, settings, [item["requested_by"], item["owner_id"]], "approval_decided",
                   lambda _r, language: render("approval_decided" if outcome != "closed" else "approval_closed",
                                               language, {"number": number, "decision": word(language, outcome),
                                                          "actor": who, "comment": f" {comment}" if comment else ""}),
                   about, source_key=envelope["id"], event_id=envelope["id"], actor=actor)
        _keep_waiting(uow, item, envelope["time"])
        if item["status"] != "pending":
            return
        # Whoever must act now (none named: any executive may).
        approvers = [item["current_approver_id"]] if item["current_approver_id"] else _executives(uow)
        kind = "approval_escalated" if envelope["type"] == "approval.escalated" else "approval_requested"
        notify(uow, settings, approvers, kind,
               lambda _r, language: render(kind, language, {"number": number, "level": item["current_level"] or ""}),
               about, source_key=envelope["id"], event_id=envelope["id"], actor=actor)
    return handle


def _keep_waiting(uow: UnitOfWork, item: dict, as_of) -> None:
    """The agenda's copy of who an approval waits for (none once it is decided)."""
    row = uow.session.get(WaitingApproval, item["id"], with_for_update=True)
    row = row or WaitingApproval(id=item["id"], since=as_of)
    if row.approver_id != item["current_approver_id"]:
        row.since = as_of  # waiting for someone new from now
    row.order_id, row.order_number, row.approver_id = item["order_id"], item["order_number"], item["current_approver_id"]
    row.level, row.status, row.as_of = item["current_level"], item["status"], as_of
    uow.session.add(row)


def performance_alert(settings: Settings):
    def handle(uow: UnitOfWork, envelope: dict) -> None:
        alert = inbound.read(inbound.AlertEvent, envelope)["alert"]
        kind = "target_reached" if envelope["type"] == "performance.target_reached" else "pace_warning"
        # The attainment only, never the amounts: a manager or executive reads those through
        # /performance, which shows each what they may see (credit earned in another team, margins).
        for recipient in dict.fromkeys([alert["rep_id"], alert["manager_id"], *alert["executive_ids"]]):
            if not recipient:
                continue
            own = alert["subject_type"] == "user" and recipient == alert["subject_id"]
            subject = alert["subject_id"] if alert["subject_type"] == "user" else None
            name = _name(uow, subject) if subject else None

            def text(_r, language, own=own, name=name) -> Text:
                whose = word(language, "your") if own else (name or word(language, "team"))
                return render(kind, language, {
                    "whose": whose, "metric": word(language, alert["metric"]), "period": alert["period"],
                    "attainment": alert["attainment"], "day": alert["day_of_period"],
                    "below": alert.get("below_pct") or ""})

            link = f"/performance?period={alert['period']}" + (f"&subject_id={subject}" if subject else "")
            notify(uow, settings, [recipient], kind, text, About("performance", alert["subject_id"], None, link),
                   source_key=envelope["id"], event_id=envelope["id"], actor=envelope.get("actor"))
    return handle


def orders_handlers(settings: Settings) -> dict:
    approvals = approval(settings)
    alerts = performance_alert(settings)
    return {**{(k, 1): approvals for k in ("approval.requested", "approval.decided", "approval.escalated")},
            ("performance.target_reached", 1): alerts, ("performance.pace_warning", 1): alerts,
            ("handover.completed", 1): handover_completed(settings, "orders_service")}

