"""Rollouts by `config_version` (SPEC 11.2), the pure core and its records: per-partition
tallies moved by (old state, new state) pairs equal a recomputation, merge and bounds keep
the sums, the newest version, the stuck count, the marks, the alert and the bytes."""

from __future__ import annotations

from dataclasses import replace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.mail import MailSettings, render
from alerts.rollouts import STUCK_LIST_MAX, stuck_alert, stuck_alert_id
from processor.envoy_list_index import PartitionKeys, SortedKeys
from processor.records import (
    FleetPart,
    StoredEnvoy,
    decode_envoy_head,
    decode_fleet_partial,
    decode_fleet_parts,
    decode_fleet_state,
    encode_fleet_partial,
    encode_fleet_parts,
    encode_fleet_state,
    encode_stored_envoy,
)
from processor.records_rollouts import EMPTY_ROLLOUTS, FirstSeen, PartRollouts, head_version
from processor.rollouts import SAMPLE_MAX, PartitionRollouts, RolloutPartials, RolloutSettings
from projections.envoy import EnvoyState, Position, Rules, apply_event, sweep_envoy
from projections.fleet import FleetCounts
from projections.groups import NONE_VALUE, OTHER_VALUE
from projections.rollouts import (
    NONE_VERSION,
    OTHER_VERSION,
    RolloutMarks,
    RolloutTally,
    VersionCounts,
    advance,
    bound_versions,
    fold_groups,
    kept_first_seen,
    merge_group_versions,
    merge_versions,
    newest_version,
    rollout_view,
    stuck_fires,
)
from tests.eventgen import T0, enrolled, input_events, run
from topics.events import Checkin, Enrollment, Run
from topics.statuses import Status

RULES = Rules(default_interval_s=60, deactivate_after_ms=3_600_000, purge_after_ms=7_200_000)
InputEvent = (Checkin, Enrollment, Run)
ENVOYS = ["a", "b", "c", "d", "e"]
GROUP_BY = ("env",)
LABELS = st.fixed_dictionaries({}, optional={"env": st.sampled_from(["prod", "dev"])})
HOUR = 3_600_000


def without_times(versions: dict[str, VersionCounts]) -> dict[str, VersionCounts]:
    return {v: replace(c, first_seen_ms=None) for v, c in versions.items()}


def recomputed(states: dict[str, EnvoyState]) -> RolloutTally:
    return RolloutTally.of_envoys(
        GROUP_BY, ((s.status, s.config_version, s.labels) for s in states.values())
    )


@st.composite
def fleet_events(draw: st.DrawFn) -> tuple[str, object]:
    envoy = draw(st.sampled_from(ENVOYS))
    kind = draw(st.sampled_from(["event", "event", "event", "relabel", "sweep"]))
    if kind == "relabel":
        return envoy, enrolled(envoy, None, **draw(LABELS))
    if kind == "sweep":
        return envoy, draw(st.integers(0, 2 * HOUR))
    return envoy, draw(input_events(envoy))


def play(steps: list[tuple[str, object]]) -> tuple[RolloutTally, dict[str, EnvoyState]]:
    """Every applied event and sweep moves the tally by the envoy's (old, new) state, as
    the envoy agent does (a purge: new None)."""
    tally = RolloutTally(GROUP_BY)
    states: dict[str, EnvoyState] = {}
    now = T0
    for i, (envoy, step) in enumerate(steps):
        old = states.get(envoy)
        if isinstance(step, int):
            now += step
            if old is None:
                continue
            swept = sweep_envoy(old, now, RULES)
            if swept.purged:
                tally.move_state(old, None, now)
                del states[envoy]
                continue
            new = swept.state
        else:
            assert isinstance(step, InputEvent)
            new_state = apply_event(old, step, now + i, RULES, Position(0, i)).state
            if new_state is None:
                continue
            new = new_state
        tally.move_state(old, new, now + i)
        states[envoy] = new
    return tally, states


@settings(max_examples=300, deadline=None)
@given(st.lists(fleet_events(), min_size=1, max_size=60))
def test_tally_moved_by_state_pairs_equals_the_final_states(
    steps: list[tuple[str, object]],
) -> None:
    """Counts per version (fleet and groups) equal a recomputation from the final states;
    they sum to the active envoys; every version counted has a first-seen time."""
    tally, states = play(steps)
    final = recomputed(states)
    assert without_times(tally.fleet) == final.fleet
    assert {
        k: {v: without_times(vs) for v, vs in values.items()} for k, values in tally.groups.items()
    } == final.groups
    active = FleetCounts.of_statuses(s.status for s in states.values()).active
    assert sum(c.envoys for c in tally.fleet.values()) == active
    assert all(c.first_seen_ms is not None for c in tally.fleet.values())
    assert all(
        0 <= c.converged <= c.envoys and 0 <= c.offline <= c.envoys for c in tally.fleet.values()
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Status)),
            st.none() | st.sampled_from(["v1", "v2", "v3", "v4"]),
            LABELS,
            st.integers(0, 3),
        ),
        max_size=40,
    )
)
def test_merge_of_partitions_equals_the_tally_of_all(
    envoys: list[tuple[Status, str | None, dict[str, str], int]],
) -> None:
    """Partitions merged equal one tally of every envoy; bounding (per partition, then
    again after the merge) keeps the sums, names at most cap + recent + pinned versions."""
    parts = [
        RolloutTally.of_envoys(GROUP_BY, [(s, v, lab) for s, v, lab, p in envoys if p == i])
        for i in range(4)
    ]
    whole = RolloutTally.of_envoys(GROUP_BY, [(s, v, lab) for s, v, lab, _ in envoys])
    assert merge_versions(p.fleet for p in parts) == whole.fleet
    assert merge_group_versions(p.groups for p in parts) == whole.groups
    total = sum(c.envoys for c in whole.fleet.values())
    for cap in (0, 1, 2):
        v4 = frozenset({"v4"})
        bounded = [bound_versions(p.fleet, cap, pinned=v4) for p in parts]
        again = bound_versions(merge_versions(bounded), cap, pinned=v4)
        assert sum(c.envoys for c in again.values()) == total
        assert sum(c.converged for c in again.values()) == sum(
            c.converged for c in whole.fleet.values()
        )
        assert len(set(again) - {NONE_VERSION, OTHER_VERSION, "v4"}) <= cap
        if "v4" in whole.fleet:
            assert again["v4"] == whole.fleet["v4"]  # pinned: named, exact


def test_bound_versions_names_the_most_common_and_the_most_recent() -> None:
    versions = {
        "old": VersionCounts(50, 40, 1, 1000),
        "mid": VersionCounts(30, 30, 0, 2000),
        "new": VersionCounts(2, 1, 0, 3000),
        NONE_VERSION: VersionCounts(5, 0, 0, 10),
    }
    assert list(bound_versions(versions, 1)) == ["old", OTHER_VERSION, NONE_VERSION]
    named = bound_versions(versions, 1, recent=1)
    assert list(named) == ["old", OTHER_VERSION, NONE_VERSION, "new"]  # ranked by envoys
    assert named[OTHER_VERSION] == VersionCounts(30, 30, 0, None)
    # A byte budget stops the named versions (the rest still counted).
    small = bound_versions(versions, 3, size=len, budget=4)
    assert set(small) == {"old", OTHER_VERSION, NONE_VERSION}
    assert sum(c.envoys for c in small.values()) == 87


def test_newest_is_first_seen_last_and_stuck_waits_for_stuck_after() -> None:
    versions = {
        "v1": VersionCounts(6, 5, 1, T0),
        "v2": VersionCounts(3, 2, 0, T0 + 1000),
        NONE_VERSION: VersionCounts(2, 0, 0, None),
        OTHER_VERSION: VersionCounts(1, 0, 0, None),
    }
    assert newest_version(versions) == "v2"
    early = rollout_view(versions, {}, T0 + 1000 + HOUR - 1, HOUR, 20)
    assert (early.newest, early.active, early.stuck) == ("v2", 12, 0)
    late = rollout_view(versions, {}, T0 + 1000 + HOUR, HOUR, 20)
    # v1's 5 online envoys and the one in (other); not the offline one, not (none).
    assert late.stuck == 6
    assert late.converged_ratio == 2 / 12
    # The durable first-seen times win over later ones from the partials: v2 was seen
    # first before v1 was (a partition rebuilt after a restart reports a later time).
    swapped = rollout_view(versions, {"v2": T0 - 5}, T0 + 2 * HOUR, HOUR, 20)
    assert swapped.newest == "v1"
    assert swapped.versions["v2"].first_seen_ms == T0 - 5
    # The newest is always named, however few envoys it has.
    capped = rollout_view(versions, {}, T0, HOUR, 1)
    assert set(capped.versions) == {"v1", "v2", NONE_VERSION, OTHER_VERSION}
    assert rollout_view({NONE_VERSION: VersionCounts(3)}, {}, T0, HOUR, 20).newest is None


def test_marks_reach_50_and_90_once_and_start_over_for_a_new_version() -> None:
    def view(converged: int, newest: str = "v2") -> object:
        versions = {
            "v1": VersionCounts(10 - converged, 0, 0, T0),
            newest: VersionCounts(converged, converged, 0, T0 + 1),
        }
        return rollout_view(versions, {}, T0 + 2 * HOUR, HOUR, 20)

    marks = advance(RolloutMarks(), view(4), T0 + 10)  # type: ignore[arg-type]
    assert marks == RolloutMarks("v2")
    marks = advance(marks, view(5), T0 + 20)  # type: ignore[arg-type]
    assert (marks.reached_50_ms, marks.reached_90_ms) == (T0 + 20, None)
    marks = advance(marks, view(3), T0 + 30)  # type: ignore[arg-type]
    assert marks.reached_50_ms == T0 + 20  # never taken back
    marks = advance(marks, view(9), T0 + 40)  # type: ignore[arg-type]
    assert marks.reached_90_ms == T0 + 40
    stuck_view = view(9)
    assert stuck_fires(marks, stuck_view, 0)  # type: ignore[arg-type]
    assert not stuck_fires(marks, stuck_view, 1)  # type: ignore[arg-type]
    assert not stuck_fires(replace(marks, stuck_alerted=True), stuck_view, 0)  # type: ignore[arg-type]
    fresh = advance(marks, view(1, "v3"), T0 + 50)  # type: ignore[arg-type]
    assert fresh == RolloutMarks("v3")


def test_first_seen_stays_bounded_and_keeps_the_earliest() -> None:
    versions = {f"v{i}": VersionCounts(1, 0, 0, T0 + i) for i in range(50)}
    kept = kept_first_seen({"v3": T0 - 1, "gone": T0 - 9}, versions, ["v3", "v4"], 5)
    assert kept["v3"] == T0 - 1 and kept["v4"] == T0 + 4
    assert len(kept) == 2 + 5
    assert "gone" not in kept  # the oldest of the rest go first
    assert set(kept) - {"v3", "v4"} == {f"v{i}" for i in range(45, 50)}


def test_groups_beyond_the_named_values_fold_into_other() -> None:
    groups = {
        "env": {
            "a": {"v1": VersionCounts(1)},
            "b": {"v1": VersionCounts(2)},
            NONE_VALUE: {"v2": VersionCounts(1)},
        }
    }
    folded = fold_groups(groups, {"env": ["a"]})
    assert folded["env"]["a"] == {"v1": VersionCounts(1)}
    assert folded["env"][OTHER_VALUE] == {"v1": VersionCounts(2)}
    assert folded["env"][NONE_VALUE] == {"v2": VersionCounts(1)}


# -- the partition side: keys by version, the partial's bounds ------------------------------


def test_partition_rollouts_rebuilt_from_records_equal_the_moved_ones() -> None:
    """Built from the envoy records' heads (versions read from the tails) after an
    assignment, a partition's tally and keys equal the ones moved event by event."""
    moved = PartitionRollouts(RolloutTally(GROUP_BY))
    states: dict[bytes, EnvoyState] = {}
    for i, (envoy, version) in enumerate([("a", "v1"), ("b", "v1"), ("c", None), ("a", "v2")]):
        key = envoy.encode()
        old = states.get(key)
        if old is None:
            old_or_none = apply_event(None, enrolled(envoy, None, env="prod"), T0, RULES).state
            assert old_or_none is not None
            moved.move(key, None, old_or_none, T0)
            old = old_or_none
        new = apply_event(old, run("ok", envoy=envoy, config_version=version), T0 + i, RULES).state
        assert new is not None
        moved.move(key, old, new, T0 + i)
        states[key] = new
    heads = {
        k: decode_envoy_head(encode_stored_envoy(StoredEnvoy(0, s))) for k, s in states.items()
    }
    assert head_version(heads[b"a"]) == "v2"
    rebuilt = PartitionRollouts.of_heads(GROUP_BY, heads)
    assert without_times(moved.tally.fleet) == without_times(rebuilt.tally.fleet)
    # Rebuilt, a version's first seen is its envoys' latest record time (an upper bound).
    assert rebuilt.tally.fleet["v1"].first_seen_ms == states[b"b"].last_seen_ms
    assert moved.tally.fleet["v2"].first_seen_ms == T0 + 3
    assert {v: list(k) for v, k in moved.keys.items()} == {
        v: list(k) for v, k in rebuilt.keys.items()
    }
    assert list(rebuilt.keys["v1"]) == [b"b"] and list(rebuilt.keys[NONE_VERSION]) == [b"c"]


def test_partials_stay_bounded_whatever_the_versions() -> None:
    """50,000 envoys each on its own worst-case version (128 characters of control
    characters, 6 JSON bytes each) in 200 groups: the partial names at most the cap and
    the recent versions fleet-wide, stays far below 1 MiB, and the counts still sum."""

    statuses = [Status.CONVERGED, Status.DRIFTED, Status.OFFLINE]
    envoys = [
        (statuses[i % 3], f"{i:08d}" + "\x01" * 120, {"env": f"g{i % 200}"}) for i in range(50_000)
    ]
    tally = RolloutTally.of_envoys(GROUP_BY, envoys)
    held = PartitionRollouts(tally)
    for i, (_, version, _) in enumerate(envoys[:500]):
        held.keys.setdefault(version, SortedKeys()).add(f"envoy-{i:05d}".encode())
    listing = PartitionKeys.of_envoys(
        GROUP_BY, ((f"envoy-{i:05d}".encode(), envoys[i][0], envoys[i][2]) for i in range(500))
    )

    class Envoys:
        rollouts = {0: held}

        def __init__(self) -> None:
            self.listing = {0: listing}

        def counts_for(self, partition: int) -> object:
            return None

    groups = {"env": {f"g{i}": FleetCounts() for i in range(200)}}
    part = RolloutPartials(RolloutSettings(max_versions=20)).part(Envoys(), 0, groups)
    assert part is not None
    assert len(part.fleet) <= 20 + 3 + 1
    assert sum(c.envoys for c in part.fleet.values()) == 50_000
    for values in part.groups.values():
        assert sum(sum(c.envoys for c in vs.values()) for vs in values.values()) == 50_000
    encoded = encode_fleet_partial(0, FleetCounts(), T0, None, part)
    assert len(encoded) < 400 * 1024
    # Samples of online envoys (not the offline ones) for the stuck mail, bounded.
    assert part.samples and all(len(found) <= SAMPLE_MAX for found in part.samples.values())
    assert all(
        not e.startswith("envoy-") or int(e[6:]) % 3 != 2
        for found in part.samples.values()
        for e, _ in found
    )
    assert decode_fleet_partial(encoded) == (0, FleetPart(FleetCounts(), {}, part))


# -- records --------------------------------------------------------------------------------


def test_partials_and_parts_round_trip_and_read_the_previous_release() -> None:
    part = PartRollouts(
        {"v1": VersionCounts(3, 2, 1, T0), NONE_VERSION: VersionCounts(1, 0, 0, None)},
        {"env": {"prod": {"v1": VersionCounts(3, 2, 1, T0)}}},
        {"v1": (("a", ("prod",)), ("b", (None,)))},
    )
    counts = FleetCounts.from_dict({"converged": 2, "offline": 1, "no_data": 1})
    assert decode_fleet_partial(encode_fleet_partial(1, counts, T0, None, part)) == (
        1,
        FleetPart(counts, {}, part),
    )
    assert decode_fleet_parts(encode_fleet_parts(FleetPart(counts, {}, part))) == FleetPart(
        counts, {}, part
    )
    # A partial of the previous release (no "rollouts"): empty rollouts.
    previous = orjson.loads(encode_fleet_partial(1, counts, T0))
    assert "rollouts" not in previous
    assert decode_fleet_partial(orjson.dumps(previous)) == (1, FleetPart(counts))
    assert FleetPart(counts).rollouts is EMPTY_ROLLOUTS
    broken = {**previous, "rollouts": {"v": {"x": [1]}}}
    assert decode_fleet_partial(orjson.dumps(broken)) is None
    for value in (FirstSeen({"v1": T0}), RolloutMarks("v1", T0, None, True)):
        assert decode_fleet_state(encode_fleet_state(value)) == value


def test_stuck_alert_ids_and_mail() -> None:
    assert stuck_alert_id("v42") == "rollout.stuck/v42"
    assert stuck_alert_id("v42", ("env", "prod")) == "rollout.stuck/env=prod/v42"
    hashed = stuck_alert_id("v 42\r\nBcc: x")
    assert hashed.startswith("rollout.stuck/=") and "\n" not in hashed
    versions = {"v1": VersionCounts(30, 0, 0, T0), "v2": VersionCounts(5, 4, 0, T0 + 1)}
    view = rollout_view(versions, {}, T0 + 2 * HOUR, HOUR, 20)
    stuck = [(f"web-{i:02d}", "v1") for i in range(30)]
    alert = stuck_alert(view, stuck, 0, T0 + 2 * HOUR, ("env", "prod"))
    assert alert.alert_id == "rollout.stuck/env=prod/v2"
    assert len(alert.details["envoys"]) == STUCK_LIST_MAX
    assert alert.details["omitted"] == 10 and alert.details["stuck"] == 30
    mail = render(alert, MailSettings("vigo@x", ("ops@x",), "vigo", "http://d"))
    assert mail["Subject"] == "[Vigo] 30 envoys stuck before config_version v2 in env=prod"
    assert mail["Message-ID"] == "<rollout.stuck/env=prod/v2@vigo>"
    body = mail.get_content()
    assert "web-00  on v1" in body and "... and 10 more" in body
    evil = stuck_alert(view, [("bad\x1b[31m", "v1")], 0, T0, None)
    assert (
        "\x1b" not in render(evil, MailSettings("a@x", ("b@x",), "vigo", "http://d")).get_content()
    )
