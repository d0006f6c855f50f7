"""The worker on the real broker: statuses from real events, exact status-change events,
dead letters for bad records, duplicates ignored, liveness, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    produce,
    run_event,
    worker_config,
)
from topics.names import TopicNames


@pytest.fixture
def worker(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(worker_config(kafka_bootstrap, topic_prefix), tmp_path).start()
    yield w
    w.stop()


def changes_of(records: list[Any], envoy: str) -> list[tuple[Any, ...]]:
    return [
        (r["from"], r["to"], r["version"], r["cause"]) for r in records if r["envoy_id"] == envoy
    ]


def test_every_status_is_reached_from_real_events(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    t = TopicNames(topic_prefix)
    script: dict[str, list[tuple[str, bytes]]] = {
        "conv": [(t.runs, run_event("conv", "ok", "ok"))],
        "drift": [(t.runs, run_event("drift", "ok", "changed"))],
        "relapse": [(t.runs, run_event("relapse", "changed"))] * 1
        + [(t.runs, run_event("relapse", "changed"))],
        "diverge": [(t.runs, run_event("diverge", "changed")) for _ in range(3)],
        "degrade": [(t.runs, run_event("degrade", "a:ok", "b:failed"))],
        "fail": [(t.runs, run_event("fail", "a:failed", module_errors=["users"]))],
        "nodata": [(t.enrollments, enrollment("nodata", interval_s=3600))],
    }
    records = [
        (topic, envoy.encode(), value) for envoy, evs in script.items() for topic, value in evs
    ]
    produce(kafka_bootstrap, records)

    expected = {
        "conv": "converged",
        "drift": "drifted",
        "relapse": "relapsed",
        "diverge": "diverged",
        "degrade": "degraded",
        "fail": "failed",
        "nodata": "no_data",
    }

    def done(rs: list[Any]) -> bool:
        last = {r["envoy_id"]: r["to"] for r in rs}
        return all(last.get(e) == s for e, s in expected.items())

    out = consume(kafka_bootstrap, t.status_changes, until=done)
    last = {r["envoy_id"]: r["to"] for r in out}
    assert {e: last.get(e) for e in expected} == expected
    assert changes_of(out, "diverge") == [
        (None, "drifted", 1, "run"),
        ("drifted", "relapsed", 2, "run"),
        ("relapsed", "diverged", 3, "run"),
    ]
    assert changes_of(out, "nodata") == [(None, "no_data", 1, "enrollment")]
    assert changes_of(out, "conv") == [(None, "converged", 1, "run")]
