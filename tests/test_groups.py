"""Groups by label (SPEC 10.2), the pure core: per-partition tallies moved by (old state,
new state) pairs, merged over partitions and bounded by the cap."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.fleet import FleetProjection, GroupSettings
from processor.records import decode_fleet_partial, encode_fleet_partial
from projections.envoy import EnvoyState, Position, Rules, apply_event, sweep_envoy
from projections.fleet import FleetCounts
from projections.groups import (
    DEFAULT_MAX_GROUP_VALUES,
    NONE_VALUE,
    OTHER_VALUE,
    GroupTally,
    bounded,
    group_values,
    merge_groups,
    parse_label,
    pinned_values,
)
from tests.eventgen import T0, enrolled, input_events
from topics.events import Checkin, Enrollment, Run
from topics.statuses import ACTIVE_STATUSES, Status

RULES = Rules(default_interval_s=60)
InputEvent = (Checkin, Enrollment, Run)

GROUP_BY = ("env", "role")
C = Status.CONVERGED


def counts(**by_status: int) -> FleetCounts:
    return FleetCounts.from_dict(by_status)


def test_group_values_and_none() -> None:
    assert group_values({"env": "prod", "x": "y"}, GROUP_BY) == ("prod", NONE_VALUE)
    assert group_values({}, ()) == ()


def test_parse_label_splits_at_the_first_equals_sign() -> None:
    assert parse_label("env=prod") == ("env", "prod")
    assert parse_label("env=a=b") == ("env", "a=b")
    assert parse_label("env=") == ("env", "")
    assert parse_label("env") is None
    assert parse_label("=prod") is None
    assert pinned_values(["env=prod", "env=dev", "role=web"]) == {
        "env": frozenset({"prod", "dev"}),
        "role": frozenset({"web"}),
    }


def test_a_relabelled_envoy_moves_between_groups_with_the_same_status() -> None:
    tally = GroupTally(GROUP_BY)
    tally.move(None, None, C, {"env": "prod"})
    assert tally.counts["env"] == {"prod": counts(converged=1)}
    assert tally.counts["role"] == {NONE_VALUE: counts(converged=1)}
    version = tally.version
    tally.move(C, {"env": "prod"}, C, {"env": "dev", "role": "web"})
    assert tally.version == version + 1
    # The empty value disappears.
    assert tally.counts["env"] == {"dev": counts(converged=1)}
    assert tally.counts["role"] == {"web": counts(converged=1)}
    tally.move(C, {"env": "dev", "role": "web"}, C, {"env": "dev", "role": "web"})
    assert tally.version == version + 1  # no change, no move
    # A revoked envoy stays in its groups as a revoked count (SPEC 10.3), outside active.
    tally.move(C, {"env": "dev", "role": "web"}, Status.REVOKED, {"env": "dev", "role": "web"})
    revoked = FleetCounts.of_statuses([Status.REVOKED])
    assert tally.counts == {"env": {"dev": revoked}, "role": {"web": revoked}}
    assert revoked.active == 0 and revoked.revoked == 1
    # A purged one leaves them.
    tally.move(Status.REVOKED, {"env": "dev", "role": "web"}, None, None)
    assert tally.counts == {"env": {}, "role": {}}


def test_no_group_by_is_a_no_op() -> None:
    tally = GroupTally(())
    tally.move(None, None, C, {"env": "prod"})
    assert tally.counts == {} and tally.version == 0


def test_bounded_names_the_largest_values_ties_in_byte_order() -> None:
    groups = {
        "env": {
            "b": counts(converged=2),
            "a": counts(converged=2),
            "c": counts(converged=3),
            "é": counts(converged=2),
            "d": counts(drifted=1),
            NONE_VALUE: counts(offline=5),
            OTHER_VALUE: counts(converged=1),
        }
    }
    capped = bounded(groups, ["env", "role"], 2)
    assert list(capped["env"]) == [OTHER_VALUE, NONE_VALUE, "c", "a"]  # most envoys first
    assert capped["env"][OTHER_VALUE] == counts(converged=5, drifted=1)  # b, é, d, (other)
    assert capped["role"] == {}
    total = FleetCounts.merged(capped["env"].values())
    assert total == FleetCounts.merged(groups["env"].values())
    # A pinned value is named whatever its rank, and takes no slot.
    pinned = bounded(groups, ["env"], 2, {"env": frozenset({"d", "zz"})})
    assert set(pinned["env"]) == {NONE_VALUE, OTHER_VALUE, "a", "c", "d"}
    assert pinned["env"][OTHER_VALUE] == counts(converged=5)


def test_bounded_by_bytes() -> None:
    groups = {"env": {v: counts(converged=10 - i) for i, v in enumerate(["a", "bb", "ccc"])}}
    capped = bounded(groups, ["env"], 200, size=len, budget=3)
    assert set(capped["env"]) == {"a", "bb", OTHER_VALUE}
    assert capped["env"][OTHER_VALUE] == counts(converged=8)


# -- properties ---------------------------------------------------------------------------

LABEL_VALUES = st.sampled_from(["prod", "dev", "x\r\ny", "<b>", NONE_VALUE])
LABELS = st.dictionaries(st.sampled_from(["env", "role", "other"]), LABEL_VALUES, max_size=3)
STATUSES = st.sampled_from(list(Status))
OPS = st.lists(
    st.tuples(st.integers(0, 11), STATUSES, LABELS, st.booleans()), min_size=1, max_size=80
)


def recompute(
    group_by: tuple[str, ...], envoys: Mapping[int, tuple[Status, dict[str, str]]]
) -> dict[str, dict[str, FleetCounts]]:
    return GroupTally.of_envoys(group_by, envoys.values()).counts


@settings(max_examples=300, deadline=None)
@given(OPS, st.sampled_from([("env",), ("env", "role"), ("role", "other", "env")]))
def test_incremental_groups_equal_a_recomputation(
    ops: list[tuple[int, Status, dict[str, str], bool]], group_by: tuple[str, ...]
) -> None:
    partitions = 3
    tallies = [GroupTally(group_by) for _ in range(partitions)]
    envoys: dict[int, tuple[Status, dict[str, str]]] = {}
    for envoy, status, labels, keep_labels in ops:
        old = envoys.get(envoy)
        if old is not None and keep_labels:
            labels = old[1]  # a status change alone
        tally = tallies[envoy % partitions]
        if old is None:
            tally.move(None, None, status, labels)
        else:
            tally.move(old[0], old[1], status, labels)
        envoys[envoy] = (status, labels)
    fleet = FleetCounts.of_statuses(status for status, _ in envoys.values())
    for p in range(partitions):
        mine = {e: v for e, v in envoys.items() if e % partitions == p}
        assert tallies[p].counts == recompute(group_by, mine)
    merged = merge_groups(t.counts for t in tallies)
    assert merged == {k: v for k, v in recompute(group_by, envoys).items()}
    for key in group_by:
        assert FleetCounts.merged(merged.get(key, {}).values()) == fleet
        # The cap keeps the sum: what it does not name is in (other).
        for cap in (0, 1, 2):
            capped = bounded(merged, group_by, cap)[key]
            assert FleetCounts.merged(capped.values()) == fleet
            assert len(set(capped) - {NONE_VALUE, OTHER_VALUE}) <= cap
            assert all(c != FleetCounts() for c in capped.values())
    # Bounded per partition, then merged and bounded again: the sums still hold.
    parts = [bounded(t.counts, group_by, 1) for t in tallies]
    for values in bounded(merge_groups(parts), group_by, 1).values():
        assert FleetCounts.merged(values.values()) == fleet


# -- through the rules: every input event, re-enrollments with new labels, sweeps -----------

ENVOYS = ["a", "b", "c", "d"]


@st.composite
def fleet_events(draw: st.DrawFn) -> tuple[str, object]:
    envoy = draw(st.sampled_from(ENVOYS))
    kind = draw(st.sampled_from(["event", "event", "relabel", "sweep"]))
    if kind == "relabel":
        return envoy, enrolled(envoy, None, **draw(LABELS))
    if kind == "sweep":
        return envoy, draw(st.integers(0, 3_600_000))
    return envoy, draw(input_events(envoy))


@settings(max_examples=200, deadline=None)
@given(st.lists(fleet_events(), min_size=1, max_size=60))
def test_groups_moved_by_state_pairs_equal_the_final_states(
    steps: list[tuple[str, object]],
) -> None:
    """The envoy agent's rule: every applied event and sweep moves the tally by the
    envoy's (old state, new state). The result equals a recomputation from the final
    states, and each key's values sum to the fleet numbers."""
    group_by = ("env", "role")
    tally = GroupTally(group_by)
    states: dict[str, EnvoyState] = {}
    now = T0
    for i, (envoy, step) in enumerate(steps):
        old = states.get(envoy)
        if isinstance(step, int):
            now += step
            if old is None:
                continue
            new = sweep_envoy(old, now, RULES).state
        else:
            assert isinstance(step, InputEvent)
            new_state = apply_event(old, step, now + i, RULES, Position(0, i)).state
            if new_state is None:
                continue
            new = new_state
        tally.move_state(old, new)
        states[envoy] = new
    final = GroupTally.of_envoys(group_by, ((s.status, s.labels) for s in states.values()))
    assert tally.counts == final.counts
    fleet = FleetCounts.of_statuses(s.status for s in states.values())
    for key in group_by:
        assert FleetCounts.merged(tally.counts[key].values()) == fleet


def test_partials_stay_bounded_whatever_the_label_values() -> None:
    """A partition with 50,000 envoys each with its own worst-case value (255 bytes of
    control characters, 6 bytes each in JSON) on 4 keys: its partial names at most
    `max_group_values` values per key and stays far below the broker's 1 MiB, the rest
    counted under (other); the counts still sum to the partition's."""
    group_by = ("a", "b", "c", "d")
    settings_ = GroupSettings(group_by, DEFAULT_MAX_GROUP_VALUES, {"a=pinned": 90})
    statuses = list(ACTIVE_STATUSES)
    envoys = [
        (statuses[i % 8], dict.fromkeys(group_by, f"{i:08d}" + "\x01" * 247)) for i in range(50_000)
    ]
    tally = GroupTally.of_envoys(group_by, [*envoys, (C, {"a": "pinned"})])
    counts = FleetCounts.of_statuses([*(statuses[i % 8] for i in range(50_000)), C])
    groups = settings_.bound(tally.counts)
    partial = encode_fleet_partial(0, counts, T0, groups)
    assert len(partial) < 900 * 1024
    for key in group_by:
        named = set(groups[key]) - {OTHER_VALUE, NONE_VALUE, "pinned"}
        assert 0 < len(named) <= DEFAULT_MAX_GROUP_VALUES
        assert FleetCounts.merged(groups[key].values()) == counts
    assert groups["a"]["pinned"] == counts_of(C)
    decoded = decode_fleet_partial(partial)
    assert decoded is not None and decoded[1].groups == groups


def counts_of(status: Status) -> FleetCounts:
    return FleetCounts.of_statuses([status])


class _FakeEnvoys:
    """What `FleetProjection` reads of the envoy agent, for one partition."""

    def __init__(self, tally: GroupTally | None) -> None:
        self.tally = tally
        self.catch_up = self

    def active_partitions(self) -> set[int]:
        return {0}

    def partition_caught_up(self, partition: int) -> bool:
        return True

    def counts_for(self, partition: int) -> FleetCounts:
        return FleetCounts.of_statuses([C])

    def group_tally(self, partition: int) -> GroupTally | None:
        return self.tally


class _FakeTopic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append(value)


@pytest.mark.parametrize("group_by", [(), ("env",)])
def test_an_unchanged_partial_is_not_sent_again_within_half_an_interval(
    group_by: tuple[str, ...],
) -> None:
    """With or without groups, a partition whose numbers did not move is re-sent only
    twice an interval; a move of its groups sends it at once."""
    tally = GroupTally.of_envoys(group_by, [(C, {"env": "prod"})]) if group_by else None
    topic = _FakeTopic()
    now = [1000.0]
    projection = FleetProjection(
        app=cast(Any, SimpleNamespace(rebalancing=False, in_recovery=False)),
        envoys=cast(Any, _FakeEnvoys(tally)),
        partials_topic=cast(Any, topic),
        interval_s=300,
        clock=lambda: now[0],
        groups=GroupSettings(group_by),
    )
    for _ in range(5):
        asyncio.run(projection.publish_partials())
        now[0] += 1
    assert len(topic.sent) == 1
    if tally is not None:
        tally.move(C, {"env": "prod"}, C, {"env": "dev"})
        asyncio.run(projection.publish_partials())
        assert len(topic.sent) == 2
        decoded = decode_fleet_partial(topic.sent[-1])
        assert decoded is not None and set(decoded[1].groups["env"]) == {"dev"}
    now[0] += 150
    asyncio.run(projection.publish_partials())
    assert len(topic.sent) == (3 if tally is not None else 2)
