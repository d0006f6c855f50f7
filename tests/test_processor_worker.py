"""The worker on the real broker: statuses from real events, exact status-change events,
dead letters for bad records, duplicates ignored, liveness, revocation."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    get_json,
    produce,
    run_event,
    worker_config,
)
from tests.webharness import poll
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


def wait_changes(
    bootstrap: str, prefix: str, predicate: Any, timeout: float = 40
) -> list[dict[str, Any]]:
    return consume(bootstrap, TopicNames(prefix).status_changes, until=predicate, timeout=timeout)


def last_to(records: list[dict[str, Any]], envoy: str) -> str | None:
    mine = [r["to"] for r in records if r["envoy_id"] == envoy]
    return mine[-1] if mine else None


def test_offline_after_two_intervals_and_back_on_checkin(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    t = TopicNames(topic_prefix)
    produce(kafka_bootstrap, [(t.runs, b"live-1", run_event("live-1", "ok"))])
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "live-1") == "offline")
    assert changes_of(out, "live-1") == [
        (None, "converged", 1, "run"),
        ("converged", "offline", 2, "sweep"),
    ]
    produce(kafka_bootstrap, [(t.checkins, b"live-1", checkin("live-1"))])
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: len(changes_of(rs, "live-1")) >= 3)
    assert changes_of(out, "live-1")[2] == ("offline", "converged", 3, "checkin")


def test_revoked_envoys_leave_the_counts(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    t = TopicNames(topic_prefix)
    records = []
    for envoy in ("keep-1", "keep-2", "gone-1"):
        records.append((t.enrollments, envoy.encode(), enrollment(envoy, interval_s=3600)))
        records.append((t.runs, envoy.encode(), run_event(envoy, "ok")))
    records.append((t.runs, b"keep-2", run_event("keep-2", "changed")))
    produce(kafka_bootstrap, records)
    # Topics are not ordered against each other: revoke only once the runs are applied.
    consume(
        kafka_bootstrap,
        t.fleet_convergence,
        until=lambda rs: bool(rs) and rs[-1]["active"] == 3 and rs[-1]["compliant"] == 2,
        timeout=40,
    )
    produce(
        kafka_bootstrap,
        [
            (t.enrollments, b"gone-1", enrollment("gone-1", action="revoked")),
            (t.enrollments, b"gone-1", enrollment("gone-1", action="revoked")),
        ],
    )
    # The run is refused only if it comes after the revocation, and the two topics are not
    # ordered against each other: send it once the revocation is applied (a fast worker
    # otherwise may take both from one fetch, the run first, and apply it).
    wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "gone-1") == "revoked")
    produce(kafka_bootstrap, [(t.runs, b"gone-1", run_event("gone-1", "failed"))])

    def settled(rs: list[Any]) -> bool:
        return bool(rs) and rs[-1]["active"] == 2 and rs[-1]["compliant"] == 1

    fleet = consume(kafka_bootstrap, t.fleet_convergence, until=settled, timeout=40)
    assert fleet[-1]["active"] == 2
    assert fleet[-1]["percent"] == 50.0
    assert fleet[-1]["by_status"]["converged"] == 1
    assert fleet[-1]["by_status"]["drifted"] == 1
    assert sum(fleet[-1]["by_status"].values()) == 2
    changes = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: True, timeout=5)
    # The enrollment and the first run are on different topics, so either may come first
    # (version 1 is then the enrollment or the implicit one); the revocation is last.
    gone = changes_of(changes, "gone-1")
    assert gone[-1][:2] == ("converged", "revoked") and gone[-1][3] == "revocation"
    assert [c[2] for c in gone] == list(range(1, len(gone) + 1))
    dead = consume(kafka_bootstrap, t.deadletter, until=lambda rs: bool(rs))
    assert [(d["reason"], d["key"]) for d in dead] == [("revoked", "gone-1")]


def test_duplicate_run_changes_nothing(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    t = TopicNames(topic_prefix)
    same = run_event("dup-1", "changed", run_id="run-dup-1")
    # The runs only once the enrollment is applied: topics are not ordered against each
    # other, and a run read first enrolls the envoy implicitly (a newcomer's run saw it).
    produce(kafka_bootstrap, [(t.enrollments, b"dup-1", enrollment("dup-1", interval_s=3600))])
    wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "dup-1") is not None)
    produce(
        kafka_bootstrap,
        [
            (t.runs, b"dup-1", same),
            (t.runs, b"dup-1", same),
            (t.runs, b"dup-1", same),
            (t.checkins, b"marker", checkin("marker")),
        ],
    )
    # Changes of one envoy arrive in order; the marker shows the batch was processed.
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "marker") is not None)
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: False, timeout=3)
    assert changes_of(out, "dup-1") == [
        (None, "no_data", 1, "enrollment"),
        ("no_data", "drifted", 2, "run"),
    ]


def test_each_dead_letter_reason_while_good_records_go_on(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    config = worker_config(
        kafka_bootstrap,
        topic_prefix,
        enrollment={"strict": True},
        processor={"max_event_bytes": 2048},
    )
    w = Worker(config, tmp_path).start()
    try:
        # Topics are not ordered against each other: enrollments first.
        produce(
            kafka_bootstrap,
            [
                (t.enrollments, b"good-1", enrollment("good-1", interval_s=3600)),
                (t.enrollments, b"gone", enrollment("gone", interval_s=3600)),
                (t.enrollments, b"gone", enrollment("gone", action="revoked")),
            ],
        )
        wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "gone") == "revoked")
        produce(
            kafka_bootstrap,
            [
                (t.runs, b"bad-1", b"{not json"),
                (t.runs, b"good-1", run_event("good-1", "changed")),
                (t.runs, b"bad-2", b'{"schema": "vigo.run/1", "envoy_id": "bad-2"}'),
                (t.checkins, b"bad-3", b'{"schema": "vigo.checkin/9", "envoy_id": "bad-3"}'),
                (t.checkins, b"stranger", checkin("stranger")),
                (t.checkins, b"gone", checkin("gone")),
                (t.runs, b"good-1", run_event("good-1", "x:ok", "y:" + "ok" * 0 + "ok")),
                (t.runs, b"big", run_event("big", *["ok"] * 60)),
                (t.checkins, b"other", checkin("good-1")),
                (t.runs, b"good-1", run_event("good-1", "ok")),
            ],
        )
        reasons = {
            "malformed_json",
            "schema_violation",
            "unknown_schema",
            "not_enrolled",
            "revoked",
            "too_large",
            "key_mismatch",
        }
        dead = consume(
            kafka_bootstrap,
            t.deadletter,
            until=lambda rs: {r["reason"] for r in rs} >= reasons,
            timeout=40,
        )
        by_key = {d["key"]: d["reason"] for d in dead}
        assert by_key == {
            "bad-1": "malformed_json",
            "bad-2": "schema_violation",
            "bad-3": "unknown_schema",
            "stranger": "not_enrolled",
            "gone": "revoked",
            "big": "too_large",
            "other": "key_mismatch",
        }
        assert all(d["topic"].startswith(topic_prefix) and d["error"] for d in dead)
        raw = {d["key"]: (d["value"], d["value_encoding"]) for d in dead}
        assert raw["bad-1"] == ("{not json", "utf-8")
        out = wait_changes(
            kafka_bootstrap,
            topic_prefix,
            lambda rs: len(changes_of(rs, "good-1")) >= 3,
        )
        assert [c[1] for c in changes_of(out, "good-1")] == ["no_data", "drifted", "converged"]
        assert "Traceback" not in w.log_text()
    finally:
        w.stop()


def test_events_from_a_foreign_producer_kcat(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The contract is language-neutral: librdkafka's kcat, keyed with the Java-default
    murmur2 partitioner, is processed like our own producer."""
    t = TopicNames(topic_prefix)
    lines = tmp_path / "kcat-input.txt"
    lines.write_bytes(
        b"kc-1|"
        + enrollment("kc-1", interval_s=3600, role="db")
        + b"\n"
        + b"kc-1|"
        + run_event("kc-1", "ok", "changed")
        + b"\n"
    )
    for topic, index in ((t.enrollments, 0), (t.runs, 1)):
        line = lines.read_bytes().splitlines()[index]
        subprocess.run(
            [
                "kcat",
                "-P",
                "-b",
                kafka_bootstrap,
                "-t",
                topic,
                "-K",
                "|",
                "-X",
                "topic.partitioner=murmur2_random",
            ],
            input=line + b"\n",
            check=True,
            timeout=30,
        )
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, "kc-1") == "drifted")
    assert changes_of(out, "kc-1") == [
        (None, "no_data", 1, "enrollment"),
        ("no_data", "drifted", 2, "run"),
    ]
    assert [r["labels"] for r in out if r["envoy_id"] == "kc-1"][-1] == {"role": "db"}


def test_worker_creates_its_topics_co_partitioned(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The worker declares every topic of the contract before it subscribes, inputs with
    `kafka.partitions` partitions (the fixture's 4), the fleet topics with one."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            names = [n for n in await admin.list_topics() if n.startswith(topic_prefix)]
            return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
        finally:
            await admin.close()

    t = TopicNames(topic_prefix)
    partitions = asyncio.run(describe())
    expected = {name: 4 for name in (*t.inputs, t.status_changes, t.deadletter, t.ticks)}
    expected |= {t.fleet_convergence: 1, t.fleet_partials: 1, t.alerts: 1}
    assert {name: partitions.get(name) for name in expected} == expected


# -- SPEC 10.1: a config rollout is not drift ------------------------------------------------


def runs_by_outcome(worker: Worker) -> dict[str, float]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vigo_runs_total"
    }


def history_outcomes(worker: Worker, envoy: str) -> list[str]:
    return [r["outcome"] for r in get_json(f"{worker.url}/api/envoys/{envoy}")["history"]]


def test_a_rollout_leaves_the_fleet_converged_and_a_repeat_still_drifts(
    worker: Worker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    t = TopicNames(topic_prefix)
    fleet = [f"roll-{i}" for i in range(6)]
    records = []
    for envoy in fleet:
        records.append((t.enrollments, envoy.encode(), enrollment(envoy, interval_s=3600)))
        records.append((t.runs, envoy.encode(), run_event(envoy, "ok", config_version="v1")))
    produce(kafka_bootstrap, records)
    consume(
        kafka_bootstrap,
        t.fleet_convergence,
        until=lambda rs: bool(rs) and rs[-1]["compliant"] == rs[-1]["active"] == 6,
        timeout=40,
    )

    # The rollout: every envoy reports changed resources once, under a new version.
    rollout = [
        (t.runs, envoy.encode(), run_event(envoy, "changed", "ok", config_version="v2"))
        for envoy in fleet
    ]
    produce(kafka_bootstrap, rollout)
    applied = poll(
        lambda: {envoy: history_outcomes(worker, envoy) for envoy in fleet},
        lambda seen: all(h[:1] == ["intentional"] for h in seen.values()),
        timeout=40,
    )
    assert applied == {envoy: ["intentional", "clean"] for envoy in fleet}
    compliance = get_json(worker.url + "/api/compliance")
    assert (compliance["percent"], compliance["by_status"]["drifted"]) == (100.0, 0)
    fleet_records = consume(
        kafka_bootstrap,
        t.fleet_convergence,
        until=lambda rs: bool(rs) and rs[-1]["active"] == 6,
        timeout=10,
    )
    assert fleet_records[-1]["percent"] == 100.0
    assert all(r["by_status"]["drifted"] == 0 for r in fleet_records)
    changes = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: True, timeout=5)
    assert {c["to"] for c in changes if c["envoy_id"] in fleet} <= {"no_data", "converged"}
    assert runs_by_outcome(worker)["intentional"] == 6.0

    # Changes again under the same version are corrective: drifted, then relapsed.
    again = "roll-0"
    produce(
        kafka_bootstrap,
        [
            (t.runs, again.encode(), run_event(again, "changed", config_version="v2")),
            (t.runs, again.encode(), run_event(again, "changed")),
        ],
    )
    out = wait_changes(kafka_bootstrap, topic_prefix, lambda rs: last_to(rs, again) == "relapsed")
    tos = [c["to"] for c in out if c["envoy_id"] == again and c["to"] != "no_data"]
    assert tos == ["converged", "drifted", "relapsed"]
    assert history_outcomes(worker, again) == ["changed", "changed", "intentional", "clean"]
    fleet_records = consume(
        kafka_bootstrap,
        t.fleet_convergence,
        until=lambda rs: bool(rs) and rs[-1]["by_status"]["relapsed"] == 1,
        timeout=20,
    )
    assert fleet_records[-1]["by_status"]["converged"] == 5
