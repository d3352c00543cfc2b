"""What went wrong, in the domain's words. Use cases and domain rules raise these, and know nothing of
HTTP: crmkit.web maps each kind to its status and renders problem+json in one place
(`DOMAIN_STATUS`). The HTTP layer's own errors (a bad header, a rate limit) are crmkit.problems."""
from __future__ import annotations


class DomainError(Exception):
    """Something the caller can act on: `detail` says what, `errors` which field, `retry_after` when a
    retry may succeed (in seconds)."""

    def __init__(self, detail: str, *, errors: dict | None = None, retry_after: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after


class NotFound(DomainError):
    """No such record, or one the caller may not see: the same answer, so it tells them nothing."""


class Forbidden(DomainError):
    """The caller may see it, but may not do this."""


class Conflict(DomainError):
    """The record's state does not allow it now (closed, converted, in use), or another request is on it."""


class ValidationFailed(DomainError):
    """The input is wrong; `errors` says which field and why."""


class StaleVersion(DomainError):
    """The record changed since the caller read the version they sent."""


class VersionRequired(DomainError):
    """A change that does not say which version of the record it applies to."""
