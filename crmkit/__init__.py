"""crmkit: the plumbing every CRM service shares, and nothing domain-specific.

Event envelope, transactional outbox and relay, idempotent consumer with dead letters,
JWT claims and visibility filters, problem+json errors, pagination, ETags, idempotency keys,
metrics, JSON logging and settings. Services import this package; they never import each other.
"""
