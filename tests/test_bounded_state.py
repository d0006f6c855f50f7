"""SPEC 10.9: an envoy's stored state stays under 64 KiB whatever its events hold, and
the bounds on the history never change a status (statuses depend on outcomes and counts,
which are decided from the whole run before any id is dropped)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.records import StoredEnvoy, encode_stored_envoy
from projections.envoy import EnvoyState, Position, Rules, apply_event
from projections.runs import MAX_HISTORY_ID_BYTES, MAX_IDS_PER_RUN, id_cost
from tests.eventgen import T0, checkin, enrolled, iso
from tests.test_projections_properties import reference_status
from topics.decode import decode_input
from topics.events import (
    Checkin,
    DeadLetter,
    Enrollment,
    InputEvent,
    ModuleError,
    RecordMeta,
    Resource,
    ResourceResult,
    Run,
)
from topics.limits import MAX_NAME_BYTES

STORED_LIMIT = 64 * 1024
RULES = Rules(default_interval_s=60)
TOPIC_INDEX = {"Enrollment": 0, "Checkin": 1, "Run": 2}


def stored_size(state: EnvoyState) -> int:
    return len(encode_stored_envoy(StoredEnvoy(63, state)))


def _name(prefix: str, i: int) -> str:
    """A distinct id of at most MAX_NAME_BYTES bytes from any prefix text."""
    suffix = f"#{i}"
    room = MAX_NAME_BYTES - len(suffix)
    cut = prefix.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return cut + suffix


@st.composite
def big_runs(draw: st.DrawFn) -> Run:
    """Runs of up to thousands of resources with ids of any text up to 1,024 bytes."""
    sizes = st.sampled_from([0, 1, 19, 20, 21, 300, 2500])
    prefix = draw(st.text(max_size=12)) * draw(st.sampled_from([1, 10, 100]))
    modules = [_name(draw(st.text(max_size=8)) * 90, m) for m in range(draw(st.integers(1, 25)))]
    results: tuple[ResourceResult, ...] = ("changed", "failed", "ok")
    resources = [
        Resource(_name(prefix, i), modules[i % len(modules)], result)
        for result in results
        for i in range(draw(sizes))
    ]
    errors = [ModuleError(m, "x") for m in draw(st.lists(st.sampled_from(modules), max_size=3))]
    finished = T0 + draw(st.integers(0, 5_000)) * 1000
    return Run(
        envoy_id="web-01",
        run_id=f"run-{draw(st.integers(0, 60))}",
        started_at=iso(finished),
        finished_at=iso(finished),
        finished_at_ms=finished,
        resources=tuple(resources),
        module_errors=tuple(errors),
    )


#: The most label bytes an enrollment may hold: 64 labels, 8 KiB of keys and values.
FULL_LABELS = {f"k{i:02d}": "v" * 125 for i in range(64)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(big_runs(), big_runs(), st.just(checkin())), min_size=1, max_size=14))
def test_stored_envoy_stays_under_64_kib_and_statuses_are_unchanged(
    events: list[Run | Checkin],
) -> None:
    labelled = Enrollment("web-01", "enrolled", iso(T0), FULL_LABELS)
    history: list[InputEvent] = [labelled, *events]
    state: EnvoyState | None = None
    for i, event in enumerate(history):
        pos = Position(TOPIC_INDEX[type(event).__name__], i)
        state = apply_event(state, event, T0 + i, RULES, pos).state
        assert state is not None
        assert stored_size(state) < STORED_LIMIT
    assert state is not None
    runs = [e for e in history if isinstance(e, Run)]
    # The status is the one recomputed from the whole runs, every id included.
    assert state.status == reference_status(runs)
    by_id = {r.run_id: r for r in reversed(runs)}  # the first run of an id is the one applied
    budget = 0
    for summary in state.history:
        run = by_id[summary.run_id]
        changed = [r.id for r in run.resources if r.result == "changed"]
        failed = [r.id for r in run.resources if r.result == "failed"]
        assert (summary.changed_count, summary.failed_count) == (len(changed), len(failed))
        assert summary.changed == tuple(changed[: len(summary.changed)])
        assert summary.failed == tuple(failed[: len(summary.failed)])
        assert max(map(len, (summary.changed, summary.failed, summary.errored_modules))) <= (
            MAX_IDS_PER_RUN
        )
        kept = summary.changed + summary.failed + summary.errored_modules
        budget += sum(map(id_cost, kept))
    assert budget <= MAX_HISTORY_ID_BYTES


# -- the worst case the decoder lets through -------------------------------------------------

META = RecordMeta("vigo.envoy.runs", 0, 0, T0)
ENVOY = "\U0001f600" * 253  # 253 characters of 4 bytes
LONG_AT = "2026-11-27T12:05:{:02d}." + "1" * 43 + "Z"  # 64 characters


def _decode(doc: dict[str, Any]) -> InputEvent:
    event = decode_input(ENVOY.encode(), orjson.dumps(doc), META)
    assert not isinstance(event, DeadLetter), event
    return event


def _worst_run(n: int, second: int) -> dict[str, Any]:
    """Every stored string at its longest and escaped (a control character costs 6 bytes)."""
    name = "\x01" * (MAX_NAME_BYTES - 8)
    return {
        "schema": "vigo.run/1",
        "envoy_id": ENVOY,
        "run_id": "\x01" * 120 + f"{n:08d}",
        "started_at": LONG_AT.format(second),
        "finished_at": LONG_AT.format(second),
        "resources": [
            {"id": f"{name}{n:04d}{i:04d}", "module": f"{name}{i:08d}", "result": result}
            for result in ("changed", "failed")
            for i in range(40)
        ],
    }


def test_worst_case_stored_envoy_is_under_64_kib() -> None:
    """18 distinct run ids (10 in the history, 8 late ones remembered for idempotence),
    labels at 8 KiB, the longest envoy id, timestamps and ids, all escape-heavy."""
    labels = {f'{i:02d}"': "\x01" * 20 + "v" * 2 for i in range(64)}  # 3 + 122 bytes each
    events = [
        _decode(
            {
                "schema": "vigo.enrollment/1",
                "envoy_id": ENVOY,
                "action": "enrolled",
                "at": LONG_AT.format(0),
                "labels": labels,
            }
        ),
        *(_decode(_worst_run(n, 30 + n)) for n in range(10)),
        *(_decode(_worst_run(n, 10 + n)) for n in range(10, 18)),  # late: older than all
        _decode({"schema": "vigo.checkin/1", "envoy_id": ENVOY, "at": LONG_AT.format(59)}),
    ]
    state: EnvoyState | None = None
    for i, event in enumerate(events):
        state = apply_event(state, event, T0 + i, RULES, Position(0, i)).state
    assert state is not None
    assert len(set(state.recent_run_ids) | {r.run_id for r in state.history}) == 18
    assert state.history[0].changed_count == 40
    size = stored_size(state)
    print(f"worst-case stored envoy: {size} bytes")
    assert size < STORED_LIMIT


def test_the_oldest_runs_lose_their_ids_first_and_counts_stay() -> None:
    """20 ids of 1,003 bytes (with quotes and comma) per run: the newest run keeps 20,
    the next what is left of 32 KiB (12), the older ones none; every count is exact."""
    state: EnvoyState | None = apply_event(None, enrolled(), T0, RULES).state
    for n in range(6):
        finished = T0 + n * 1000
        run = Run(
            "web-01",
            f"run-{n}",
            iso(finished),
            iso(finished),
            finished,
            tuple(Resource(f"{n}:{i:03d}" + "x" * 995, "files", "changed") for i in range(25)),
        )
        state = apply_event(state, run, finished, RULES).state
    assert state is not None
    assert [len(r.changed) for r in state.history] == [20, 12, 0, 0, 0, 0]
    assert [r.changed_count for r in state.history] == [25] * 6
    assert state.history[1].changed == tuple(f"4:{i:03d}" + "x" * 995 for i in range(12))
    assert state.status.value == "diverged"
