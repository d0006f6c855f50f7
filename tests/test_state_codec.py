"""The table records survive the changelog: decode(encode(x)) == x for any reachable state,
so a worker restored from the changelog continues exactly where the old one stopped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.eventgen import T0, input_events
from vigo.projections.envoy import EnvoyState, Position, Rules, apply_event, sweep_envoy
from vigo.projections.fleet import FleetEntry
from vigo.projections.liveness import StaleAfter
from vigo.projections.status import Status
from vigo.topics.events import InputEvent
from vigo.topics.state import (
    StoredEnvoy,
    StoredFleetEntry,
    decode_fleet_entry,
    decode_stored_envoy,
    encode_fleet_entry,
    encode_stored_envoy,
)

RULES = Rules(default_interval_s=60)


@given(st.lists(input_events(), min_size=1, max_size=25), st.integers(0, 63), st.booleans())
def test_envoy_record_round_trips_and_restored_state_continues_identically(
    events: list[InputEvent], partition: int, sweep: bool
) -> None:
    state: EnvoyState | None = None
    restored: EnvoyState | None = None
    for i, event in enumerate(events):
        pos = Position(i % 3, i)
        state = apply_event(state, event, T0 + i, RULES, pos).state
        # The restored twin goes through the codec after every step, as after a crash.
        restored = apply_event(restored, event, T0 + i, RULES, pos).state
        if restored is not None:
            restored = decode_stored_envoy(
                encode_stored_envoy(StoredEnvoy(partition, restored))
            ).state
    if state is not None and sweep:
        state = sweep_envoy(state, T0 + 10**7, StaleAfter()).state
        assert restored is not None
        restored = sweep_envoy(restored, T0 + 10**7, StaleAfter()).state
    assert restored == state
    if state is not None:
        assert (
            decode_stored_envoy(encode_stored_envoy(StoredEnvoy(partition, state))).partition
            == partition
        )


@given(st.integers(0, 100), st.integers(1, 10**9), st.sampled_from(list(Status)))
def test_fleet_entry_round_trips(partition: int, version: int, status: Status) -> None:
    record = StoredFleetEntry(partition, FleetEntry(version, status))
    assert decode_fleet_entry(encode_fleet_entry(record)) == record
