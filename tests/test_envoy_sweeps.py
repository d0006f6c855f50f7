"""The envoy agent's sweep logic (SPEC 10.9), driven without a broker: a batch of records
as the consumer hands them over, the real `EnvoyProcessor`, `Outputs` and `Metrics`, a
plain dict of encoded records as the table (its writer puts entries into the dict). The
partition is owned and caught up; the delivery guard lets all through.

- A lagging worker does not drop old ticks: it sweeps once, on the newest tick of the
  batch, as of that tick's record time, and reports how far behind the clock it was.
- The change is dated by the deadline that expired, whichever tick noticed it.
- The state that records a change is written only once the change is acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
from faust.types import TP

from processor.envoys import EnvoyProcessor
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.records import decode_stored_envoy
from processor.state import HeldTable
from projections.envoy import Rules
from projections.liveness import offline_deadline_ms
from tests.eventgen import T0
from topics.names import TopicNames
from topics.timestamps import iso_from_ms

NAMES = TopicNames("sw.")
INTERVAL_S = 60
NOW_S = T0 / 1000 + 7200  # the worker's clock: two hours after the envoy was last seen


class Topic:
    """A Faust topic as `Outputs` uses it: what is sent to it, each record with a future
    that the test acknowledges."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[bytes | None, bytes | None, asyncio.Future[Any]]] = []

    def get_topic_name(self) -> str:
        return self.name

    def send_soon(self, *, key: bytes | None, value: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, future))
        return future


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Let the event loop run until `condition()` holds (a poll with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


async def acknowledged(commit: asyncio.Future[None], topic: Topic, timeout: float = 10) -> None:
    """Acknowledge what the commit sends to `topic`, as it sends it, until it returns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not commit.done():
        assert loop.time() < deadline, "the commit never returned"
        for _, _, future in topic.sent:
            if not future.done():
                future.set_result(None)
        await asyncio.sleep(0.001)
    await commit


class Batches:
    """`faust_compat.BatchProducer` for these topics: one future per batch."""

    def __init__(self, *topics: Topic) -> None:
        self.topics = {topic.name: topic for topic in topics}

    async def send(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[int, asyncio.Future[Any]]]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.topics[topic].sent.extend((key, value, future) for key, value in records)
        return [(len(records), future)]

    async def send_keyed(
        self, topic: str, record: tuple[bytes | None, bytes | None]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.topics.setdefault(topic, Topic(topic)).sent.append((*record, future))
        return future


class Everything:
    """The guard and catch-up of a caught-up, owned partition 0."""

    def accept(self, tp: TP, offset: int) -> bool:
        return True

    def active_partitions(self) -> set[int]:
        return {0}

    def partition_caught_up(self, partition: int) -> bool:
        return True

    def settling(self, partition: int) -> bool:
        return False


class DictWriter:
    """Writes into the dict that stands for the table (the real `TableWriter` is
    exercised by the worker tests against the broker)."""

    def __init__(self, table: dict[bytes, bytes]) -> None:
        self.table = table

    async def write(self, entries: Any) -> None:
        for _partition, key, value in entries:
            if value is None:  # a delete (SPEC 10.3 purge): TableWriter's tombstone
                del self.table[key]
            else:
                self.table[key] = value


def record(topic: str, offset: int, timestamp_s: float, key: bytes, value: bytes) -> Any:
    message = SimpleNamespace(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=timestamp_s,
        key=key,
        value=value,
        tp=TP(topic, 0),
    )
    return message


RULES = Rules(default_interval_s=INTERVAL_S)


def processor(status: Topic, table: dict[bytes, bytes], rules: Rules = RULES) -> EnvoyProcessor:
    return EnvoyProcessor(
        table=table,  # type: ignore[arg-type]
        state=HeldTable(DictWriter(table)),  # type: ignore[arg-type]
        names=NAMES,
        status_topic=status,  # type: ignore[arg-type]
        deadletter_topic=Topic(NAMES.deadletter),  # type: ignore[arg-type]
        rules=rules,
        guard=Everything(),  # type: ignore[arg-type]
        catch_up=Everything(),  # type: ignore[arg-type]
        outputs=Outputs(Batches(status)),
        metrics=Metrics(),
        clock=lambda: NOW_S,
        max_event_bytes=1 << 20,
    )


def enroll_and_check_in(envoys: EnvoyProcessor) -> None:
    enrollment = {
        "schema": "vigo.enrollment/1",
        "envoy_id": "web-01",
        "action": "enrolled",
        "at": "2026-11-27T12:00:00Z",
    }
    envoys.process_batch(
        [record(NAMES.enrollments, 0, T0 / 1000, b"web-01", orjson.dumps(enrollment))]
    )


def tick(offset: int, at_s: float) -> Any:
    return record(NAMES.ticks, offset, at_s, b"tick", b"")


def test_a_lagging_worker_sweeps_on_the_newest_old_tick() -> None:
    async def go() -> None:
        status, table = Topic(NAMES.status_changes), dict[bytes, bytes]()
        envoys = processor(status, table)
        enroll_and_check_in(envoys)
        deadline_s = T0 / 1000 + 2 * INTERVAL_S
        # Three ticks, all far behind the clock: the first is before the deadline.
        ticks = [tick(0, deadline_s - 30), tick(1, deadline_s + 5), tick(2, deadline_s + 50)]
        envoys.process_batch(ticks)
        commit = asyncio.ensure_future(envoys.checkpoint())
        # The changes are sent when the batch is committed.
        await until(lambda: len(status.sent) >= 2, "the changes to be sent")
        changes = [orjson.loads(v) for _, v, _ in status.sent if v is not None]
        assert [c["to"] for c in changes] == ["no_data", "offline"]
        # Dated by the deadline that expired (strictly after enrolled + 2 x interval).
        assert changes[-1]["at"] == iso_from_ms(offline_deadline_ms(T0, INTERVAL_S))
        lag = envoys.metrics.sweep_lag._value.get()
        assert abs(lag - (NOW_S - (deadline_s + 50))) < 1e-6
        commit.cancel()

    asyncio.run(go())


def test_the_state_is_written_only_after_its_change_is_acknowledged() -> None:
    async def go() -> None:
        status, table = Topic(NAMES.status_changes), dict[bytes, bytes]()
        envoys = processor(status, table)
        enroll_and_check_in(envoys)
        commit = asyncio.ensure_future(envoys.checkpoint())
        await until(lambda: bool(status.sent), "the change to be sent")
        # The commit has sent the change and has nothing left to run until it is
        # acknowledged: let it take every turn of the loop it can (no clock involved).
        for _ in range(100):
            await asyncio.sleep(0)
        assert table == {} and not commit.done()  # the change is not acknowledged yet
        for _, _, future in status.sent:
            future.set_result(None)
        await commit
        assert decode_stored_envoy(table[b"web-01"]).state.version == 1

    asyncio.run(go())


LIFECYCLE = Rules(
    default_interval_s=INTERVAL_S, deactivate_after_ms=600_000, purge_after_ms=1_200_000
)


def test_an_inactive_envoy_leaves_the_counts_and_a_purged_one_the_table() -> None:
    """SPEC 10.3 in the agent: inactive at last seen + deactivate_after, counted beside
    active; purged purge_after later: `to: purged` published, then the key deleted (the
    writer gets a delete), the counts forget it; a later event starts it at version 1.
    After inactive and purge deadlines both passed (a long stop), one tick makes the
    envoy inactive and the next purges it, never the same change twice."""

    async def go() -> None:
        status, table = Topic(NAMES.status_changes), dict[bytes, bytes]()
        envoys = processor(status, table, LIFECYCLE)
        enroll_and_check_in(envoys)

        async def committed() -> list[dict[str, Any]]:
            await acknowledged(asyncio.ensure_future(envoys.checkpoint()), status)
            return [orjson.loads(v) for _, v, _ in status.sent if v is not None]

        await committed()
        assert envoys.counts_for(0).active == 1
        inactive_at = T0 + 600_000
        # Far past both deadlines: this tick makes it inactive (dated by its deadline)...
        envoys.process_batch([tick(0, T0 / 1000 + 3600)])
        changes = await committed()
        assert [c["to"] for c in changes] == ["no_data", "inactive"]
        assert changes[-1]["at"] == iso_from_ms(inactive_at)
        counts = envoys.counts_for(0)
        assert (counts.active, counts.inactive) == (0, 1)
        assert decode_stored_envoy(table[b"web-01"]).state.inactive_since_ms == inactive_at
        # ... and the next one purges it: published, then deleted.
        envoys.process_batch([tick(1, T0 / 1000 + 3601)])
        changes = await committed()
        assert [(c["to"], c["version"]) for c in changes[2:]] == [("purged", 3)]
        assert changes[-1]["at"] == iso_from_ms(inactive_at + 1_200_000)
        assert b"web-01" not in table
        counts = envoys.counts_for(0)
        assert (counts.active, counts.inactive) == (0, 0)
        # A rebuilt index agrees (from the table, as after a rebalance).
        envoys.forget_partitions({0})
        assert envoys.counts_for(0) == counts
        envoys.process_batch([tick(2, T0 / 1000 + 7200)])
        assert await committed() == changes  # nothing left to sweep
        # A later event starts a new envoy.
        checkin = {"schema": "vigo.checkin/1", "envoy_id": "web-01", "at": iso_from_ms(T0)}
        envoys.process_batch(
            [record(NAMES.checkins, 7, T0 / 1000 + 7300, b"web-01", orjson.dumps(checkin))]
        )
        changes = await committed()
        assert [(c["from"], c["to"], c["version"]) for c in changes[3:]] == [(None, "no_data", 1)]
        assert envoys.counts_for(0).active == 1

    asyncio.run(go())


def test_a_purge_and_an_event_in_one_batch() -> None:
    """The purge's delete is held in the batch: an event after it in the same batch
    starts the new envoy, and the table ends with that one."""

    async def go() -> None:
        status, table = Topic(NAMES.status_changes), dict[bytes, bytes]()
        envoys = processor(status, table, LIFECYCLE)
        enroll_and_check_in(envoys)
        envoys.process_batch([tick(0, T0 / 1000 + 3600)])
        checkin = {"schema": "vigo.checkin/1", "envoy_id": "web-01", "at": iso_from_ms(T0)}
        envoys.process_batch(
            [
                tick(1, T0 / 1000 + 3601),
                record(NAMES.checkins, 7, T0 / 1000 + 3602, b"web-01", orjson.dumps(checkin)),
            ]
        )
        await acknowledged(asyncio.ensure_future(envoys.checkpoint()), status)
        changes = [orjson.loads(v) for _, v, _ in status.sent if v is not None]
        assert [(c["to"], c["version"]) for c in changes] == [
            ("no_data", 1),
            ("inactive", 2),
            ("purged", 3),
            ("no_data", 1),
        ]
        assert decode_stored_envoy(table[b"web-01"]).state.version == 1
        counts = envoys.counts_for(0)
        assert (counts.active, counts.inactive) == (1, 0)

    asyncio.run(go())
