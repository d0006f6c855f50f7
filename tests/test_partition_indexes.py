"""The partition indexes built at once after an assignment equal what building them one
envoy at a time gives: the rollout tally summed over alike envoys (first-seen times too)
and the deadline heap heapified in one go."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.deadlines import Deadlines
from projections.rollouts import RolloutTally
from topics.statuses import Status

GROUP_BY = ("env", "dc")
LABELS = st.fixed_dictionaries(
    {}, optional={"env": st.sampled_from(["prod", "dev"]), "dc": st.sampled_from(["a", "b"])}
)
ENVOYS = st.lists(
    st.tuples(
        st.sampled_from(list(Status)),
        st.none() | st.sampled_from(["v1", "v2", "v3"]),
        LABELS,
        st.integers(0, 10**6),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ENVOYS, st.sampled_from([(), ("env",), GROUP_BY]))
def test_a_tally_of_all_envoys_equals_one_added_at_a_time(
    envoys: list[tuple[Status, str | None, dict[str, str], int]], group_by: tuple[str, ...]
) -> None:
    one_by_one = RolloutTally(group_by)
    for status, version, labels, seen_ms in envoys:
        new = type("Envoy", (), {"status": status, "config_version": version, "labels": labels})
        one_by_one.move_state(None, new, seen_ms)  # type: ignore[arg-type]
    at_once = RolloutTally.of_envoys(
        group_by, [(s, v, lab) for s, v, lab, _ in envoys], (t for *_, t in envoys)
    )
    assert at_once.fleet == one_by_one.fleet  # first-seen times included
    assert at_once.groups == one_by_one.groups


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=3), st.none() | st.integers(0, 100)),
    st.lists(st.tuples(st.integers(0, 120), st.integers(1, 5)), min_size=1, max_size=8),
)
def test_a_heap_built_at_once_pops_like_one_scheduled_an_envoy_at_a_time(
    deadlines: dict[bytes, int | None], sweeps: list[tuple[int, int]]
) -> None:
    one_by_one = Deadlines()
    for key, at in deadlines.items():
        one_by_one.schedule(key, at)
    at_once = Deadlines.of(deadlines.items())
    assert len(at_once) == len(one_by_one) == sum(at is not None for at in deadlines.values())
    for now_ms, limit in sorted(sweeps):
        popped = list(at_once.due(now_ms, limit))
        assert popped == list(one_by_one.due(now_ms, limit))
        for key in popped:  # rescheduled later, as a sweep does
            one_by_one.schedule(key, now_ms + 50)
            at_once.schedule(key, now_ms + 50)
