"""Issue 17 through the edge, with real processes, Kafka, PostgreSQL and a real SMTP server: run in the
opportunities module's stack (tests/e2e/test_opportunities_e2e.py), so no stack of its own is
started. The schedules read a clock the test moves (crmkit.clock); nobody sleeps for a day."""
from __future__ import annotations

import datetime as dt
import time
import uuid

from crmkit.events import new_event
from tests.e2e.gateway_stack import wait_replicated
from tests.e2e.helpers import envelopes, produce
from tests.infra import read_topic, wait_for
from tests.support.smtp import text_of


def _inbox(session, crm, **query) -> list[dict]:
    r = session.get(crm.api("/notifications"), params=query)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _of_type(session, crm, kind: str) -> list[dict]:
    return [n for n in _inbox(session, crm, limit=200) if n["type"] == kind]


def _set_clock(crm, moment: dt.datetime | None) -> None:
    path = crm.state_dir / "clock"
    if moment is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(moment.isoformat())


def _email_me(crm, name: str, **fields) -> None:
    session = crm.as_(name)
    current = session.get(crm.api("/notification-preferences"))
    body = {k: v for k, v in current.json().items() if k not in ("user_id", "version")}
    r = session.put(crm.api("/notification-preferences"), json={**body, "email": f"{name}@example.com",
                                                               "language": "en", **fields},
                    headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text


def setup_people(crm) -> None:
    names = ("ann", "amy", "bo", "mgr-east", "mgr-west", "mkt")
    wait_replicated(crm, *(crm.users[n]["id"] for n in names), service="notifications")
    for name in names:
        _email_me(crm, name)


def lead_assignment_reminders_and_the_ladder(crm) -> None:
    """A lead assigned by rule: the rep's inbox and e-mail; its follow-up falls due: reminded; three
    days with nothing logged: the rep and the manager; an activity logged: the ladder stops."""
    amy, manager, admin = crm.as_("amy"), crm.as_("mgr-east"), crm.as_("admin")
    region = f"notify-{uuid.uuid4().hex[:6]}"
    rules = admin.get(crm.api("/lead-assignment-rules"))
    r = admin.put(crm.api("/lead-assignment-rules"), headers={"If-Match": rules.headers["ETag"]}, json={"rules": [
        *rules.json()["rules"], {"name": f"to amy {region}", "match": {"region": region},
                                 "assign_to": {"user_id": crm.users["amy"]["id"]}}]})
    assert r.status_code == 200, r.text
    company = f"Reminder Works {uuid.uuid4().hex[:6]}"
    r = crm.as_("mkt").post(crm.api("/leads"), json={"company": company, "contact_name": "Wu Fang",
                                                     "email": f"wu-{uuid.uuid4().hex[:6]}@example.com", "region": region,
                                                     "source": "event"})
    assert r.status_code == 201, r.text
    lead = r.json()
    wait_for(lambda: amy.get(crm.api(f"/leads/{lead['id']}")).json().get("owner_id") == crm.users["amy"]["id"],
             what="the lead assigned to amy by the rule")
    wait_for(lambda: _of_type(amy, crm, "lead_assigned"), what="amy told of her new lead")
    [told] = [n for n in _of_type(amy, crm, "lead_assigned") if n["record_id"] == lead["id"]]
    assert company in told["title"] and told["link"] == f"/leads/{lead['id']}"
    [mail] = [m for m in crm.smtp.wait_for("amy@example.com") if company in m["Subject"]]
    assert told["body"] in text_of(mail) and mail.get_body(preferencelist=("html",)) is not None

    due = dt.datetime.fromisoformat(amy.get(crm.api(f"/leads/{lead['id']}")).json()["follow_up_due_at"])
    try:
        _set_clock(crm, due + dt.timedelta(minutes=1))
        wait_for(lambda: [n for n in _of_type(amy, crm, "follow_up_due") if n["record_id"] == lead["id"]],
                 what="the follow-up reminder")
        assert not [n for n in _of_type(manager, crm, "follow_up_overdue") if n["record_id"] == lead["id"]]
        agenda = amy.get(crm.api("/agenda"), params={"from": (due - dt.timedelta(hours=1)).isoformat(),
                                                     "to": (due + dt.timedelta(hours=1)).isoformat()})
        assert agenda.status_code == 200 and lead["id"] in [i["record_id"] for i in agenda.json()["due"]]
        _set_clock(crm, due + dt.timedelta(days=3, minutes=1))
        wait_for(lambda: [n for n in _of_type(manager, crm, "follow_up_overdue") if n["record_id"] == lead["id"]],
                 what="three days without activity: the manager told")
        assert [n for n in _of_type(amy, crm, "follow_up_overdue") if n["record_id"] == lead["id"]]
        # Amy works the lead: the ladder stops (her next contact is ten days on).
        r = amy.post(crm.api(f"/leads/{lead['id']}/activities"), json={
            "kind": "call", "summary": "spoke with Wu", "next_contact_at": (due + dt.timedelta(days=10)).isoformat()})
        assert r.status_code == 201, r.text
        wait_for(lambda: crm.sql("notifications", "select status from reminders where record_id = %s",
                                 lead["id"])[0][0] == "open" and crm.sql(
            "notifications", "select due_at from reminders where record_id = %s", lead["id"])[0][0] > due
            + dt.timedelta(days=5), what="the reminder moved to the next contact")
        before = (len(_inbox(amy, crm, limit=200)), len(_inbox(manager, crm, limit=200)))
        _set_clock(crm, due + dt.timedelta(days=6))
        time.sleep(2)  # four runs of the schedule
        assert (len(_inbox(amy, crm, limit=200)), len(_inbox(manager, crm, limit=200))) == before
    finally:
        _set_clock(crm, None)


def collision_told_once(crm, opportunity_ids: tuple[str, str]) -> None:
    """The seeds' collision (Ann's deal and Bo's): both owners and both managers told once each, of
    their own deal only, even when the event is delivered three times."""
    sessions = {n: crm.as_(n) for n in ("ann", "bo", "mgr-east", "mgr-west")}
    own = {"ann": opportunity_ids[0], "mgr-east": opportunity_ids[0], "bo": opportunity_ids[1],
           "mgr-west": opportunity_ids[1]}
    for name, session in sessions.items():
        wait_for(lambda s=session: _of_type(s, crm, "collision"), what=f"{name} told of the collision")
    topic = f"{crm.topic_prefix}crm.opportunities.v1"
    detected = [e for e in envelopes(read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, timeout_ms=500))
                if e["type"] == "opportunity.collision_detected" and e["subject"] == opportunity_ids[1]]
    produce(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, detected * 3)
    time.sleep(2)
    for name, session in sessions.items():
        told = [n for n in _of_type(session, crm, "collision") if n["record_id"] in opportunity_ids]
        assert [n["record_id"] for n in told] == [own[name]], (name, told)
        other = opportunity_ids[1] if own[name] == opportunity_ids[0] else opportunity_ids[0]
        assert other not in str(told)
    assert not [n for n in _of_type(crm.as_("amy"), crm, "collision") if n["record_id"] in opportunity_ids]


def inbox_privacy_and_bad_input(crm) -> None:
    amy, bo, mkt = crm.as_("amy"), crm.as_("bo"), crm.as_("mkt")
    mine = _inbox(amy, crm)
    assert mine and all(n["recipient_id"] == crm.users["amy"]["id"] for n in mine)
    for other in (bo, mkt, crm.as_("exec")):
        r = other.post(crm.api(f"/notifications/{mine[0]['id']}/read"))
        assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
        assert mine[0]["id"] not in str(_inbox(other, crm, limit=200))
    for query in ({"unread": "perhaps"}, {"limit": "100000"}, {"account_id": "x"}):
        r = amy.get(crm.api("/notifications"), params=query)
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json", query
    r = amy.get(crm.api("/agenda"), params={"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"})
    assert r.status_code in (400, 422) and r.headers["Content-Type"] == "application/problem+json"
    r = amy.put(crm.api("/notification-preferences"), json={"language": "en", "time_zone": "Nowhere/Land"},
                headers={"If-Match": amy.get(crm.api("/notification-preferences")).headers["ETag"]})
    assert r.status_code == 422
    unread = amy.get(crm.api("/notifications"), params={"unread": "true"}).json()
    assert unread["unread_count"] == len(unread["items"]) > 0
    assert amy.post(crm.api("/notifications/read-all")).json()["read"] == unread["unread_count"]
    assert amy.get(crm.api("/notifications")).json()["unread_count"] == 0


def activity_on_the_customer_shows_in_the_customer_view(crm, account_id: str) -> None:
    """Someone else logs a visit on Ann's account: Ann is told, and her customer view lists it."""
    r = crm.as_("mgr-east").post(crm.api(f"/accounts/{account_id}/activities"),
                                 json={"kind": "visit", "summary": "met the CIO with Ann"})
    assert r.status_code == 201, r.text
    ann = crm.as_("ann")
    wait_for(lambda: _of_type(ann, crm, "activity_logged"), what="ann told of the visit")
    view = ann.get(crm.api(f"/customers/{account_id}")).json()
    assert view["degraded"] == [] and [n["body"] for n in view["notifications"]] == ["met the CIO with Ann"]
    assert crm.as_("bo").get(crm.api(f"/customers/{account_id}")).status_code == 404


def smtp_outage_delivers_everything_once(crm) -> None:
    """The SMTP server stopped for 30 s: every e-mail goes after it returns, none twice."""
    amy = crm.as_("amy")
    # What earlier steps queued is sent first: an e-mail the server takes in the instant it is
    # stopped, before its "250" reaches the sender, is sent again (at least once, under the same
    # Message-ID), which is SMTP's nature and not what this step is about.
    wait_for(lambda: crm.sql("notifications", "select count(*) from deliveries where channel = 'email' and "
                             "status = 'pending' and (next_attempt_at <= now() or claimed_by is not null)")[0][0] == 0,
             what="the e-mails queued so far sent")
    before = len(crm.smtp.messages("amy@example.com"))
    crm.smtp.stop()
    try:
        bootstrap = crm.env["KAFKA_BOOTSTRAP_SERVERS"]
        events = [new_event("approval.requested", str(uuid.uuid4()), {"approval": {
            "id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()), "order_number": f"SO-OUTAGE-{i}",
            "owner_id": crm.users["ann"]["id"], "team_id": crm.teams["east"]["id"], "status": "pending", "reasons": [],
            "steps": [], "current_approver_id": crm.users["amy"]["id"], "current_level": "manager",
            "requested_by": crm.users["ann"]["id"], "created_at": "2026-12-01T00:00:00Z", "closed_at": None}},
            source="orders", actor=crm.users["ann"]["id"]) for i in range(3)]
        produce(bootstrap, f"{crm.topic_prefix}crm.orders.v1", events)
        wait_for(lambda: len(_of_type(amy, crm, "approval_requested")) >= 3, what="in the app while mail is down")
        time.sleep(30)
        assert len(crm.smtp.messages("amy@example.com")) == before
    finally:
        crm.smtp.start()
    mails = crm.smtp.wait_for("amy@example.com", before + 3, timeout=60)
    time.sleep(3)
    mails = crm.smtp.messages("amy@example.com")
    outage = [m for m in mails if "SO-OUTAGE-" in m["Subject"]]
    assert sorted(m["Subject"] for m in outage) == [f"Order SO-OUTAGE-{i} waits for your approval" for i in range(3)]
    assert len({m["Message-ID"] for m in mails}) == len(mails)  # none twice


def webhooks_signed_retried_and_guarded(crm) -> None:
    """An admin's endpoint gets each lead assignment, signed so a Standard Webhooks library verifies
    it; a receiver that answers 500 twice then 200 gets one message three times under one id; 410
    disables the endpoint; targets inside the network are refused."""
    from standardwebhooks.webhooks import Webhook

    admin, receiver = crm.as_("admin"), crm.receiver
    for url in ("https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/hook",
                "https://[::1]/hook", "https://localhost/hook", f"http://127.0.0.1:{receiver.port + 1}/hook"):
        r = admin.post(crm.api("/webhooks"), json={"url": url, "events": ["*"]})
        assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", url
    assert crm.as_("amy").post(crm.api("/webhooks"), json={"url": receiver.url, "events": ["*"]}).status_code == 403
    created = admin.post(crm.api("/webhooks"), json={"url": receiver.url, "events": ["approval_requested"]})
    assert created.status_code == 201, created.text
    hook = created.json()
    receiver.script = [500, 500, 200]
    base = len(receiver.received)
    produce(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.orders.v1", [_approval("SO-HOOK-1", crm)])
    receiver.wait_for(base + 2, timeout=60)  # at once, then 5 s later
    try:
        _set_clock(crm, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6))  # the third try is 5 minutes on
        got = receiver.wait_for(base + 3, timeout=60)[base:]
    finally:
        _set_clock(crm, None)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    for request in got:
        payload = Webhook(hook["secret"]).verify(request.body, request.headers)
        assert payload["type"] == "approval_requested" and "SO-HOOK-1" in payload["data"]["title"]
    wait_for(lambda: admin.get(crm.api(f"/webhooks/{hook['id']}")).json()["deliveries"]["sent"] == 1,
             what="the delivery recorded as sent")
    receiver.script = [410]
    produce(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.orders.v1", [_approval("SO-HOOK-2", crm)])
    wait_for(lambda: admin.get(crm.api(f"/webhooks/{hook['id']}")).json()["status"] == "disabled",
             what="410 disables the endpoint")
    wait_for(lambda: _of_type(admin, crm, "delivery_failed"), what="the admin told")
    assert admin.delete(crm.api(f"/webhooks/{hook['id']}")).status_code == 204
    assert admin.get(crm.api(f"/webhooks/{hook['id']}")).status_code == 404


def _approval(number: str, crm) -> dict:
    return new_event("approval.requested", str(uuid.uuid4()), {"approval": {
        "id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()), "order_number": number,
        "owner_id": crm.users["ann"]["id"], "team_id": crm.teams["east"]["id"], "status": "pending", "reasons": [],
        "steps": [], "current_approver_id": crm.users["mgr-east"]["id"], "current_level": "manager",
        "requested_by": crm.users["ann"]["id"], "created_at": "2026-12-01T00:00:00Z", "closed_at": None}},
        source="orders", actor=crm.users["ann"]["id"])
