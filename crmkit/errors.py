"""Errors that become application/problem+json responses (RFC 9457, CONTRACT §3)."""
from __future__ import annotations

from http import HTTPStatus


class Problem(Exception):
    """An error a client can act on. The service layer raises these; the HTTP layer renders them."""

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


class NotFound(Problem):
    status = 404


class Forbidden(Problem):
    status = 403


class Conflict(Problem):
    status = 409


class ValidationFailed(Problem):
    status = 422


class PreconditionFailed(Problem):
    status = 412


class PreconditionRequired(Problem):
    status = 428
