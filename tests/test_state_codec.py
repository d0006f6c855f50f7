"""The table records survive the changelog: decode(encode(x)) == x for any state, so a
worker restored from the changelog continues exactly where the old one stopped; and the
envoy records of earlier formats (JSON, formats 1 and 2), which changelogs still hold,
decode."""

from __future__ import annotations

import hashlib
from typing import Any

import lz4.block
import msgspec
import orjson
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from processor.records import (
    ALERT_SENT_FORMAT,
    ENVOY_FORMAT,
    FLEET_PARTS_FORMAT,
    FLEET_STATE_FORMAT,
    FleetPart,
    StoredEnvoy,
    decode_alert_sent,
    decode_envoy_head,
    decode_fleet_partial,
    decode_fleet_parts,
    decode_fleet_state,
    decode_stored_envoy,
    encode_alert_sent,
    encode_fleet_partial,
    encode_fleet_parts,
    encode_fleet_state,
    encode_stored_envoy,
    head_labels,
)
from processor.records_envoy import decompressed_tail
from processor.records_rollouts import PartRollouts, head_version
from processor.records_tail import DICTIONARY_PATH, DICTIONARY_SHA256
from projections.envoy import (
    EnvoyState,
    Position,
    Rules,
    apply_event,
    next_deadline_ms,
    sweep_envoy,
)
from projections.fleet import FleetCounts
from projections.history import ConvergenceHistory
from projections.rollouts import VersionCounts
from projections.runs import RunSummary
from projections.threshold import ThresholdState
from tests.eventgen import T0, input_events
from topics.codec import FLEET_STATUSES
from topics.events import Enrollment, InputEvent, Resource, Run
from topics.statuses import RunOutcome, Status
from topics.timestamps import iso_from_ms

RULES = Rules(default_interval_s=60)


def format2(record: StoredEnvoy) -> bytes:
    """An envoy record as the release before format 3 wrote it (JSON)."""
    s = record.state
    return orjson.dumps(
        {
            "f": 2,
            "p": record.partition,
            "id": s.envoy_id,
            "rv": s.revoked,
            "lb": s.labels,
            "iv": s.interval_s,
            "en": s.enrolled_at_ms,
            "ls": s.last_seen_ms,
            "la": s.last_seen_at,
            "lo": s.last_outcome,
            "lf": s.last_run_finished_ms,
            "cc": s.consecutive_changed,
            "of": s.offline,
            "st": s.stale,
            "se": s.stale_episodes,
            "s": s.status,
            "ss": s.status_since_ms,
            "v": s.version,
            "ri": s.recent_run_ids,
            "h": [
                [
                    r.run_id,
                    r.finished_at,
                    r.finished_at_ms,
                    r.outcome,
                    r.changed,
                    r.failed,
                    r.errored_modules,
                    r.changed_count,
                    r.failed_count,
                    r.errored_modules_count,
                ]
                for r in s.history
            ],
            "o": s.offsets,
        }
    )


# Any text msgpack and JSON can hold (no lone surrogates: UTF-8 cannot), any times.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
times = st.integers(0, 2**53)
counts = st.integers(0, 10**6)
ids = st.lists(texts, max_size=4).map(tuple)
run_ids = st.one_of(texts, st.uuids().map(str), st.binary(min_size=16, max_size=16).map(bytes.hex))
run_summaries = st.builds(
    RunSummary,
    run_id=run_ids,
    finished_at=texts,
    finished_at_ms=times,
    outcome=st.sampled_from(RunOutcome),
    changed=ids,
    failed=ids,
    errored_modules=ids,
    changed_count=counts,
    failed_count=counts,
    errored_modules_count=counts,
)


@st.composite
def envoy_states(draw: st.DrawFn) -> EnvoyState:
    """Any EnvoyState, reachable or not; its recent run ids partly those of its history."""
    history = tuple(draw(st.lists(run_summaries, max_size=10)))
    known = [r.run_id for r in history]
    # Often the run ids of the newest entries, as the rules keep them (format 3 then
    # stores their count), else any.
    newest = st.integers(0, min(len(known), 8)).map(lambda n: known[:n])
    anything = st.lists(st.sampled_from(known) | run_ids if known else run_ids, max_size=8)
    recent = draw(newest | anything)
    status = draw(st.sampled_from(Status))
    status_since_ms = draw(times)
    revoked = draw(st.booleans())
    return EnvoyState(
        envoy_id=draw(texts),
        revoked=revoked,
        labels=draw(st.dictionaries(texts, texts, max_size=4)),
        interval_s=draw(st.none() | st.integers(1, 10**7)),
        enrolled_at_ms=draw(times),
        last_seen_ms=draw(st.none() | times),
        last_seen_at=draw(st.none() | texts),
        last_outcome=draw(st.none() | st.sampled_from(RunOutcome)),
        last_run_finished_ms=draw(st.none() | times),
        consecutive_changed=draw(counts),
        offline=draw(st.booleans()),
        stale=draw(st.booleans()),
        stale_episodes=draw(counts),
        status=status,
        status_since_ms=status_since_ms,
        version=draw(st.integers(0, 2**40)),
        recent_run_ids=tuple(recent),
        history=history,
        offsets=tuple(draw(st.lists(st.integers(-1, 2**62), min_size=3, max_size=3))),
        config_version=draw(st.none() | texts),
        # As the rules keep them (SPEC 10.3): an inactive envoy since its status changed,
        # and only a revoked envoy forgotten.
        inactive_since_ms=status_since_ms if status is Status.INACTIVE else None,
        forgotten=revoked and draw(st.booleans()),
    )


LIFECYCLE = Rules(default_interval_s=60, deactivate_after_ms=86_400_000, purge_after_ms=10_000)


@given(envoy_states(), st.integers(0, 1023))
def test_format_4_round_trips_any_state_and_its_head_agrees(
    state: EnvoyState, partition: int
) -> None:
    data = encode_stored_envoy(StoredEnvoy(partition, state))
    assert decode_stored_envoy(data) == StoredEnvoy(partition, state)
    head = decode_envoy_head(data)
    assert (head.format, head.partition, head.status) == (ENVOY_FORMAT, partition, state.status)
    # The labels read from the head alone, for the group indexes (SPEC 10.2).
    assert head_labels(head) == state.labels
    # The head alone schedules the envoy exactly as its whole state does.
    for rules in (RULES, Rules(default_interval_s=900), LIFECYCLE):
        assert next_deadline_ms(head.liveness(), rules) == next_deadline_ms(state, rules)


def as_format_3(data: bytes) -> bytes:
    """A format 4 record as the last release wrote it: the same head, the tail in LZ4."""
    head = decode_envoy_head(data)
    old_tail = lz4.block.compress(decompressed_tail(head))
    return msgspec.msgpack.encode(
        [*msgspec.to_builtins(replace(head, format=3, tail=b""))[:-1], old_tail]
    )


@given(envoy_states(), st.integers(0, 1023))
def test_format_3_records_of_the_last_release_decode_to_the_same_state(
    state: EnvoyState, partition: int
) -> None:
    """Changelogs and stores hold format 3 (LZ4 tails) from the release before: each reads
    as it was written, head, labels and config version alone too, and is written back as
    format 4."""
    record = StoredEnvoy(partition, state)
    old = as_format_3(encode_stored_envoy(record))
    assert decode_envoy_head(old).format == 3
    assert decode_stored_envoy(old) == record
    assert head_labels(decode_envoy_head(old)) == state.labels
    assert head_version(decode_envoy_head(old)) == state.config_version
    assert head_version(decode_envoy_head(encode_stored_envoy(record))) == state.config_version
    assert decode_envoy_head(encode_stored_envoy(decode_stored_envoy(old))).format == 4


def test_the_tail_dictionary_is_the_one_format_4_was_written_with() -> None:
    """The dictionary file is part of format 4: changed, every stored tail would misread.
    The module refuses another file at import; the digest here pins it in the tests too."""
    digest = hashlib.sha256(DICTIONARY_PATH.read_bytes()).hexdigest()
    assert (
        digest
        == DICTIONARY_SHA256
        == ("801321660528bb9bc34e77f94e9cbd8f19f84460e7c90d56a08e5d63141054dc")
    )


def test_format_4_is_smaller_than_format_3_on_data_the_dictionary_never_saw() -> None:
    """Envoys with a full history of runs unlike the dictionary's training fleet (other
    resource names, bare hex run ids): the zstd tail with the dictionary is at least a
    quarter smaller than LZ4's (measured: 518 bytes a record against 788)."""
    rules = Rules(default_interval_s=300)
    new_total = old_total = 0
    for i in range(50):
        envoy = f"host-{i:07d}.prod.example.com"
        state = apply_event(
            None, Enrollment(envoy, "enrolled", "2026-11-27T12:00:00Z", {"env": "prod"}), T0, rules
        ).state
        for r in range(12):
            finished = T0 + (r + 1) * 300_000
            resources = tuple(
                Resource(
                    f"file[/etc/app/conf{j}.d]",
                    f"m{j % 5}",
                    "changed" if (i + j + r) % 9 == 0 else "ok",
                )
                for j in range(5 + (i * 7 + r) % 25)
            )
            run = Run(
                envoy,
                f"{(i * 1_000_003 + r) * 0x9E3779B97F4A7C15 % (1 << 128):032x}",
                iso_from_ms(finished - 4_000),
                iso_from_ms(finished),
                finished,
                resources,
            )
            state = apply_event(state, run, finished, rules).state
        assert state is not None
        data = encode_stored_envoy(StoredEnvoy(0, state))
        new_total += len(data)
        old_total += len(as_format_3(data))
    assert new_total < 0.75 * old_total, (new_total, old_total)


@given(st.lists(input_events(), min_size=1, max_size=25), st.integers(0, 63))
def test_format_2_records_of_the_last_release_still_decode(
    events: list[InputEvent], partition: int
) -> None:
    """What the changelog holds from before format 3 (JSON) decodes to the same state,
    head included, and is written back as format 3."""
    state: EnvoyState | None = None
    for i, event in enumerate(events):
        state = apply_event(state, event, T0 + i, RULES, Position(i % 3, i)).state
    if state is None:
        return
    record = StoredEnvoy(partition, state)
    old = format2(record)
    # Formats 1 and 2 had no remembered config version (SPEC 10.1), nor a version and an
    # offset per history entry (SPEC 11.1): they decode with none and -1.
    history = tuple(replace(run, config_version=None, offset=-1) for run in state.history)
    expected = replace(state, config_version=None, history=history)
    assert decode_stored_envoy(old) == StoredEnvoy(partition, expected)
    head = decode_envoy_head(old)
    assert (head.partition, head.status) == (partition, state.status)
    assert head_labels(head) == state.labels
    assert next_deadline_ms(head.liveness(), RULES) == next_deadline_ms(state, RULES)
    assert decode_stored_envoy(encode_stored_envoy(record)) == record


@given(envoy_states(), st.integers(0, 1023))
def test_format_3_records_without_a_remembered_version_decode_with_none(
    state: EnvoyState, partition: int
) -> None:
    """Format 3 as first written, before SPEC 10.1: the tail ends with the history."""
    state = replace(state, inactive_since_ms=None, forgotten=False)  # not in that release
    head = decode_envoy_head(encode_stored_envoy(StoredEnvoy(partition, state)))
    tail = msgspec.msgpack.decode(decompressed_tail(head))
    assert tail[-2:] == [state.config_version, None]
    short = lz4.block.compress(msgspec.msgpack.encode(tail[:-2]))
    old = msgspec.msgpack.encode(
        [*msgspec.to_builtins(replace(head, format=3, tail=b""))[:-1], short]
    )
    assert decode_envoy_head(old) == replace(head, format=3, tail=short)
    expected = StoredEnvoy(partition, replace(state, config_version=None))
    assert decode_stored_envoy(old) == expected


@given(envoy_states(), st.integers(0, 1023))
def test_format_3_records_of_the_release_before_the_lifecycle_decode_as_not_inactive(
    state: EnvoyState, partition: int
) -> None:
    """Format 3 as written before SPEC 10.3: the tail ends with the remembered version and
    the flags have no `forgotten` bit. It decodes as an envoy never inactive nor forgotten
    (that release had neither), and what it decodes to is written back with the new tail."""
    state = replace(state, inactive_since_ms=None, forgotten=False)
    if state.status in (Status.INACTIVE, Status.PURGED):
        state = replace(state, status=Status.OFFLINE)  # codes that release did not have
    head = decode_envoy_head(encode_stored_envoy(StoredEnvoy(partition, state)))
    tail = msgspec.msgpack.decode(decompressed_tail(head))
    assert tail[-1] is None
    short = lz4.block.compress(msgspec.msgpack.encode(tail[:-1]))
    old = msgspec.msgpack.encode(
        [*msgspec.to_builtins(replace(head, format=3, tail=b""))[:-1], short]
    )
    assert head.flags < 8
    assert decode_stored_envoy(old) == StoredEnvoy(partition, state)
    rewritten = encode_stored_envoy(decode_stored_envoy(old))
    assert decode_stored_envoy(rewritten) == StoredEnvoy(partition, state)


@given(envoy_states(), st.integers(0, 1023))
def test_format_3_history_entries_of_ten_fields_decode_without_version_and_offset(
    state: EnvoyState, partition: int
) -> None:
    """History entries as written before SPEC 11.1 end with the three counts: they decode
    with no config version and offset -1, the rest of the state unchanged."""
    head = decode_envoy_head(encode_stored_envoy(StoredEnvoy(partition, state)))
    tail = msgspec.msgpack.decode(decompressed_tail(head))
    history_at = 10  # envoy id, labels, ..., offsets, recent run ids, then the history
    assert len(tail[history_at]) == len(state.history)
    assert all(len(entry) == 12 for entry in tail[history_at])
    tail[history_at] = [entry[:10] for entry in tail[history_at]]
    short = lz4.block.compress(msgspec.msgpack.encode(tail))
    old = msgspec.msgpack.encode(
        [*msgspec.to_builtins(replace(head, format=3, tail=b""))[:-1], short]
    )
    history = tuple(replace(run, config_version=None, offset=-1) for run in state.history)
    expected = StoredEnvoy(partition, replace(state, history=history))
    assert decode_stored_envoy(old) == expected


def test_the_lifecycle_fields_are_kept_by_format_3() -> None:
    """An inactive envoy keeps when it became inactive; a forgotten revoked envoy keeps
    that it was forgotten (flag 8), also in its head, which schedules nothing for it."""
    inactive = EnvoyState("a", status=Status.INACTIVE, status_since_ms=T0, inactive_since_ms=T0)
    forgotten = EnvoyState("b", revoked=True, status=Status.REVOKED, forgotten=True)
    for state in (inactive, forgotten):
        data = encode_stored_envoy(StoredEnvoy(3, state))
        assert decode_stored_envoy(data) == StoredEnvoy(3, state)
    head = decode_envoy_head(encode_stored_envoy(StoredEnvoy(3, forgotten)))
    assert head.flags == 1 | 8 and head.liveness().forgotten
    assert next_deadline_ms(head.liveness(), LIFECYCLE) is None
    head = decode_envoy_head(encode_stored_envoy(StoredEnvoy(3, inactive)))
    assert next_deadline_ms(head.liveness(), LIFECYCLE) == T0 + 10_000


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
        state = sweep_envoy(state, T0 + 10**7, RULES).state
        assert restored is not None
        restored = sweep_envoy(restored, T0 + 10**7, RULES).state
    assert restored == state
    if state is not None:
        assert (
            decode_stored_envoy(encode_stored_envoy(StoredEnvoy(partition, state))).partition
            == partition
        )


@given(st.lists(st.integers(0, 10**6), min_size=10, max_size=10))
def test_fleet_parts_round_trip_and_read_the_first_release(numbers: list[int]) -> None:
    by_status = dict(zip(FLEET_STATUSES, numbers, strict=False))
    counts = FleetCounts.from_dict(by_status, inactive=numbers[8], revoked=numbers[9])
    assert decode_fleet_parts(encode_fleet_parts(counts)) == FleetPart(counts)
    assert orjson.loads(encode_fleet_parts(counts))["f"] == FLEET_PARTS_FORMAT
    # The first release stored the bare map, the next ones no lifecycle counts (SPEC
    # 10.3) and no groups; a restored changelog still reads, with 0 of those.
    active_only = FleetCounts.from_dict(by_status)
    assert decode_fleet_parts(orjson.dumps(counts.as_dict())) == FleetPart(active_only)
    before = orjson.dumps({"f": FLEET_PARTS_FORMAT, "by_status": counts.as_dict()})
    assert decode_fleet_parts(before) == FleetPart(active_only)
    groups = {"env": {"prod": counts, '\r\n<x>"é': counts}, "role": {}}
    assert decode_fleet_parts(encode_fleet_parts(FleetPart(counts, groups))) == FleetPart(
        counts, groups
    )
    # SPEC 11.2: the rollouts round-trip; parts written before them read as none.
    rollouts = PartRollouts({'"v\n1': VersionCounts(numbers[0], 0, 0, numbers[1])})
    with_rollouts = FleetPart(counts, groups, rollouts)
    assert decode_fleet_parts(encode_fleet_parts(with_rollouts)) == with_rollouts
    before_rollouts = encode_fleet_parts(FleetPart(counts, groups))
    assert decode_fleet_parts(before_rollouts).rollouts == PartRollouts()


@given(st.booleans(), st.integers(0, 10**6))
def test_threshold_state_round_trips(below: bool, crossings: int) -> None:
    state = ThresholdState(below=below, crossings=crossings)
    assert decode_fleet_state(encode_fleet_state(state)) == state
    assert decode_fleet_state(orjson.dumps([below, crossings])) == state


@given(
    st.integers(1, 10**9),
    st.lists(
        st.tuples(st.integers(0, 2**53), st.none() | st.floats(0, 100, allow_nan=False)),
        max_size=20,
    ),
)
def test_history_round_trips(bucket_ms: int, points: list[tuple[int, float | None]]) -> None:
    history = ConvergenceHistory(bucket_ms, tuple(points))
    assert decode_fleet_state(encode_fleet_state(history)) == history
    legacy = orjson.dumps([bucket_ms, [list(p) for p in points]])
    assert decode_fleet_state(legacy) == history


@given(st.integers(0, 2**62))
def test_alert_sent_round_trips(record_ms: int) -> None:
    assert decode_alert_sent(encode_alert_sent(record_ms)) == record_ms
    assert decode_alert_sent(orjson.dumps(record_ms)) == record_ms


def test_fleet_partial_round_trips_and_refuses_what_is_not_one() -> None:
    counts = FleetCounts.from_dict({"converged": 3, "offline": 1}, inactive=2, revoked=7)
    assert decode_fleet_partial(encode_fleet_partial(5, counts, 1)) == (5, FleetPart(counts))
    # A partial of the release before SPEC 10.3 (no lifecycle counts) still reads.
    old = {"schema": "vigo.fleet-partial/1", "partition": 5, "by_status": counts.as_dict()}
    assert decode_fleet_partial(orjson.dumps(old)) == (
        5,
        FleetPart(FleetCounts.from_dict(counts.as_dict())),
    )
    assert decode_fleet_partial(orjson.dumps(old | {"inactive": "x"})) is None
    groups = {"env": {"prod": counts, "(none)": FleetCounts.from_dict({"failed": 2})}}
    encoded = encode_fleet_partial(5, counts, 1, groups)
    assert decode_fleet_partial(encoded) == (5, FleetPart(counts, groups))
    # Zeros are left out: a partial stays small; a group's lifecycle counts travel too.
    assert orjson.loads(encoded)["groups"]["env"]["prod"] == {
        "converged": 3,
        "offline": 1,
        "inactive": 2,
        "revoked": 7,
    }
    good = orjson.loads(encoded)
    for junk in (b"", b"{", b"[]", b'{"schema": "x"}', b'{"schema": "vigo.fleet-partial/1"}'):
        assert decode_fleet_partial(junk) is None
    bad: list[object] = [[], {"env": []}, {"env": {"prod": []}}, {"env": {"prod": {"x": "y"}}}]
    for bad_groups in bad:
        assert decode_fleet_partial(orjson.dumps({**good, "groups": bad_groups})) is None


def test_every_record_kind_has_a_format_number() -> None:
    state = apply_event(
        None, Enrollment("web-01", "enrolled", "2026-11-27T12:00:00Z"), T0, RULES, Position(0, 0)
    ).state
    assert state is not None
    assert orjson.loads(encode_alert_sent(1))[0] == ALERT_SENT_FORMAT
    assert orjson.loads(encode_fleet_state(ThresholdState()))["f"] == FLEET_STATE_FORMAT
    assert decode_envoy_head(encode_stored_envoy(StoredEnvoy(0, state))).format == ENVOY_FORMAT


def test_envoy_records_of_the_first_release_still_decode_and_are_bounded() -> None:
    """Format 1 kept every id of a run and no counts: its lists are the counts, and the
    restored history is cut to today's bounds (so the next write is small)."""
    first_release = {
        "f": 1,
        "p": 2,
        "id": "web-01",
        "rv": False,
        "lb": {"env": "prod"},
        "iv": 300,
        "en": T0,
        "ls": T0 + 5,
        "la": "2026-11-27T12:05:04Z",
        "lo": "changed",
        "lf": T0 + 4,
        "cc": 1,
        "of": False,
        "st": False,
        "se": 0,
        "s": "drifted",
        "ss": T0 + 5,
        "v": 2,
        "ri": ["run-1"],
        "h": [
            [
                "run-1",
                "2026-11-27T12:05:04Z",
                T0 + 4,
                "changed",
                [f"file[/etc/{i}]" for i in range(5000)],
                [],
                [],
            ],
        ],
        "o": [0, -1, 3],
    }
    record = decode_stored_envoy(orjson.dumps(first_release))
    assert (record.partition, record.state.status, record.state.labels) == (
        2,
        Status.DRIFTED,
        {"env": "prod"},
    )
    (run,) = record.state.history
    assert (run.changed_count, run.failed_count, run.errored_modules_count) == (5000, 0, 0)
    assert run.changed == tuple(f"file[/etc/{i}]" for i in range(20))
    again = encode_stored_envoy(record)
    assert decode_envoy_head(again).format == ENVOY_FORMAT == 4
    assert decode_stored_envoy(again) == record
    assert len(again) < 500


def test_envoy_record_keeps_no_own_interval_and_reads_the_first_release() -> None:
    """Formats 2 and 3 keep "no own interval" (the envoy follows the configured default);
    a format-1 record's number is read as the envoy's own interval, as the first release
    judged it."""
    state = apply_event(
        None, Enrollment("web-01", "enrolled", "2026-11-27T12:00:00Z"), T0, RULES, Position(0, 0)
    ).state
    assert state is not None and state.interval_s is None
    assert decode_envoy_head(encode_stored_envoy(StoredEnvoy(3, state))).interval_s is None
    raw: dict[str, Any] = orjson.loads(format2(StoredEnvoy(3, state)))
    assert (raw["f"], raw["iv"]) == (2, None)
    assert decode_stored_envoy(orjson.dumps(raw)).state == state
    first_release = {**raw, "f": 1, "iv": 300}
    old = decode_stored_envoy(orjson.dumps(first_release)).state
    assert old.interval_s == 300
    assert old.effective_interval_s(Rules(default_interval_s=900)) == 300
