"""What the tests share: the local infrastructure helpers and the JWT secret of test tokens."""
from infra.local import Broker, Postgres, read_topic

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"

__all__ = ["JWT_SECRET", "Broker", "Postgres", "read_topic"]
