"""The notifications service in-process on SQLite and PostgreSQL (issue 17): events from the other
services go through the worker's dispatch tables as the consumer delivers them; the reminder ladder
and the e-mail sender run with times the test gives; e-mail goes to a real SMTP server (aiosmtpd)
and is read back from it."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid

import pytest
from sqlalchemy import select, update

from crmkit.events import new_event
from services.notifications import agenda, bootstrap, email_delivery, raisers, reminders
from services.notifications.db import Base, Delivery, Notification, Preference
from tests.integration.service_client import assert_migrations_match, deliver, service_client
from tests.support.smtp import SmtpServer, html_of, text_of

T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def crm(database_url, topic_prefix, monkeypatch, smtp):
    """Teams east (manager mia) and west (manager wes); reps ann (east) and bob (west); executive eve;
    marketing kim. Ann reads e-mail in English at ann@example.com, bob in Chinese."""
    for key, value in smtp.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRM_PUBLIC_URL", "https://crm.example.com")
    with service_client(bootstrap, "notifications", database_url, topic_prefix, monkeypatch) as client:
        client.directory.put_team("east", "mia")
        client.directory.put_team("west", "wes")
        client.people = {
            "ann": client.as_("ann", "rep", teams=["east"]), "bob": client.as_("bob", "rep", teams=["west"]),
            "mia": client.as_("mia", "manager", teams=["east"], manages=["east"]),
            "wes": client.as_("wes", "manager", teams=["west"], manages=["west"]),
            "eve": client.as_("eve", "executive"), "kim": client.as_("kim", "marketing"),
            "root": client.as_("root", "admin"),
        }
        client.directory.put_team("east", "mia")
        client.directory.put_team("west", "wes")
        for name, language in (("ann", "en"), ("bob", "zh"), ("mia", "en"), ("wes", "en"), ("eve", "en")):
            _prefs(client.people[name], email=f"{name}@example.com", language=language)
        yield client


def _prefs(caller, **fields):
    current = caller.get("/notification-preferences")
    body = {k: v for k, v in current.json.items() if k not in ("user_id", "version")} | fields
    r = caller.put("/notification-preferences", json=body, headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text
    return r.json


def _deliver(table_of, envelope):
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(table_of(ctx.settings), uow, envelope)
        uow.commit()


def _lead(lead_id, *, owner="ann", team="east", due=T0, status="new", company="Acme Tools"):
    return {"id": lead_id, "company": company, "contact_name": "Li Lei", "status": status, "owner_id": owner,
            "team_id": team, "follow_up_due_at": due.isoformat() if due else None, "score": 40,
            "email": "li@acme.example", "quoted_price": "900.00"}


def _lead_event(kind, lead, *, actor="system", **extra):
    return new_event(kind, lead["id"], {"lead": lead, **extra}, source="leads", actor=actor)


def _inbox(caller, **query):
    r = caller.get("/notifications", query_string=query)
    assert r.status_code == 200, r.text
    return r.json


def _fire(moment):
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        fired = reminders.fire_due(uow, ctx.settings, moment)
        uow.commit()
    return fired


def _send(moment=None):
    ctx = bootstrap.context()
    return email_delivery.send_all(ctx.db, ctx.settings, email_delivery.SmtpSettings.from_env(), moment)


def test_the_migrations_create_exactly_the_mapped_tables(database_url):
    assert_migrations_match(bootstrap.MIGRATIONS, Base.metadata, database_url)


def test_a_lead_assigned_by_rule_tells_the_rep_in_the_app_and_by_email_once(crm, smtp):
    ann, bob = crm.people["ann"], crm.people["bob"]
    lead = _lead(str(uuid.uuid4()))
    assigned = _lead_event("lead.assigned", lead, previous_owner_id=None, reason="rule")
    for _ in range(3):  # delivered three times (the consumer's record of applied events aside)
        _deliver(raisers.leads_handlers, assigned)
    page = _inbox(ann)
    assert page["unread_count"] == 1 and len(page["items"]) == 1
    note = page["items"][0]
    assert note["type"] == "lead_assigned" and note["link"] == f"/leads/{lead['id']}"
    assert "Acme Tools" in note["title"] and "18:00" not in note["body"] and "10:00" in note["body"]  # Shanghai time
    assert "900" not in note["body"] and "li@acme" not in note["body"]  # nothing but what the rep needs to act
    assert _inbox(bob)["items"] == []  # nobody else hears of it

    assert _send() == 1 and _send() == 0  # sent once, and only once
    [mail] = smtp.wait_for("ann@example.com")
    assert mail["Subject"] == note["title"] and note["body"] in text_of(mail)
    assert f"https://crm.example.com/leads/{lead['id']}" in text_of(mail) and "<h3>" in html_of(mail)
    assert str(crm_delivery_id(note["id"])) in mail["Message-ID"]


def crm_delivery_id(notification_id):
    with bootstrap.context().db.uow(readonly=True) as uow:
        return uow.session.execute(select(Delivery.id).where(Delivery.notification_id == uuid.UUID(notification_id))).scalar_one()


def test_a_rep_reads_only_their_own_notifications(crm):
    ann, bob, eve = crm.people["ann"], crm.people["bob"], crm.people["eve"]
    for _ in range(2):
        _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4())), reason="rule",
                                                     previous_owner_id=None))
    mine = _inbox(ann)["items"]
    for caller in (bob, eve):  # another rep, an executive: not theirs, so not there
        r = caller.post(f"/notifications/{mine[0]['id']}/read")
        assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
    assert _inbox(ann)["unread_count"] == 2
    r = ann.post(f"/notifications/{mine[0]['id']}/read")
    assert r.status_code == 200 and r.json["read_at"] is not None
    assert _inbox(ann, unread="true")["unread_count"] == 1 and len(_inbox(ann, unread="true")["items"]) == 1
    assert bob.post("/notifications/read-all").json == {"read": 0}
    assert ann.post("/notifications/read-all").json == {"read": 1}
    assert _inbox(ann)["unread_count"] == 0
    # Bad input is a 4xx problem, never a 500.
    for query in ({"unread": "maybe"}, {"limit": "0"}, {"type": "nonsense"}, {"cursor": "x"}, {"whose": "bob"}):
        r = ann.get("/notifications", query_string=query)
        assert r.status_code in (400, 422) and r.headers["Content-Type"] == "application/problem+json", query
    assert ann.post(f"/notifications/{uuid.uuid4()}/read").status_code == 404
    assert ann.post("/notifications/not-a-uuid/read").status_code == 404


def test_a_follow_up_reminds_the_rep_then_the_rep_and_manager_until_an_activity_stops_it(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    lead = _lead(str(uuid.uuid4()), due=T0)
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    assert _fire(T0 - dt.timedelta(minutes=1)) == 0
    assert _fire(T0) == 1
    assert [n["type"] for n in _inbox(ann)["items"]] == ["follow_up_due"]
    assert _fire(T0 + dt.timedelta(hours=23)) == 0
    assert _fire(T0 + dt.timedelta(days=1)) == 1  # a day on: the rep again
    assert [n["type"] for n in _inbox(ann)["items"]] == ["follow_up_overdue", "follow_up_due"]
    assert _inbox(mia)["items"] == []
    # The agenda of that day: the lead is overdue.
    with bootstrap.context().db.uow(readonly=True) as uow:
        from crmkit.auth import Principal
        items = agenda.agenda(uow, Principal("ann", "rep", ("east",), ()), T0 + dt.timedelta(days=1, hours=1),
                              T0 + dt.timedelta(days=2))
    assert [i["record_id"] for i in items["overdue"]] == [lead["id"]] and items["due"] == []
    assert _fire(T0 + dt.timedelta(days=3)) == 1  # three days: the rep and the manager
    overdue = _inbox(mia)["items"]
    assert [n["type"] for n in overdue] == ["follow_up_overdue"] and overdue[0]["link"] == f"/leads/{lead['id']}"
    assert "manager" in _inbox(ann)["items"][0]["body"]
    # An activity is logged: the ladder stops (the lead's next date is days away).
    later = T0 + dt.timedelta(days=10)
    _deliver(raisers.leads_handlers, new_event("activity.logged", lead["id"], {
        "lead_id": lead["id"], "activity_id": str(uuid.uuid4()), "kind": "call", "summary": "called",
        "occurred_at": T0.isoformat(), "next_contact_at": later.isoformat(), "follow_up_due_at": later.isoformat(),
        "owner_id": "ann", "team_id": "east", "company": "Acme Tools"}, source="leads", actor="ann"))
    assert _fire(T0 + dt.timedelta(days=5)) == 0
    assert len(_inbox(ann)["items"]) == 3 and len(_inbox(mia)["items"]) == 1
    # Converted: nothing more, even when the new date comes.
    _deliver(raisers.leads_handlers, _lead_event("lead.converted", {**_lead(lead["id"], due=None), "status": "converted"},
                                                 owner_id="ann", team_id="east"))
    assert _fire(later + dt.timedelta(days=5)) == 0


def test_a_reassigned_lead_reminds_the_new_owner_instead(crm):
    ann, bob = crm.people["ann"], crm.people["bob"]
    lead = _lead(str(uuid.uuid4()), due=T0)
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(lead["id"], owner="bob", team="west"),
                                                 actor="wes", previous_owner_id="ann", reason="reassigned"))
    # Given it after its due time, bob is reminded from now, at the first rung (not escalated at once).
    assert _fire(T0) == 0
    assert _fire(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)) == 1
    assert _inbox(ann)["items"] == []
    assert [n["type"] for n in _inbox(bob)["items"]] == ["follow_up_due", "lead_assigned"]
    assert "跟进" in _inbox(bob)["items"][0]["title"]  # bob reads Chinese


def test_a_collision_tells_both_owners_and_both_managers_once_each_of_their_own_deal(crm):
    sides = [{"opportunity_id": str(uuid.uuid4()), "name": "Acme lathe line", "owner_id": "ann", "team_id": "east",
              "manager_id": "mia"},
             {"opportunity_id": str(uuid.uuid4()), "name": "ACME Lathes Q1", "owner_id": "bob", "team_id": "west",
              "manager_id": "wes"}]
    match = {**sides[1], "score": 0.9, "signals": {"name": 0.9}, "reasons": ["same account name"]}
    detected = new_event("opportunity.collision_detected", sides[0]["opportunity_id"], {
        "opportunity": sides[0], "matches": [match], "more": 0, "current_ids": [sides[1]["opportunity_id"]],
        "opportunities": sides, "owner_ids": ["ann", "bob"], "manager_ids": ["mia", "wes"]},
        source="opportunities", actor="bob")
    for _ in range(3):
        _deliver(raisers.opportunities_handlers, detected)
    for person, own, other in (("ann", 0, 1), ("mia", 0, 1), ("bob", 1, 0), ("wes", 1, 0)):
        [note] = _inbox(crm.people[person])["items"]
        assert note["type"] == "collision" and note["link"] == f"/opportunities/{sides[own]['opportunity_id']}"
        text = json.dumps(note)
        assert sides[own]["name"] in text and sides[other]["name"] not in text, person
        assert sides[other]["opportunity_id"] not in text and sides[other]["owner_id"] not in note["body"]
    assert _inbox(crm.people["eve"])["items"] == []


def _approval_event(kind, *, status="pending", approver="mia", level="manager", **extra):
    order_id = extra.pop("order_id", str(uuid.uuid4()))
    approval_id = extra.pop("approval_id", str(uuid.uuid4()))
    approval = {"id": approval_id, "order_id": order_id, "order_number": "SO-2026-0042", "owner_id": "ann",
                "team_id": "east", "status": status, "reasons": [{"rule": "margin", "metric": "margin_pct", "op": "lt",
                                                                   "threshold": "20", "value": "12", "chain": [level]}],
                "steps": [], "current_approver_id": approver, "current_level": level, "requested_by": "ann",
                "created_at": T0.isoformat(), "closed_at": None}
    return new_event(kind, order_id, {"approval": approval, **extra}, source="orders", actor=extra.get("decided_by", "ann"))


def test_approvals_tell_who_must_act_and_who_asked_and_fill_the_agenda(crm):
    ann, mia, eve = crm.people["ann"], crm.people["mia"], crm.people["eve"]
    requested = _approval_event("approval.requested")
    _deliver(raisers.orders_handlers, requested)
    [waiting] = _inbox(mia)["items"]
    assert waiting["type"] == "approval_requested" and "SO-2026-0042" in waiting["title"]
    assert "12" not in waiting["body"] and "margin" not in waiting["body"]  # the tripped rule's figures stay out
    r = mia.get("/agenda")
    assert r.status_code == 200 and [a["order_number"] for a in r.json["approvals"]] == ["SO-2026-0042"]
    assert ann.get("/agenda").json["approvals"] == []
    # Escalated to any executive (no one named).
    escalated = _approval_event("approval.escalated", approver=None, level="executive",
                                order_id=requested["data"]["approval"]["order_id"],
                                approval_id=requested["data"]["approval"]["id"], escalated_from="mia")
    _deliver(raisers.orders_handlers, escalated)
    assert [n["type"] for n in _inbox(eve)["items"]] == ["approval_escalated"]
    assert mia.get("/agenda").json["approvals"] == [] and len(eve.get("/agenda").json["approvals"]) == 1
    decided = _approval_event("approval.decided", status="approved", approver=None, level=None,
                              order_id=requested["data"]["approval"]["order_id"],
                              approval_id=requested["data"]["approval"]["id"],
                              decision="approve", decided_by="eve", comment="ok this once")
    _deliver(raisers.orders_handlers, decided)
    [told] = _inbox(ann)["items"]
    assert told["type"] == "approval_decided" and "approved" in told["title"] and "ok this once" in told["body"]
    assert eve.get("/agenda").json["approvals"] == []


def test_a_performance_alert_tells_rep_manager_and_executives_without_amounts(crm):
    alert = {"id": str(uuid.uuid4()), "rule": "monthly revenue", "kind": "target_reached", "subject_type": "user",
             "subject_id": "ann", "metric": "revenue", "period": "2026-12", "day_of_period": 12,
             "fired_on": "2026-12-12", "target": "300000.00", "actual": "312345.67", "attainment": "104.1",
             "threshold_pct": "100", "below_pct": None, "rep_id": "ann", "manager_id": "mia", "executive_ids": ["eve"]}
    reached = new_event("performance.target_reached", "user:ann", {"alert": alert}, source="orders", actor=None)
    for _ in range(2):
        _deliver(raisers.orders_handlers, reached)
    for person in ("ann", "mia", "eve"):
        [note] = _inbox(crm.people[person])["items"]
        assert note["type"] == "target_reached" and "104.1%" in note["body"]
        assert "312345" not in json.dumps(note) and "300000" not in json.dumps(note)
    assert _inbox(crm.people["ann"])["items"][0]["title"].startswith("Your")
    assert _inbox(crm.people["kim"])["items"] == [] and _inbox(crm.people["bob"])["items"] == []


def test_preferences_are_validated_versioned_and_obeyed(crm, smtp):
    ann = crm.people["ann"]
    current = ann.get("/notification-preferences")
    assert current.status_code == 200 and current.json["email"] == "ann@example.com"
    body = {k: v for k, v in current.json.items() if k not in ("user_id", "version")}
    assert ann.put("/notification-preferences", json=body).status_code == 428
    assert ann.put("/notification-preferences", json=body, headers={"If-Match": '"v0"'}).status_code == 412
    for bad in ({"time_zone": "Mars/Olympus"}, {"language": "fr"}, {"channels": {"lead_assigned": ["pigeon"]}},
                {"channels": {"nonsense": ["inapp"]}}, {"quiet_hours": {"start": "25:00", "end": "07:00"}},
                {"quiet_hours": {"start": "07:00", "end": "07:00"}}, {"email": "not an address"}, {"owner": "bob"}):
        r = ann.put("/notification-preferences", json={**body, **bad}, headers={"If-Match": current.headers["ETag"]})
        assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", bad
    # No e-mail for assignments, and quiet hours from 09:00 to 18:00 Shanghai time for the rest.
    _prefs(ann, channels={"lead_assigned": ["inapp"]}, quiet_hours={"start": "09:00", "end": "18:00"})
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), due=None), reason="rule",
                                                 previous_owner_id=None))
    assert _inbox(ann)["unread_count"] == 1
    with bootstrap.context().db.uow(readonly=True) as uow:
        assert uow.session.execute(select(Delivery)).scalars().all() == []
    lead = _lead(str(uuid.uuid4()), due=T0)
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    _fire(T0)  # 10:00 in Shanghai: quiet
    assert _send(T0) == 0
    assert _send(dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)) == 1  # 18:00 there
    assert [m["Subject"] for m in smtp.wait_for("ann@example.com")] == ["Follow up Acme Tools"]


def test_email_waits_out_an_smtp_outage_and_goes_once_and_a_refused_address_fails(crm, smtp):
    for _ in range(3):
        _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4())), reason="rule",
                                                     previous_owner_id=None))
    smtp.stop()
    with pytest.raises(email_delivery.ServerDown):
        _send()
    with bootstrap.context().db.uow(readonly=True) as uow:
        rows = uow.session.execute(select(Delivery)).scalars().all()
    assert [(d.status, d.attempts, d.claimed_until) for d in rows] == [("pending", 0, None)] * 3
    smtp.start()
    assert _send() == 3 and _send() == 0
    assert len(smtp.wait_for("ann@example.com", 3)) == 3
    # An address the server refuses for good: failed at once, and delivery.failed is published.
    smtp.refuse.add("bob@example.com")
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), owner="bob", team="west"),
                                                 reason="rule", previous_owner_id=None))
    assert _send() == 0
    with bootstrap.context().db.uow(readonly=True) as uow:
        failed = uow.session.execute(select(Delivery).where(Delivery.address == "bob@example.com")).scalar_one()
        outbox = bootstrap.KIT_TABLES["outbox"]
        published = [json.loads(p) for p in uow.session.execute(select(outbox.c.payload)).scalars()]
    assert failed.status == "failed" and failed.attempts == 1 and "550" in failed.last_error
    [event] = [e for e in published if e["type"] == "delivery.failed"]
    assert event["data"]["recipient_id"] == "bob" and event["data"]["channel"] == "email"


def test_a_crash_between_sending_and_recording_sends_at_most_one_duplicate(crm, smtp, monkeypatch):
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4())), reason="rule",
                                                 previous_owner_id=None))

    @contextlib.contextmanager
    def crashing(_db):
        def record(*_):
            raise SystemExit("killed after sending")
        yield record

    with monkeypatch.context() as patched, pytest.raises(SystemExit):
        patched.setattr(email_delivery, "_recorder", crashing)
        _send()
    assert _send() == 0  # claimed by the sender that died: not yet
    assert _send(dt.datetime.now(dt.UTC) + email_delivery.CLAIM + dt.timedelta(seconds=1)) == 1
    assert _send(dt.datetime.now(dt.UTC) + 3 * email_delivery.CLAIM) == 0
    mails = smtp.wait_for("ann@example.com", 2)
    assert len(mails) == 2 and mails[0]["Message-ID"] == mails[1]["Message-ID"]  # the receiver can drop it


def test_the_morning_agenda_is_emailed_once_a_day_at_the_local_hour(crm, smtp):
    lead = _lead(str(uuid.uuid4()), due=T0 + dt.timedelta(hours=4))  # 14:00 in Shanghai
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    ctx = bootstrap.context()
    early, morning = dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC)
    for moment, told in ((early, 0), (morning, 1), (morning + dt.timedelta(hours=2), 0)):  # 07:00, 08:30, 10:30
        with ctx.db.uow() as uow:
            assert agenda.send_morning_agendas(uow, ctx.settings, moment) == told
            uow.commit()
    _send()
    [mail] = smtp.wait_for("ann@example.com")
    assert mail["Subject"] == "Your agenda for 2026-12-01" and "Acme Tools" in text_of(mail) and "14:00" in text_of(mail)
    assert smtp.messages("bob@example.com") == []  # nothing on bob's agenda: no e-mail
    with ctx.db.uow(readonly=True) as uow:  # an e-mail only: not in the inbox as unread
        note = uow.session.execute(select(Notification).where(Notification.type == "agenda")).scalar_one()
    assert note.read_at is not None


def test_a_schedule_that_was_down_fires_only_the_last_rung_it_missed(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    lead = _lead(str(uuid.uuid4()), due=T0)
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    assert _fire(T0 + dt.timedelta(days=4)) == 1 and _fire(T0 + dt.timedelta(days=4)) == 0
    assert [n["type"] for n in _inbox(ann)["items"]] == ["follow_up_overdue"]
    assert [n["type"] for n in _inbox(mia)["items"]] == ["follow_up_overdue"]
    assert _fire(T0 + dt.timedelta(days=40)) == 0  # the ladder is done; the agenda still lists it
    with bootstrap.context().db.uow(readonly=True) as uow:
        from crmkit.auth import Principal
        items = agenda.agenda(uow, Principal("ann", "rep", ("east",), ()), T0 + dt.timedelta(days=40),
                              T0 + dt.timedelta(days=41))
    assert [i["record_id"] for i in items["overdue"]] == [lead["id"]]


# ---- what the attack review found (each fixed) -------------------------------------------------------------
def test_a_name_with_a_line_break_and_an_address_the_server_refuses_hold_up_no_other_mail(crm, smtp):
    smtp.refuse.add("bob@example.com")
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), owner="bob", team="west",
                                                                        due=None), reason="rule", previous_owner_id=None))
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), due=None,
                                                                        company="Acme\r\nBcc: spy@evil.example"),
                                                 reason="rule", previous_owner_id=None))
    assert _send() == 1
    [mail] = smtp.wait_for("ann@example.com")
    assert mail["Subject"] == "New lead: Acme Bcc: spy@evil.example" and mail["Bcc"] is None
    assert smtp.messages("spy@evil.example") == []
    with bootstrap.context().db.uow(readonly=True) as uow:
        [failed] = uow.session.execute(select(Delivery).where(Delivery.status == "failed")).scalars().all()
    assert failed.last_error.startswith("550") and _send() == 0
    assert _set_address(crm.people["ann"], "ann@localhost") == 422  # never to a host of the CRM's own network
    for address in ("bö@example.com", "ann@[127.0.0.1]", "ann@metadata.internal"):
        assert _set_address(crm.people["ann"], address) == 422, address


def _set_address(caller, address: str) -> int:
    """The status of a PUT of the caller's preferences with this e-mail address."""
    current = caller.get("/notification-preferences")
    return caller.put("/notification-preferences", json={"language": "en", "time_zone": "UTC", "email": address},
                      headers={"If-Match": current.headers["ETag"]}).status_code


def test_a_deactivated_person_gets_no_mail_that_was_waiting(crm, smtp):
    _prefs(crm.people["ann"], quiet_hours={"start": "00:00", "end": "23:59"})
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), due=None), reason="rule",
                                                 previous_owner_id=None))
    crm.directory.put_user("ann", "rep", "east", active=False)
    assert _send(dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == 0
    with bootstrap.context().db.uow(readonly=True) as uow:
        assert [d.status for d in uow.session.execute(select(Delivery)).scalars()] == ["cancelled"]
    assert smtp.messages("ann@example.com") == []


def test_odd_producer_data_is_dead_lettered_not_retried(crm):
    from crmkit.consumer import Reject
    for lead in (_lead(str(uuid.uuid4()), due=dt.datetime(1, 1, 1, tzinfo=dt.UTC)), _lead("x" * 65),
                 {**_lead(str(uuid.uuid4())), "owner_id": "a\x00b"}):
        with pytest.raises(Reject):
            _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    assert _fire(dt.datetime.now(dt.UTC) + dt.timedelta(days=400)) == 0


def test_a_lead_that_comes_back_to_its_first_owner_reminds_them_again(crm):
    ann = crm.people["ann"]
    lead = _lead(str(uuid.uuid4()), due=T0)
    _deliver(raisers.leads_handlers, _lead_event("lead.created", lead))
    assert _fire(T0) == 1
    for owner, team in (("bob", "west"), ("ann", "east")):
        _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(lead["id"], owner=owner, team=team, due=T0),
                                                     actor="eve", previous_owner_id=None, reason="reassigned"))
    assert _fire(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)) == 1
    assert [n["type"] for n in _inbox(ann)["items"]][:2] == ["follow_up_due", "lead_assigned"]


def test_a_level_passed_is_not_news_to_the_requester_and_a_closed_approval_is_not_a_rejection(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    requested = _approval_event("approval.requested")
    ids = {"order_id": requested["data"]["approval"]["order_id"], "approval_id": requested["data"]["approval"]["id"]}
    _deliver(raisers.orders_handlers, requested)
    _deliver(raisers.orders_handlers, _approval_event("approval.decided", approver="eve", level="executive",
                                                      decision="approve", decided_by="mia", **ids))
    assert _inbox(ann)["items"] == []
    assert [n["type"] for n in _inbox(crm.people["eve"])["items"]] == ["approval_requested"]
    _deliver(raisers.orders_handlers, _approval_event("approval.decided", status="superseded", approver=None,
                                                      level=None, comment="closed: cancelled", **ids))
    [closed] = _inbox(ann)["items"]
    assert "closed" in closed["title"] and "reject" not in json.dumps(closed)
    assert mia.get("/agenda").json["approvals"] == [] and crm.people["eve"].get("/agenda").json["approvals"] == []


def test_a_digest_reader_still_gets_the_morning_agenda(crm, smtp):
    _prefs(crm.people["ann"], digest=True)
    lead = _lead(str(uuid.uuid4()), due=T0 + dt.timedelta(hours=4))
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", lead, reason="rule", previous_owner_id=None))
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        assert agenda.send_morning_agendas(uow, ctx.settings, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC)) == 1
        uow.commit()
    _send()
    assert [m["Subject"] for m in smtp.wait_for("ann@example.com")] == ["Your agenda for 2026-12-01"]


def test_the_agenda_window_is_bounded(crm):
    ann = crm.people["ann"]
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=90)).isoformat()
    for query in ({"to": far}, {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, {"from": "yesterday"}):
        r = ann.get("/agenda", query_string=query)
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json", query
    assert ann.get("/agenda", query_string={"from": "2026-12-01T00:00:00Z", "to": "2027-01-31T00:00:00Z"}).status_code == 200


# ---- webhooks ---------------------------------------------------------------------------------------------
@pytest.fixture
def receiver(monkeypatch):
    from tests.support.receiver import Receiver
    server = Receiver().start()
    monkeypatch.setenv("NOTIFICATIONS_WEBHOOK_ALLOW", server.allow)
    yield server
    server.stop()


def _hook(crm, url, events=("lead_assigned",)):
    return crm.people["root"].post("/webhooks", json={"url": url, "events": list(events)})


def _post_webhooks(moment=None):
    from services.notifications import webhook_delivery
    ctx = bootstrap.context()
    return webhook_delivery.send_all(ctx.db, ctx.settings, moment)


def _assign(owner="ann", team="east"):
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), owner=owner, team=team,
                                                                        due=None), reason="rule", previous_owner_id=None))


def test_webhook_targets_inside_the_network_are_refused(crm, receiver):
    for url in ("https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data", "https://10.0.0.1/",
                "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://[fd00:ec2::254]/", "https://localhost:8443/",
                "http://hooks.example.com/", "ftp://hooks.example.com/", "https://user:pw@hooks.example.com/",
                f"http://127.0.0.1:{receiver.port + 1}/", "https://[64:ff9b::a9fe:a9fe]/", "https://[2002:7f00:1::]/",
                "https://[::7f00:1]/", "https://[fec0::1]/", "https://[2001::1]/", "https://2130706433/",
                "https://0x7f.1/", "https://hooks.example.com:0/", "https://" + "a" * 64 + ".example.com/",
                "https://a..b.example.com/"):
        r = _hook(crm, url)
        assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", url
    for name in ("ann", "mia", "eve", "kim"):
        assert crm.people[name].post("/webhooks", json={"url": receiver.url, "events": ["*"]}).status_code == 403
        assert crm.people[name].get("/webhooks").status_code == 403
    for bad in ({"url": receiver.url, "events": []}, {"url": receiver.url, "events": ["nonsense"]}, {"url": receiver.url},
                {"url": receiver.url, "events": ["*"], "secret": "whsec_mine"}):
        assert crm.people["root"].post("/webhooks", json=bad).status_code == 422, bad


def test_a_webhook_is_signed_by_the_standard_and_a_failing_receiver_gets_one_message_three_times(crm, receiver):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    receiver.script = [500, 500, 200]
    created = _hook(crm, receiver.url)
    assert created.status_code == 201 and created.json["secret"].startswith("whsec_")
    hook_id = created.json["id"]
    assert "secret" not in crm.people["root"].get(f"/webhooks/{hook_id}").json
    assert [h["id"] for h in crm.people["root"].get("/webhooks").json["items"]] == [hook_id]
    _assign()
    now = dt.datetime.now(dt.UTC)
    assert _post_webhooks(now) == 0  # 500
    assert _post_webhooks(now + dt.timedelta(seconds=1)) == 0  # not yet due: 5 s
    assert _post_webhooks(now + dt.timedelta(seconds=6)) == 0  # 500 again
    assert _post_webhooks(now + dt.timedelta(minutes=6)) == 1  # 200
    got = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in got}) == 1 and len({r.body for r in got}) == 1
    verifier = Webhook(created.json["secret"])
    for request in got:
        payload = verifier.verify(request.body, request.headers)
        assert payload["type"] == "lead_assigned" and payload["data"]["recipient_id"] == "ann"
        assert "900" not in request.body.decode()  # the notification as its recipient sees it, nothing more
    with pytest.raises(WebhookVerificationError):  # a wrong secret does not verify
        Webhook("whsec_" + "A" * 32).verify(got[0].body, got[0].headers)
    assert crm.people["root"].get(f"/webhooks/{hook_id}").json["deliveries"]["sent"] == 1
    assert _post_webhooks(now + dt.timedelta(days=2)) == 0  # nothing more


def test_a_rotated_secret_signs_beside_the_old_one(crm, receiver):
    from standardwebhooks.webhooks import Webhook
    created = _hook(crm, receiver.url).json
    rotated = crm.people["root"].post(f"/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json["secret"] != created["secret"]
    _assign()
    assert _post_webhooks() == 1
    [request] = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], rotated.json["secret"]):
        Webhook(secret).verify(request.body, request.headers)


def test_410_disables_the_endpoint_and_tells_the_admins(crm, receiver):
    receiver.script = [410]
    hook_id = _hook(crm, receiver.url).json["id"]
    _assign()
    _assign()
    assert _post_webhooks() == 0
    endpoint = crm.people["root"].get(f"/webhooks/{hook_id}").json
    assert endpoint["status"] == "disabled" and "410" in endpoint["disabled_reason"]
    assert endpoint["deliveries"] == {"pending": 0, "sent": 0, "failed": 1, "cancelled": 1}
    [told] = [n for n in _inbox(crm.people["root"])["items"] if n["type"] == "delivery_failed"]
    assert hook_id in told["body"] and receiver.url not in told["body"]  # a URL may be the receiver's credential
    _assign()
    assert _post_webhooks(dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == 0 and len(receiver.received) == 1
    with bootstrap.context().db.uow(readonly=True) as uow:
        outbox = bootstrap.KIT_TABLES["outbox"]
        kinds = [json.loads(p)["type"] for p in uow.session.execute(select(outbox.c.payload)).scalars()]
    assert kinds.count("delivery.failed") == 1


def test_retries_run_out_over_about_a_day_then_the_endpoint_is_disabled_and_retry_after_is_honoured(crm, receiver):
    receiver.script = [(503, {"Retry-After": "3600"})] + [500] * 10
    hook_id = _hook(crm, receiver.url).json["id"]
    _assign()
    now = dt.datetime.now(dt.UTC)
    assert _post_webhooks(now) == 0
    assert _post_webhooks(now + dt.timedelta(minutes=59)) == 0 and len(receiver.received) == 1  # Retry-After: 1 h
    moment = now + dt.timedelta(hours=1, seconds=1)
    for _ in range(6):
        _post_webhooks(moment)
        moment += dt.timedelta(hours=11)
    assert len(receiver.received) == 7  # the first try and six retries (5 s ... 10 h)
    assert crm.people["root"].get(f"/webhooks/{hook_id}").json["status"] == "disabled"


def test_a_redirect_is_not_followed_and_a_name_that_now_resolves_inside_is_not_called(crm, receiver):
    from services.notifications.db import WebhookEndpoint
    from tests.support.receiver import Receiver
    inside = Receiver().start()  # not allow-listed: the CRM must never reach it
    try:
        receiver.script = [(302, {"Location": f"http://127.0.0.1:{inside.port}/steal"})]
        hook_id = _hook(crm, receiver.url).json["id"]
        _assign()
        assert _post_webhooks() == 0
        with bootstrap.context().db.uow() as uow:
            [delivery] = uow.session.execute(select(Delivery).where(Delivery.channel == "webhook")).scalars().all()
            assert "redirects are not followed" in delivery.last_error
            # The name it was given now resolves to this machine (as DNS rebinding would make it).
            uow.session.get(WebhookEndpoint, uuid.UUID(hook_id)).url = f"https://localhost:{inside.port}/hook"
            uow.commit()
        assert _post_webhooks(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)) == 0
        with bootstrap.context().db.uow(readonly=True) as uow:
            [delivery] = uow.session.execute(select(Delivery).where(Delivery.channel == "webhook")).scalars().all()
        assert delivery.last_error.startswith("refused") and delivery.attempts == 2
        assert inside.received == [] and len(receiver.received) == 1
    finally:
        inside.stop()


def test_a_person_may_keep_their_notifications_from_webhooks(crm, receiver):
    _hook(crm, receiver.url, events=("*",))
    _prefs(crm.people["ann"], channels={"lead_assigned": ["inapp", "email"]})
    _assign()
    _assign(owner="bob", team="west")
    assert _post_webhooks() == 1
    [request] = receiver.wait_for(1)
    assert json.loads(request.body)["data"]["recipient_id"] == "bob"
    assert crm.people["root"].delete(f"/webhooks/{uuid.uuid4()}").status_code == 404


def test_a_receiver_cannot_hold_the_sender_and_an_absurd_retry_after_is_capped(crm, receiver, monkeypatch):
    from services.notifications import webhook_delivery
    monkeypatch.setattr(webhook_delivery, "DEADLINE", 1.0)
    receiver.script = [(200, {}, 3), (503, {"Retry-After": "9" * 30}), (200, {"Retry-After": "9" * 5000})]
    _hook(crm, receiver.url)
    _assign()
    started = dt.datetime.now(dt.UTC)
    assert _post_webhooks() == 0  # the answer came too late: a failed attempt, not a stuck sender
    assert (dt.datetime.now(dt.UTC) - started).total_seconds() < 2.5
    with bootstrap.context().db.uow(readonly=True) as uow:
        [delivery] = uow.session.execute(select(Delivery).where(Delivery.channel == "webhook")).scalars().all()
    assert delivery.attempts == 1 and delivery.status == "pending"
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    assert _post_webhooks(moment) == 0  # 503, Retry-After: "forever"
    with bootstrap.context().db.uow(readonly=True) as uow:
        [delivery] = uow.session.execute(select(Delivery).where(Delivery.channel == "webhook")).scalars().all()
    assert dt.timedelta(hours=23) < delivery.next_attempt_at - moment <= dt.timedelta(days=1)
    assert _post_webhooks(moment + dt.timedelta(days=1, seconds=1)) == 1  # a 200 with nonsense
    assert _post_webhooks(dt.datetime.now(dt.UTC) + dt.timedelta(days=3)) == 0


def test_an_import_finished_or_failed_tells_whoever_uploaded_it(crm):
    _prefs(crm.people["kim"], language="en")
    job_id = str(uuid.uuid4())
    data = {"job_id": job_id, "requested_by": "kim", "filename": "expo.csv", "status": "completed", "rows": 10,
            "created": 7, "merged": 1, "claimed": 1, "rejected": 1, "failure": None}
    finished = new_event("lead_import.finished", job_id, data, source="leads", actor="kim")
    for _ in range(2):  # delivered twice
        _deliver(raisers.leads_handlers, finished)
    [told] = _inbox(crm.people["kim"])["items"]
    assert told["type"] == "import_finished" and told["link"] == f"/lead-imports/{job_id}"
    assert "expo.csv" in told["title"] and "7 leads created" in told["body"] and "1 rows rejected" in told["body"]
    assert finished["data"]["requested_by"] == "kim" and _inbox(crm.people["ann"])["items"] == []
    failed = new_event("lead_import.finished", job_id, {**data, "status": "failed", "failure": "the file is empty"},
                       source="leads", actor="kim")
    _deliver(raisers.leads_handlers, failed)
    assert [n["type"] for n in _inbox(crm.people["kim"])["items"]] == ["import_failed", "import_finished"]


def test_a_consumer_batch_reads_once_and_tells_as_one_event_at_a_time_would(crm):
    """The worker's batches (batch.prepare, then each event's handler, in one transaction): the same
    notifications, reminders and deliveries as one event at a time, a repeat inside the batch told once."""
    from services.notifications import batch
    leads = [_lead(str(uuid.uuid4()), owner=owner, team=team, due=T0) for owner, team in
             (("ann", "east"), ("bob", "west"), ("ann", "east"))]
    events = [_lead_event("lead.assigned", lead, reason="rule", previous_owner_id=None) for lead in leads]
    events.append(events[0])  # a repeat in the same batch
    ctx = bootstrap.context()
    table = raisers.leads_handlers(ctx.settings)
    with ctx.db.uow() as uow:
        batch.prepare(uow, events)
        for envelope in events:
            deliver(table, uow, envelope)
        uow.commit()
    assert [n["record_id"] for n in _inbox(crm.people["ann"])["items"]] == [leads[2]["id"], leads[0]["id"]]
    assert [n["record_id"] for n in _inbox(crm.people["bob"])["items"]] == [leads[1]["id"]]
    with ctx.db.uow(readonly=True) as uow:
        assert sorted(d.address for d in uow.session.execute(select(Delivery)).scalars()) == [
            "ann@example.com", "ann@example.com", "bob@example.com"]
    assert _fire(T0) == 3  # the three leads' reminders, kept in the batch


def test_a_deployment_runs_the_senders_apart_from_the_worker(crm, monkeypatch):
    """Under make run one worker does everything; deployed, the worker writes the inbox and the
    `sender` process sends (each e-mail sender claims its own deliveries, so several are safe only
    where SKIP LOCKED is: PostgreSQL)."""
    from services.notifications import worker
    everything = [loop.__name__ for loop in worker.worker_spec().loops]
    assert "email-sender-0" in everything and "webhook-sender" in everything
    monkeypatch.setenv("NOTIFICATIONS_SENDERS_IN_WORKER", "0")
    assert [loop.__name__ for loop in worker.worker_spec().loops] == ["reminders", "agenda"]
    sender = worker.sender_spec()
    expected = 4 if bootstrap.context().db.engine.dialect.name == "postgresql" else 1
    assert sender.part == "sender" and not sender.relay and not sender.consumers
    assert sorted(loop.__name__ for loop in sender.loops) == sorted(
        [f"email-sender-{n}" for n in range(expected)] + ["webhook-sender"])


# ---- what the review of the separate sender found (each fixed) -------------------------------------------
def _assign_to(owner: str, team: str) -> None:
    _deliver(raisers.leads_handlers, _lead_event("lead.assigned", _lead(str(uuid.uuid4()), owner=owner, team=team,
                                                                        due=None), reason="rule", previous_owner_id=None))


def test_an_address_with_a_control_character_is_refused_and_one_already_kept_fails_alone(crm, smtp):
    for address in ('"a\u000bX:1"@example.com', '"a\u000cb"@example.com', '"a b"@example.com'):
        assert _set_address(crm.people["bob"], address) == 422, address
    with bootstrap.context().db.uow() as uow:  # kept before the rule: it must not stop anyone else's mail
        uow.session.execute(update(Preference).where(Preference.user_id == "bob").values(email='"a\u000bX:1"@example.com'))
        uow.commit()
    _assign_to("bob", "west")
    _assign_to("ann", "east")
    assert _send() == 1
    assert len(smtp.wait_for("ann@example.com")) == 1
    with bootstrap.context().db.uow(readonly=True) as uow:
        statuses = {d.address: (d.status, d.last_error) for d in uow.session.execute(select(Delivery)).scalars()}
    assert statuses["ann@example.com"][0] == "sent"
    status, error = statuses['"a\u000bX:1"@example.com']
    assert status == "failed" and error.startswith("cannot be sent")


def test_a_sender_whose_claims_another_took_over_stops_its_batch(crm, smtp, monkeypatch):
    """A server that trickles its replies can outlast a claim; once another sender holds the batch,
    the first sends nothing more of it (each e-mail then goes at most twice, not the whole batch)."""
    for _ in range(3):
        _assign_to("ann", "east")
    real = email_delivery._recorder

    @contextlib.contextmanager
    def taken_over(db):
        with real(db) as record:
            def record_after_takeover(delivery_id, token):
                with db.uow() as uow:
                    uow.session.execute(update(Delivery).values(claimed_by="another-sender"))
                    uow.commit()
                return record(delivery_id, token)
            yield record_after_takeover

    monkeypatch.setattr(email_delivery, "_recorder", taken_over)
    assert _send() == 0
    assert len(smtp.wait_for("ann@example.com")) == 1
    time.sleep(0.5)
    assert len(smtp.messages("ann@example.com")) == 1  # not the other two
    with bootstrap.context().db.uow(readonly=True) as uow:
        rows = uow.session.execute(select(Delivery.status, Delivery.claimed_by)).all()
    assert sorted(rows) == [("pending", "another-sender")] * 3


def test_a_stopping_sender_gives_back_what_it_has_not_sent(crm, smtp):
    import threading

    for _ in range(2):
        _assign_to("ann", "east")
    stopped = threading.Event()
    stopped.set()
    ctx = bootstrap.context()
    assert email_delivery.send_all(ctx.db, ctx.settings, email_delivery.SmtpSettings.from_env(), stop=stopped) == 0
    with ctx.db.uow(readonly=True) as uow:
        assert uow.session.execute(select(Delivery.claimed_by)).scalars().all() == [None, None]
    assert _send() == 2  # at once, not when the claims would have lapsed


@pytest.mark.parametrize("sender", ["SFA CRM, Sales <crm@example.com>", "CRM <crm@example.com>\nBcc: x@evil.example",
                                    "销售 <销售@example.com>", "nobody"])
def test_a_sender_address_that_cannot_be_sent_from_stops_the_sender_at_start(monkeypatch, sender):
    monkeypatch.setenv("SMTP_FROM", sender)
    with pytest.raises(ValueError, match="SMTP_FROM"):
        email_delivery.SmtpSettings.from_env()
    monkeypatch.setenv("SMTP_FROM", "销售团队 <crm@example.com>")  # a display name in Chinese is fine
    assert email_delivery.SmtpSettings.from_env().sender == "销售团队 <crm@example.com>"


# ---- the rep's day (issue 18): visits on the agenda, daily reports told ------------------------------
def _visit_event(kind, visit_id, *, day="2026-12-03", planned="2026-12-03T02:00:00+00:00", owner="ann", team="east"):
    return new_event(kind, visit_id, {"visit": {
        "id": visit_id, "owner_id": owner, "team_id": team, "account_id": str(uuid.uuid4()), "lead_id": None,
        "kind": "visit", "planned_at": planned, "day": day, "purpose": "demo the new line", "status": "planned"},
        "manager_id": "mia"}, source="opportunities", actor=owner)


def _report_event(kind, report_id, *, day="2026-12-03", owner="ann", **extra):
    return new_event(kind, report_id, {"report": {"id": report_id, "owner_id": owner, "team_id": "east", "day": day,
                                                  "status": "submitted"}, "manager_id": "mia", **extra},
                     source="opportunities", actor=owner if kind.endswith("submitted") else "mia")


def test_a_planned_visit_and_its_days_report_sit_on_the_agenda_until_done_and_the_manager_hears(crm):
    ann, mia, bob = crm.people["ann"], crm.people["mia"], crm.people["bob"]
    visit_id, report_id = str(uuid.uuid4()), str(uuid.uuid4())
    _deliver(raisers.opportunities_handlers, _visit_event("visit.planned", visit_id))
    window = {"from": "2026-12-02T16:00:00Z", "to": "2026-12-03T16:00:00Z"}
    items = ann.get("/agenda", query_string=window).json["due"]
    assert sorted((i["record_type"], i["kind"], i["due_at"][:16], i["link"]) for i in items) == [
        ("daily_report", "daily_report", "2026-12-03T10:00", "/daily-reports?date=2026-12-03"),  # 18:00 Shanghai
        ("visit", "visit", "2026-12-03T02:00", f"/visits/{visit_id}")]
    assert bob.get("/agenda", query_string=window).json["due"] == []
    assert _fire(dt.datetime(2026, 12, 3, 2, 1, tzinfo=dt.UTC)) == 1  # the visit's time: Ann is reminded
    _deliver(raisers.opportunities_handlers, _visit_event("visit.checked_in", visit_id))
    _deliver(raisers.opportunities_handlers, _report_event("daily_report.submitted", report_id))
    assert ann.get("/agenda", query_string=window).json["due"] == []
    [told] = [n for n in _inbox(mia)["items"] if n["type"] == "daily_report_submitted"]
    assert "ann" in told["title"] and "2026-12-03" in told["title"] and told["link"] == f"/daily-reports/{report_id}"
    # A visit planned into that day afterwards does not ask for the report again.
    _deliver(raisers.opportunities_handlers, _visit_event("visit.planned", str(uuid.uuid4())))
    assert [i["record_type"] for i in ann.get("/agenda", query_string=window).json["due"]] == ["visit"]
    _deliver(raisers.opportunities_handlers, _report_event("daily_report.reviewed", report_id, comment="good work"))
    [reviewed] = [n for n in _inbox(ann)["items"] if n["type"] == "daily_report_reviewed"]
    assert "good work" in reviewed["body"]
    assert not [n for n in _inbox(bob)["items"] if n["type"].startswith("daily_report")]
