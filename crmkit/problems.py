"""The HTTP layer's own errors, answered as application/problem+json (RFC 9457, CONTRACT §3): what
only HTTP knows of (a bad header, a method a route does not take, a rate limit, an upstream down).
The domain's errors are crmkit.errors; crmkit.web maps those to statuses in one place."""
from __future__ import annotations

from http import HTTPStatus


class Problem(Exception):
    """An HTTP error with its status, title, detail, field errors and headers."""

    status = 400

    def __init__(self, detail: str | None = None, *, status: int | None = None,
                 title: str | None = None, errors: dict | None = None, headers: dict | None = None):
        super().__init__(detail or title or "")
        if status is not None:
            self.status = status
        self.title = title or HTTPStatus(self.status).phrase
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def to_dict(self) -> dict:
        body = {
            "type": f"https://sfa-crm.dev/problems/{self.status}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if self.errors:
            body["errors"] = self.errors
        return body
