"""How each person wants to be told (GET/PUT /notification-preferences): the channels of each kind
of notification, quiet hours for e-mail, a daily digest instead of one e-mail each, their address,
language and time zone. A person without a saved document has the defaults."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from crmkit.db import UnitOfWork, utcnow

from .batch import current, load_people
from .db import Preference
from .messages import LANGUAGES, TYPES

CHANNELS = ("inapp", "email", "webhook")  # webhook: to the endpoints an admin subscribed to the type
# Told by e-mail too unless the person says otherwise: what needs them to act. Activities others log
# on your records, and each rep's daily report coming in, only show in the app (there can be many).
EMAIL_BY_DEFAULT = frozenset(TYPES) - {"activity_logged", "daily_report_submitted"}
EMAIL_ONLY = frozenset({"agenda"})  # the morning agenda is an e-mail; in the app it is GET /agenda


def default_language() -> str:
    language = os.environ.get("CRM_LANGUAGE", "zh")
    return language if language in LANGUAGES else "en"


def default_time_zone() -> str:
    return os.environ.get("CRM_TIME_ZONE", "Asia/Shanghai")


@dataclass(frozen=True)
class Preferences:
    user_id: str
    email: str | None = None
    language: str = "en"
    time_zone: str = "Asia/Shanghai"
    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    quiet_hours: dict | None = None
    digest: bool = False
    agenda_email: bool = True
    version: int = 0  # 0: never saved

    def wants(self, kind: str, channel: str) -> bool:
        return channel in self.channels.get(kind, ("inapp",))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def default_channels() -> dict[str, tuple[str, ...]]:
    return {kind: ("email",) if kind in EMAIL_ONLY
            else ("inapp", "email", "webhook") if kind in EMAIL_BY_DEFAULT else ("inapp", "webhook") for kind in TYPES}


def of(uow: UnitOfWork, user_id: str) -> Preferences:
    batch = current(uow)
    if batch is not None:
        load_people(uow, batch, [user_id])
        row = batch.preferences[user_id]
    else:
        row = uow.session.get(Preference, user_id)
    if row is None:
        return Preferences(user_id=user_id, language=default_language(), time_zone=default_time_zone(),
                           channels=default_channels())
    channels = {**default_channels(), **{k: tuple(v) for k, v in (row.channels or {}).items()}}
    return Preferences(user_id=user_id, email=row.email, language=row.language, time_zone=row.time_zone,
                       channels=channels, quiet_hours=row.quiet_hours, digest=row.digest,
                       agenda_email=row.agenda_email, version=row.version)


def save(uow: UnitOfWork, user_id: str, document: dict, check_version) -> Preferences:
    """Replace a person's preferences; `check_version(current)` applies If-Match (a first save has
    version 0). Types not named keep their defaults."""
    row = uow.session.get(Preference, user_id, with_for_update=True)
    check_version(row.version if row else 0)
    row = row or Preference(user_id=user_id)
    row.email, row.language, row.time_zone = document.get("email"), document["language"], document["time_zone"]
    row.channels = {k: sorted(set(v)) for k, v in document.get("channels", {}).items()}
    row.quiet_hours, row.digest = document.get("quiet_hours"), document.get("digest", False)
    row.agenda_email, row.updated_at = document.get("agenda_email", True), utcnow()
    uow.session.add(row)
    uow.session.flush()
    return of(uow, user_id)


def _clock(text: str) -> dt.time:
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))


def after_quiet_hours(prefs: Preferences, moment: dt.datetime) -> dt.datetime:
    """When an e-mail raised at `moment` may go: then, or when the person's quiet hours end (in
    their time zone). Quiet hours may span midnight (22:00-07:00)."""
    if not prefs.quiet_hours:
        return moment
    start, end = _clock(prefs.quiet_hours["start"]), _clock(prefs.quiet_hours["end"])
    local = moment.astimezone(prefs.zone)
    now = local.time()
    quiet = (start <= now < end) if start <= end else (now >= start or now < end)
    if not quiet:
        return moment
    day = local.date() if (start <= end or now < end) else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=prefs.zone).astimezone(dt.UTC)
