"""The time a service's schedules go by. In production the wall clock. A test that works through a
month in minutes sets CRM_CLOCK_FILE to a file holding an ISO 8601 timestamp and rewrites it; the
deployment manifests never set it. Record timestamps (crmkit.db.utcnow) always follow the wall clock:
only schedules (what day it is for a daily job) read this one."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path


def now() -> dt.datetime:
    path = os.environ.get("CRM_CLOCK_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        if text:
            moment = dt.datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)
