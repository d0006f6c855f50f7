"""`InputBatches._fetched` is Faust's `Consumer.getmany` with the end offset tracked once
per partition and fetch. Run side by side with Faust's own method on the same fetched
records, while partitions are paused and resumed between the records handed on (recovery
resumes its changelogs that way), it must hand on the same records in the same order:
a record it leaves out is never fetched again (a chaos soak's recovery waited forever for
one). The consumer here is a stand-in with the attributes both methods read; the
scheduler is Faust's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.faust_compat import InputBatches

TPS = [TP(topic, partition) for topic in ("runs", "changelog") for partition in (0, 1)]


class FetchedRecords:
    """What `getmany` reads of a consumer: one fetch's records, the active partitions (the
    same set object the consumer mutates on pause and resume), the flow, the generation."""

    def __init__(self, records: dict[TP, list[int]], active: set[TP], app: Any) -> None:
        self.records = records
        self.active = active
        self.app = app
        self.scheduler = DefaultSchedulingStrategy()  # type: ignore[abstract]
        self._buffered_partitions: set[TP] = set()
        self.flow_active = True
        self.should_stop = False
        self.log = SimpleNamespace(dev=lambda *args, **kwargs: None)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP]]:
        return dict(self.records), self.active

    def highwater(self, tp: TP) -> int:
        return 1000 + tp.partition

    def _to_message(self, tp: TP, record: int) -> tuple[TP, int]:
        return tp, record


Change = tuple[int, str, int]  # after how many records, what, which partition


def handed_on(
    records: dict[TP, list[int]], active: set[TP], changes: list[Change], ours: bool
) -> tuple[list[Any], dict[TP, int]]:
    ends: dict[TP, int] = {}
    app = SimpleNamespace(
        consumer_generation_id=1,
        monitor=SimpleNamespace(track_tp_end_offset=ends.__setitem__),
    )
    consumer = FetchedRecords(records, set(active), app)
    stream: AsyncIterator[Any]
    if ours:
        batches = InputBatches(app, frozenset({"runs"}), max_records=100)  # type: ignore[arg-type]
        stream = batches._fetched(consumer)
    else:
        stream = Consumer.getmany(consumer, timeout=1.0)  # type: ignore[arg-type]

    async def drain() -> list[Any]:
        out = []
        async for item in stream:
            out.append(item)
            for after, what, index in changes:
                if after == len(out):
                    tp = TPS[index]
                    if what == "resume":
                        consumer.active.add(tp)
                    elif what == "pause":
                        consumer.active.discard(tp)
                    elif what == "buffer":
                        consumer._buffered_partitions.add(tp)
                    elif what == "rebalance":
                        app.consumer_generation_id += 1
                    else:
                        consumer.flow_active = False
        return out

    return asyncio.run(drain()), ends


fetches = st.dictionaries(
    st.sampled_from(TPS), st.lists(st.integers(0, 99), min_size=1, max_size=6), min_size=1
)
changes = st.lists(
    st.tuples(
        st.integers(1, 12),
        st.sampled_from(["resume", "pause", "buffer", "rebalance", "stop"]),
        st.integers(0, len(TPS) - 1),
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(records=fetches, active=st.sets(st.sampled_from(TPS)), changes=changes)
def test_the_same_records_are_handed_on_as_by_faust(
    records: dict[TP, list[int]], active: set[TP], changes: list[Change]
) -> None:
    ours, our_ends = handed_on(records, active, changes, ours=True)
    theirs, their_ends = handed_on(records, active, changes, ours=False)
    assert ours == theirs
    assert our_ends == their_ends  # the same partitions' end offsets, for the lag metric


def test_a_partition_resumed_while_records_are_handed_on_gets_its_records() -> None:
    """The case the chaos soak met: the changelog resumed after the first record."""
    records = {TPS[0]: [1, 2, 3], TPS[2]: [7, 8]}
    out, _ = handed_on(records, {TPS[0]}, [(1, "resume", 2)], ours=True)
    assert [message[1] for tp, message in out if tp == TPS[2]] == [7, 8]
