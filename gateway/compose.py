"""Views that span services, fetched in parallel with the caller's own token, so each service
filters its part by the caller's visibility (CONTRACT §4, gateway composition). A service that is
down leaves its part out and is named in `degraded`; the rest is still answered."""
from __future__ import annotations

import contextvars
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlencode

from crmkit.errors import NotFound
from crmkit.problems import Problem

from .upstream import Upstreams

log = logging.getLogger(__name__)

PART_TIMEOUT = 5.0  # seconds a part may take before it counts as degraded


@dataclass
class Outcome:
    service: str
    status: int | None  # None: the service could not be reached
    body: object = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def down(self) -> bool:
        return self.status is None or self.status >= 500


class Fetcher:
    """GETs against the upstreams on a shared thread pool, as the caller."""

    def __init__(self, upstreams: Upstreams, pool: ThreadPoolExecutor, headers: dict):
        self.upstreams = upstreams
        self.pool = pool
        self.headers = headers

    def get(self, service: str, path: str, params: dict | None = None) -> Future:
        query = f"?{urlencode(params)}" if params else ""
        # In the caller's context, so the request id follows into the pool's threads and their logs.
        future = self.pool.submit(contextvars.copy_context().run, self._get, service, path + query)
        future.service = service
        return future

    def _get(self, service: str, path: str) -> Outcome:
        try:
            answer = self.upstreams[service].request("GET", path, headers=self.headers, timeout=PART_TIMEOUT)
        except Problem as exc:
            return Outcome(service, None, exc.detail)
        try:
            return Outcome(service, answer.status, answer.json())
        except ValueError:
            return Outcome(service, None, "not JSON")

    @staticmethod
    def result(future: Future) -> Outcome:
        try:
            return future.result(timeout=PART_TIMEOUT + 1)
        except Exception as exc:  # noqa: BLE001 - a part that failed in any way is a degraded part
            future.cancel()
            log.warning("composition part from %s failed: %r", future.service, exc)
            return Outcome(future.service, None, str(exc))


def _items(outcome: Outcome) -> list | None:
    """A list part: its items; [] when the caller may not see it at all (403); None when down."""
    if outcome.ok and isinstance(outcome.body, dict):
        return list(outcome.body.get("items") or [])
    if outcome.status in (403, 404):
        return []
    return None


def customer_view(fetch: Fetcher, account_id: str) -> dict:
    account = fetch.get("opportunities", f"/api/v1/accounts/{account_id}")
    contacts = fetch.get("opportunities", f"/api/v1/accounts/{account_id}/contacts", {"limit": 200})
    opportunities = fetch.get("opportunities", "/api/v1/opportunities", {"account_id": account_id, "limit": 200})
    activities = fetch.get("opportunities", f"/api/v1/accounts/{account_id}/activities", {"limit": 20})
    orders = fetch.get("orders", "/api/v1/orders", {"account_id": account_id, "limit": 50})
    converted_leads = fetch.get("leads", "/api/v1/leads", {"account_id": account_id, "limit": 50})
    notifications = fetch.get("notifications", "/api/v1/notifications", {"account_id": account_id, "limit": 20})

    outcomes = {name: Fetcher.result(f) for name, f in {
        "account": account, "contacts": contacts, "opportunities": opportunities, "activities": activities,
        "orders": orders, "leads": converted_leads, "notifications": notifications}.items()}
    acct = outcomes["account"]
    if acct.status in (403, 404):
        raise NotFound("no such customer")  # absent, or not visible to the caller: the same answer
    degraded = sorted({o.service for o in outcomes.values() if o.down or (o.status not in (200, 403, 404))})

    leads = _items(outcomes["leads"])
    if acct.ok and leads is not None and (acct.body or {}).get("name"):
        # Also the leads of the same company that were never converted into this account.
        same_company = _items(Fetcher.result(fetch.get("leads", "/api/v1/leads",
                                                       {"company": acct.body["name"], "limit": 50})))
        if same_company is None:
            degraded = sorted(set(degraded) | {"leads"})
        else:
            seen = {lead["id"] for lead in leads}
            leads += [lead for lead in same_company if lead["id"] not in seen]

    opps = _items(outcomes["opportunities"])
    view = {
        "account_id": account_id,
        "account": acct.body if acct.ok else None,
        "contacts": _items(outcomes["contacts"]),
        "opportunities": None if opps is None else {
            "open": [o for o in opps if o.get("status") == "open"],
            "closed": [o for o in opps if o.get("status") != "open"]},
        "orders": _items(outcomes["orders"]),
        "leads": leads,
        "activities": _items(outcomes["activities"]),
        "notifications": _items(outcomes["notifications"]),
        "degraded": degraded,
    }
    if all(view[part] is None for part in ("account", "contacts", "opportunities", "orders", "leads",
                                           "activities", "notifications")):
        raise Problem("no service that holds this customer's records is available", status=503,
                      headers={"Retry-After": "5"})
    return view


def _rate(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def funnel(fetch: Fetcher, period_label: str) -> dict:
    """leads → qualified → opportunities → won, over what the caller may see."""
    lead_part = Fetcher.result(fetch.get("leads", "/api/v1/reports/lead-funnel", {"period": period_label}))
    deal_part = Fetcher.result(fetch.get("opportunities", "/api/v1/reports/opportunity-funnel",
                                         {"period": period_label}))
    degraded = sorted({p.service for p in (lead_part, deal_part) if not p.ok and p.status != 403})
    if lead_part.status == 400:
        raise Problem(f"bad period: {lead_part.body}", status=400)
    leads = lead_part.body if lead_part.ok else {}
    deals = deal_part.body if deal_part.ok else {}
    counts = {"leads": leads.get("leads"), "qualified": leads.get("qualified"),
              "opportunities": deals.get("opportunities"), "won": deals.get("won")}
    if all(v is None for v in counts.values()) and degraded:
        raise Problem("the services behind the funnel are unavailable", status=503, headers={"Retry-After": "5"})
    return {"period": period_label, **counts,
            "conversion": {"lead_to_qualified": _rate(counts["qualified"], counts["leads"]),
                           "qualified_to_opportunity": _rate(counts["opportunities"], counts["qualified"]),
                           "opportunity_to_won": _rate(counts["won"], counts["opportunities"]),
                           "lead_to_won": _rate(counts["won"], counts["leads"])},
            "degraded": degraded}
