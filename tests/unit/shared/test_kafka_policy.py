"""The commit policy and the dead-letter budget (pure parts of the Kafka plumbing)."""

from __future__ import annotations

import pytest

from shared.kafka import CommitPolicy, DeadLetterBudget, DeadLetterBudgetExceeded, TopicPartition

TP = TopicPartition("t", 0)


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


async def test_commit_policy_never_moves_backwards_and_sends_only_changes() -> None:
    policy = CommitPolicy()
    consumer = RecordingConsumer()
    policy.advance(TP, 5)
    policy.advance(TP, 3)  # older finished work does not move the offset back
    await policy.commit(consumer)  # type: ignore[arg-type]
    await policy.commit(consumer)  # nothing new: nothing sent
    policy.advance(TP, 5)  # already committed
    await policy.commit(consumer)  # type: ignore[arg-type]
    assert consumer.commits == [{TP: 5}]


async def test_commit_policy_can_commit_only_some_partitions() -> None:
    other = TopicPartition("t", 1)
    policy = CommitPolicy()
    consumer = RecordingConsumer()
    policy.advance(TP, 2)
    policy.advance(other, 7)
    await policy.commit(consumer, only={other})  # type: ignore[arg-type]
    assert consumer.commits == [{other: 7}]
    assert policy.pending() == {TP: 2}


def test_dead_letter_budget() -> None:
    budget = DeadLetterBudget(limit=2, window_s=10)
    budget.spend(0.0)
    budget.spend(1.0)
    with pytest.raises(DeadLetterBudgetExceeded):
        budget.spend(2.0)  # a third within 10 s: stop rather than drain the topic
    budget.spend(11.5)  # the first two have left the window
