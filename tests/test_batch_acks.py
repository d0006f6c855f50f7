"""`InputBatches.ack` acks a batch per partition; what it leaves in Faust's consumer (the
acked offsets, their index, the count that triggers commits, and so the offset Faust
commits next) must be what Faust's own `Consumer.ack` leaves, record by record, for any
batch: duplicates, offsets below the committed one, gaps, partitions in any order."""

from __future__ import annotations

from typing import Any

from faust.types import TP, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.app import faust_app
from processor.config import Settings
from processor.faust_compat import InputBatches

TOPIC = "inp"
QUIET = "not-acked"


def consumer_of(app: Any) -> Any:
    app.topics._acking_topics.add(TOPIC)  # as Faust does for a topic of an acking channel
    return app.consumer


def message(topic: str, partition: int, offset: int) -> Message:
    tp = TP(topic, partition)
    return Message(topic, partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


def state(consumer: Any) -> tuple[Any, ...]:
    """What the next commit is computed from; a partition with no acked offset is left
    out (an empty entry and none commit the same: nothing)."""
    tps = sorted(
        tp for tp in set(consumer._acked) | set(consumer._acked_index) if consumer._acked[tp]
    )
    return (
        {tp: sorted(consumer._acked[tp]) for tp in tps},
        {tp: set(consumer._acked_index[tp]) for tp in tps},
        consumer._n_acked,
        {tp: consumer._new_offset(tp) for tp in tps},
    )


records = st.lists(
    st.tuples(st.sampled_from([TOPIC, QUIET]), st.integers(0, 2), st.integers(0, 40)),
    max_size=60,
)
committed = st.dictionaries(st.integers(0, 2), st.none() | st.integers(0, 30))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(records, min_size=1, max_size=3), committed_at=committed)
def test_a_batch_ack_leaves_what_faust_acks_leave(
    batches: list[list[tuple[str, int, int]]], committed_at: dict[int, int | None]
) -> None:
    settings_ = Settings.model_validate({})
    ours_app, faust_app_ = faust_app(settings_), faust_app(settings_)
    ours, theirs = consumer_of(ours_app), consumer_of(faust_app_)
    for consumer in (ours, theirs):
        for partition, offset in committed_at.items():
            consumer._committed_offset[TP(TOPIC, partition)] = offset
    inputs = InputBatches(ours_app, frozenset({TOPIC, QUIET}), max_records=100)
    for batch in batches:
        inputs.ack([message(*r) for r in batch])
        for r in batch:
            theirs.ack(message(*r))
    assert state(ours) == state(theirs)


def test_a_message_acked_twice_counts_once() -> None:
    app = faust_app(Settings.model_validate({}))
    consumer = consumer_of(app)
    inputs = InputBatches(app, frozenset({TOPIC}), max_records=100)
    batch = [message(TOPIC, 0, 0), message(TOPIC, 0, 1)]
    inputs.ack(batch)
    inputs.ack(batch)
    assert consumer._n_acked == 2
    assert consumer._new_offset(TP(TOPIC, 0)) == 2
