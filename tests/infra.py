"""What the tests share: the local infrastructure helpers and the JWT secret of test tokens."""
import time

from infra.local import Broker, Postgres, read_topic

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"

__all__ = ["JWT_SECRET", "Broker", "Postgres", "read_topic", "wait_for"]


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.1, what: str = "condition"):
    """Poll until `predicate()` is truthy and return its value; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
