"""`/metrics` on two real workers: valid Prometheus text (promtool says nothing), fleet
gauges equal to `/api/compliance` and exported by the fleet owner only, counters that
move with real events (SPEC section 7)."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processor.metrics import Metrics
from projections.fleet import FleetCounts
from tests.harness import Worker, checkin, enrollment, produce, run_event
from tests.webharness import (
    http_get,
    poll,
    prefix_of,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.names import TopicNames
from topics.statuses import RunOutcome

Sample = tuple[str, frozenset[tuple[str, str]]]
FLEET_METRICS = ("vigo_fleet_envoys", "vigo_fleet_convergence_ratio")


@pytest.fixture(scope="module")
def workers(kafka_bootstrap: str) -> Iterator[list[Worker]]:
    with running_workers(kafka_bootstrap, count=2, smtp=threshold_config(50)) as group:
        publish_status_fleet(kafka_bootstrap, group, tag="base-")
        yield group


def scrape_text(worker: Worker) -> str:
    reply = http_get(worker.url + "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return reply.body.decode("utf-8")


def scrape(worker: Worker) -> dict[Sample, float]:
    """Every sample of the exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(scrape_text(worker))
        for s in family.samples
    }


def summed(workers: list[Worker]) -> defaultdict[Sample, float]:
    """Counters are per worker; the fleet's count is their sum."""
    total: defaultdict[Sample, float] = defaultdict(float)
    for worker in workers:
        for key, value in scrape(worker).items():
            if key[0].endswith(("_total", "_count")):
                total[key] += value
    return total


def key(name: str, **labels: str) -> Sample:
    return (name, frozenset(labels.items()))


def test_promtool_reports_nothing(workers: list[Worker]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/test adds it)")
    for worker in workers:
        text = scrape_text(worker)
        assert "vigo_events_total" in text
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout == "" and checked.stderr == ""


def test_counters_move_with_real_events(workers: list[Worker], kafka_bootstrap: str) -> None:
    t = TopicNames(prefix_of(workers[0]))
    envoys = ["m-a", "m-b", "m-c"]
    before = summed(workers)

    def moved(expected: dict[Sample, float]) -> dict[Sample, float]:
        after = poll(
            lambda: summed(workers),
            lambda now: all(now[k] - before[k] >= v for k, v in expected.items()),
            timeout=60,
        )
        return {k: after[k] - before[k] for k in expected}

    # Enrollments first and on their own: runs on another topic could overtake them.
    produce(
        kafka_bootstrap,
        [(t.enrollments, e.encode(), enrollment(e, interval_s=3600)) for e in envoys],
    )
    enrolled = {
        key("vigo_events_total", topic=t.enrollments, outcome="applied"): 3.0,
        key("vigo_status_transitions_total", **{"from": "none"}, to="no_data"): 3.0,
    }
    assert moved(enrolled) == enrolled

    twice = run_event("m-a", "ok", "ok")
    produce(
        kafka_bootstrap,
        [
            (t.runs, b"m-a", twice),
            (t.runs, b"m-a", twice),  # the same run_id again: a duplicate
            (t.runs, b"m-b", run_event("m-b", "ok", "changed")),
            (t.runs, b"m-c", run_event("m-c", "a:failed")),
            (t.runs, b"m-c", b"{not json"),  # dead-lettered
            (t.checkins, b"m-a", checkin("m-a")),
        ],
    )
    expected = {
        key("vigo_events_total", topic=t.runs, outcome="applied"): 3.0,
        key("vigo_events_total", topic=t.runs, outcome="duplicate"): 1.0,
        key("vigo_events_total", topic=t.runs, outcome="deadletter"): 1.0,
        key("vigo_events_total", topic=t.checkins, outcome="applied"): 1.0,
        # The duplicate is not counted again (SPEC 10.1's runs by outcome).
        key("vigo_runs_total", outcome="clean"): 1.0,
        key("vigo_runs_total", outcome="changed"): 1.0,
        key("vigo_runs_total", outcome="failed"): 1.0,
        key("vigo_status_transitions_total", **{"from": "no_data"}, to="converged"): 1.0,
        key("vigo_status_transitions_total", **{"from": "no_data"}, to="drifted"): 1.0,
        key("vigo_status_transitions_total", **{"from": "no_data"}, to="failed"): 1.0,
    }
    assert moved(expected) == expected
    assert summed(workers)[key("vigo_event_processing_seconds_count")] > 0


def fleet_samples(samples: dict[Sample, float]) -> dict[Sample, float]:
    return {k: v for k, v in samples.items() if k[0] in FLEET_METRICS}


def test_fleet_gauges_equal_the_api_and_only_the_owner_exports_them(
    workers: list[Worker],
) -> None:
    def observe() -> tuple[dict[str, Any], list[dict[Sample, float]]]:
        doc = http_get(workers[0].url + "/api/compliance").json()
        return doc, [scrape(w) for w in workers]

    def agrees(seen: tuple[dict[str, Any], list[dict[Sample, float]]]) -> bool:
        doc, scrapes = seen
        owners = [s for s in scrapes if fleet_samples(s)]
        if len(owners) != 1:
            return False
        gauges = owners[0]
        by_status, percent = doc["by_status"], doc["percent"]
        ratio = gauges[key("vigo_fleet_convergence_ratio")]
        return all(
            gauges.get(key("vigo_fleet_envoys", status=s)) == n for s, n in by_status.items()
        ) and (math.isnan(ratio) if percent is None else ratio == percent / 100)

    doc, scrapes = poll(observe, agrees, timeout=60)
    assert agrees((doc, scrapes)), (doc, [fleet_samples(s) for s in scrapes])
    owner_flags = [s[key("vigo_fleet_owner")] for s in scrapes]
    assert sorted(owner_flags) == [0.0, 1.0]
    for flag, samples in zip(owner_flags, scrapes, strict=True):
        assert bool(fleet_samples(samples)) == (flag == 1.0)
    assert doc["active"] == sum(doc["by_status"].values())


def test_faust_numbers_next_to_ours(workers: list[Worker]) -> None:
    t = TopicNames(prefix_of(workers[0]))
    lags: dict[str, float] = {}
    for worker in workers:
        samples = scrape(worker)
        assert samples[key("vigo_rebalances_total")] >= 1
        lags.update(
            (dict(labels)["topic"], value)
            for (name, labels), value in samples.items()
            if name == "vigo_consumer_lag_records"
        )
    # Lag is known for the partitions that received records since the last rebalance.
    assert set(lags) & set(t.inputs), lags
    assert all(v >= 0 for v in lags.values())


def test_runs_counter_exports_every_outcome_from_the_start() -> None:
    """No broker: the registry alone. `vigo_runs_total{outcome}` (SPEC 10.1) has a sample
    for every outcome before any run, so rates over it start from zero."""
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
        for sample in family.samples
    }
    for outcome in ("clean", "changed", "intentional", "partial", "failed"):
        assert samples[key("vigo_runs_total", outcome=outcome)] == 0.0
    assert {o.value for o in RunOutcome} == {"clean", "changed", "intentional", "partial", "failed"}


def test_group_gauges_take_any_label_value_and_drop_vanished_values() -> None:
    """SPEC 10.2, no broker: `vigo_group_*{key,value}` with hostile values (quotes, a
    backslash, CR/LF, markup, non-ASCII) parse back exactly and pass promtool; a value
    that disappears from the groups loses its series."""
    hostile = 'x"\\\r\n<script>alert(1)</script> é'
    metrics = Metrics()
    one = FleetCounts.from_dict({"converged": 1, "failed": 1})
    metrics.set_groups({"env": {hostile: one, "prod": one}, "role": {"(none)": FleetCounts()}})
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[key("vigo_group_convergence_ratio", key="env", value=hostile)] == 0.5
    assert samples[key("vigo_group_envoys", key="env", value=hostile, status="failed")] == 1
    assert math.isnan(samples[key("vigo_group_convergence_ratio", key="role", value="(none)")])
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    metrics.set_groups({"env": {"prod": one}, "role": {}})
    text = generate_latest(metrics.registry).decode()
    assert hostile.split("\r")[0] not in text and "(none)" not in text
    assert 'vigo_group_envoys{key="env",status="converged",value="prod"} 1.0' in text
    # Only the fleet owner exports them.
    metrics.fleet_owner = lambda: False
    assert "vigo_group_" not in generate_latest(metrics.registry).decode()
