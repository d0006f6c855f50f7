"""The envoys table keeps each envoy encoded (the memory store holds what it is
given), and the agent reads it through the codec: a worker that finds a table restored
from a changelog written in any format (3, or JSON format 2 of the last release) counts,
schedules, sweeps and lists from it, and writes format 3 back. Driven without a broker,
as in `test_envoy_sweeps`."""

from __future__ import annotations

import asyncio

import orjson

from processor.records import (
    ENVOY_FORMAT,
    StoredEnvoy,
    decode_envoy_head,
    decode_stored_envoy,
    encode_stored_envoy,
)
from projections.envoy import EnvoyState, Rules, apply_event
from projections.fleet import FleetCounts
from tests.eventgen import T0, checkin, enrolled, run
from tests.test_envoy_sweeps import INTERVAL_S, NAMES, Topic, processor, tick, until
from tests.test_state_codec import format2
from topics.events import InputEvent
from topics.statuses import Status

RULES = Rules(default_interval_s=INTERVAL_S)


def state_of(*events: InputEvent) -> EnvoyState:
    state: EnvoyState | None = None
    for i, event in enumerate(events):
        state = apply_event(state, event, T0 + i, RULES).state
    assert state is not None
    return state


def restored_table() -> dict[bytes, bytes]:
    """Three envoys as a restored changelog leaves them: one in format 3, one in format 2
    (JSON), and one of a partition this worker does not own."""
    converged = state_of(enrolled("web-01"), run("ok", envoy="web-01"))
    drifted = state_of(enrolled("web-02"), run("changed", envoy="web-02"))
    other = state_of(enrolled("web-03"), checkin("web-03"))
    return {
        b"web-01": encode_stored_envoy(StoredEnvoy(0, converged)),
        b"web-02": format2(StoredEnvoy(0, drifted)),
        b"web-03": encode_stored_envoy(StoredEnvoy(1, other)),
    }


def test_a_restored_table_of_any_format_is_counted_and_listed() -> None:
    table = restored_table()
    envoys = processor(Topic(NAMES.status_changes), table)
    assert envoys.counts_for(0) == FleetCounts.of_statuses([Status.CONVERGED, Status.DRIFTED])
    assert envoys.counts_for(1) == FleetCounts.of_statuses([Status.NO_DATA])
    web_02 = envoys.owned("web-02")
    assert web_02 is not None and web_02 == decode_stored_envoy(table[b"web-02"]).state
    assert envoys.owned("web-03") is None  # not an owned partition
    assert envoys.owned("web-04") is None

    def listed(**query: object) -> list[str]:
        return [s.envoy_id for s in envoys.owned_envoys(**query)]  # type: ignore[arg-type]

    assert sorted(listed()) == ["web-01", "web-02"]
    assert listed(after="web-01") == ["web-02"]
    assert listed(first=1) == ["web-01"]
    assert listed(statuses={Status.DRIFTED}) == ["web-02"]
    assert listed(statuses={Status.OFFLINE}) == []


def test_a_restored_table_of_any_format_is_swept_and_written_back_as_format_3() -> None:
    async def go() -> None:
        status, table = Topic(NAMES.status_changes), restored_table()
        envoys = processor(status, table)
        # Past every offline deadline: both owned envoys go offline, from their heads'
        # deadlines (the JSON one's too); the other partition's envoy is not touched.
        envoys.process_batch([tick(0, T0 / 1000 + 10 * INTERVAL_S)])
        before = table[b"web-03"]
        commit = asyncio.ensure_future(envoys.checkpoint())
        # The changes are sent when the batch is committed.
        await until(lambda: len(status.sent) >= 2, "the changes to be sent")
        changes = [orjson.loads(v) for _, v, _ in status.sent if v is not None]
        assert sorted((c["envoy_id"], c["to"]) for c in changes) == [
            ("web-01", "offline"),
            ("web-02", "offline"),
        ]
        for future in {future for _, _, future in status.sent}:  # one per batch
            future.set_result(None)
        await commit
        for key in (b"web-01", b"web-02"):
            assert decode_envoy_head(table[key]).format == ENVOY_FORMAT
            assert decode_stored_envoy(table[key]).state.status is Status.OFFLINE
        assert table[b"web-03"] is before

    asyncio.run(go())
