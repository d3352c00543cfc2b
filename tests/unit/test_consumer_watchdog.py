"""The consumer's watchdog over kafka-python's group membership (pure logic: a fake client)."""
from __future__ import annotations

import pytest

from crmkit.consumer import ConsumerStalled, IdempotentConsumer
from crmkit.kafka import Membership


class FakeClient:
    def __init__(self, membership: Membership):
        self.crm_membership = membership


def _membership(*, made_ago: float) -> Membership:
    membership = Membership("g")
    membership.out_since -= made_ago  # made with its client, that long ago
    return membership


def _consumer(membership: Membership) -> IdempotentConsumer:
    return IdempotentConsumer(db=None, processed_table=None, consumer=FakeClient(membership), producer=None,
                              service="kittest", group_id="g", handlers={}, join_within=60.0)


def test_a_member_with_an_assignment_is_left_alone_however_old_its_client():
    membership = _membership(made_ago=3600)
    membership.on_partitions_assigned(set())  # a member beyond the partitions joins with nothing
    _consumer(membership)._check_joined()


def test_a_client_that_never_joined_is_given_join_within_from_when_it_was_made():
    _consumer(_membership(made_ago=30))._check_joined()
    with pytest.raises(ConsumerStalled, match="not joined for 9"):
        _consumer(_membership(made_ago=90))._check_joined()


def test_a_rebalance_that_never_ends_is_counted_from_when_it_took_the_partitions():
    membership = _membership(made_ago=3600)
    membership.on_partitions_assigned({"t-0"})
    membership.on_partitions_revoked({"t-0"})
    consumer = _consumer(membership)
    consumer._check_joined()  # a rebalance just began: not yet a stall
    membership.out_since -= 61
    with pytest.raises(ConsumerStalled, match="not joined for 61"):
        consumer._check_joined()
    membership.on_partitions_assigned({"t-0"})
    consumer._check_joined()
