"""Failure tests: a restart after downtime does not turn the fleet offline, and a worker
killed with SIGKILL mid-stream loses nothing and counts nothing twice."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2

from projections.envoy import EnvoyState, Rules, apply_event
from projections.fleet import FleetCounts
from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    get_json,
    http_json,
    metric_total,
    produce,
    read_raw,
    run_event,
    worker_config,
)
from tests.smtpserver import SmtpServer
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames


def one_per_partition(prefix: str, partitions: int = 4) -> list[str]:
    """Envoy ids whose keys land on every partition (Kafka's default partitioner), so
    that the sweeps of every partition are seen to run."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        envoy = f"{prefix}-{n}"
        found.setdefault((murmur2(envoy.encode()) & 0x7FFFFFFF) % partitions, envoy)
        n += 1
    return [found[p] for p in range(partitions)]


def stale_envoys(alerts: list[Any]) -> set[str]:
    """The envoys of the outbox's stale alerts."""
    return {
        e["envoy_id"]
        for a in alerts
        if a["event"] == "envoy.stale"
        for e in a["details"].get("envoys", [])
    }


def last_to(records: list[Any], envoys: list[str], status: str) -> bool:
    last = {r["envoy_id"]: r["to"] for r in records}
    return all(last.get(e) == status for e in envoys)


class Heartbeat(threading.Thread):
    """Envoys that keep checking in every second, as a real fleet would."""

    def __init__(self, bootstrap: str, topic: str, envoys: list[str]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.envoys = bootstrap, topic, envoys
        self.halt = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self.halt.is_set():
            produce(self.bootstrap, [(self.topic, e.encode(), checkin(e)) for e in self.envoys])
            self.rounds += 1
            self.halt.wait(1.0)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def test_restart_after_downtime_marks_nobody_offline_who_checked_in(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    fleet = [f"bk-{i:03d}" for i in range(150)]
    markers = one_per_partition("late")
    worker = Worker(worker_config(kafka_bootstrap, topic_prefix, interval="2s"), tmp_path)
    worker.start()
    heartbeat = Heartbeat(kafka_bootstrap, t.checkins, [*fleet, *markers, "ctl-1"])
    try:
        heartbeat.start()
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: {r["envoy_id"] for r in rs} >= {*fleet, *markers, "ctl-1"},
            timeout=60,
        )
        heartbeat.envoys = [*fleet, *markers]  # the control envoy falls silent with the worker
        worker.stop()
        # Part of the scenario: down for 4 check-in intervals, so that a backlog of
        # check-ins piles up meanwhile.
        time.sleep(8)
        worker.start()
        # The control envoy never checks in again: it must go offline once caught up.
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: last_to(rs, ["ctl-1"], "offline"),
            timeout=60,
        )
        # The markers (one on each partition) fall silent after the catch-up: once they
        # are offline, every partition has been swept well after it.
        heartbeat.envoys = fleet
        out = consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: last_to(rs, markers, "offline"),
            timeout=60,
        )
    finally:
        heartbeat.stop()
        worker.stop()
    offline = sorted({r["envoy_id"] for r in out if r["to"] == "offline"})
    assert offline == sorted(["ctl-1", *markers]), f"envoys that checked in went offline: {offline}"
    assert heartbeat.rounds >= 10


def test_long_stop_past_stale_after_sends_no_stale_mail_for_envoys_that_checked_in(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """SPEC section 4: a worker down for longer than `stale_after` comes back without
    turning the envoys that kept checking in offline or stale, and mails no stale storm:
    only the envoy that really fell silent is mailed."""
    t = TopicNames(topic_prefix)
    fleet = [f"ls-{i:03d}" for i in range(60)]
    markers = one_per_partition("late")
    with SmtpServer() as smtp:
        smtp_config = {"host": "127.0.0.1", "port": smtp.port, "timeout_s": 5}
        config = worker_config(
            kafka_bootstrap,
            topic_prefix,
            checkin={"interval": "2s", "stale_after": "4s"},
            smtp={
                **smtp_config,
                "events": {"envoy.stale": {"digest_over": 100, "digest_window": "3s"}},
            },
        )
        worker = Worker(config, tmp_path)
        worker.start()
        heartbeat = Heartbeat(kafka_bootstrap, t.checkins, [*fleet, *markers, "quiet-1"])
        try:
            heartbeat.start()
            consume(
                kafka_bootstrap,
                t.status_changes,
                until=lambda rs: {r["envoy_id"] for r in rs} >= {*fleet, *markers, "quiet-1"},
                timeout=60,
            )
            heartbeat.envoys = [*fleet, *markers]  # the quiet envoy falls silent with the worker
            worker.stop()
            # Part of the scenario: down for 2.5 x stale_after while the fleet keeps
            # checking in.
            time.sleep(10)
            worker.start()
            (mail,) = smtp.wait_for(1, timeout=60)
            # The markers (one on each partition) fall silent after the catch-up: their
            # stale alerts come from sweeps past another stale_after, and any alert for
            # an envoy that kept checking in would have been written before them.
            heartbeat.envoys = fleet
            alerts = consume(
                kafka_bootstrap,
                t.alerts,
                until=lambda rs: stale_envoys(rs) >= set(markers),
                timeout=60,
            )
            smtp.wait_for(1 + len(markers), timeout=60)
            out = consume(
                kafka_bootstrap,
                t.status_changes,
                until=lambda rs: last_to(rs, markers, "offline"),
                timeout=60,
            )
        finally:
            heartbeat.stop()
            worker.stop()
        assert "quiet-1" in mail.subject
        assert stale_envoys(alerts) == {"quiet-1", *markers}
        mailed = sorted(m.subject for m in smtp.messages)
        assert len(mailed) == 1 + len(markers), mailed
        assert all(any(e in s for s in mailed) for e in ["quiet-1", *markers]), mailed
    offline = sorted({r["envoy_id"] for r in out if r["to"] == "offline"})
    assert offline == sorted(["quiet-1", *markers]), (
        f"envoys that checked in went offline: {offline}"
    )


def wait_for_interval(worker: Worker, envoy: str, interval_s: int, timeout: float = 60) -> None:
    """Until the worker owns `envoy`, is caught up, and judges it by `interval_s`."""
    deadline = time.monotonic() + timeout
    doc: Any = None
    while time.monotonic() < deadline:
        try:
            doc = get_json(f"{worker.url}/api/envoys/{envoy}")
            ready = get_json(f"{worker.url}/readyz")
        except OSError:
            time.sleep(0.3)
            continue
        if doc.get("interval_s") == interval_s and ready.get("ready"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{envoy} not judged by {interval_s} s: {doc}")


def offline_since(records: list[Any], since: float) -> dict[str, float]:
    """Envoy -> time of its offline change, for the changes made at or after `since`."""
    offline = {}
    for r in records:
        at = datetime.fromisoformat(r["at"]).timestamp()
        if r["to"] == "offline" and at >= since:
            offline[r["envoy_id"]] = at
    return offline


def test_a_raised_default_interval_applies_to_envoys_enrolled_before(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Envoys enrolled under a 2 s default without their own interval follow the 6 s
    default after a restart: silent for 7 s they are not offline (with the interval
    frozen at enrollment they would be at 4 s), and they do go offline at 12 s."""
    t = TopicNames(topic_prefix)
    fleet = [f"iv-{i:02d}" for i in range(12)]
    first = Worker(worker_config(kafka_bootstrap, topic_prefix, interval="2s"), tmp_path, "w1")
    second = Worker(worker_config(kafka_bootstrap, topic_prefix, interval="6s"), tmp_path, "w2")
    heartbeat = Heartbeat(kafka_bootstrap, t.checkins, [*fleet, "own-1"])
    try:
        first.start()
        produce(kafka_bootstrap, [(t.enrollments, e.encode(), enrollment(e)) for e in fleet])
        produce(kafka_bootstrap, [(t.enrollments, b"own-1", enrollment("own-1", interval_s=3600))])
        heartbeat.start()
        wait_for_interval(first, fleet[0], 2)
        first.stop()
        second.start()  # the fleet keeps checking in meanwhile
        wait_for_interval(second, fleet[0], 6)
        # The first worker may have stopped before it wrote own-1: the second reads its
        # enrollment after it is ready.
        wait_for_interval(second, "own-1", 3600)
        heartbeat.stop()
        silent_from = time.time()
        # Each offline change is dated by the deadline that expired (2 x the interval
        # after the last check-in), so its time tells which interval judged the envoy.
        late = offline_since(
            consume(
                kafka_bootstrap,
                t.status_changes,
                until=lambda rs: set(offline_since(rs, silent_from)) >= set(fleet),
                timeout=40,
            ),
            silent_from,
        )
    finally:
        if heartbeat.is_alive():
            heartbeat.stop()
        first.stop()
        second.stop()
    assert set(late) == set(fleet), "the 6 s default never took the silent fleet offline"
    # 2 x 6 s after the last check-in; the 2 s frozen at enrollment would give 4 s.
    assert min(late.values()) >= silent_from + 10, "judged by the 2 s interval of enrollment"


def recompute_fleet(bootstrap: str, names: TopicNames) -> tuple[FleetCounts, dict[str, Any]]:
    """The fleet numbers from the input topics alone, through the pure rules."""
    rules = Rules(default_interval_s=2)
    states: dict[str, EnvoyState | None] = defaultdict(lambda: None)
    for topic in (names.enrollments, names.runs):  # every enrollment precedes every run here
        for record in read_raw(bootstrap, topic):
            ts = record.timestamp
            meta = RecordMeta(topic, record.partition, record.offset, ts)
            event = decode_input(record.key, record.value, meta)
            if isinstance(event, DeadLetter):
                continue
            states[event.envoy_id] = apply_event(states[event.envoy_id], event, ts, rules).state
    final = {envoy: s.status for envoy, s in states.items() if s is not None}
    return FleetCounts.of_statuses(final.values()), final


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix, processor={"session_timeout_s": 6})
    first = Worker(config, tmp_path, name="w1").start()
    second = Worker(config, tmp_path, name="w2").start()
    rng = random.Random(7)
    fleet = [f"k-{i:03d}" for i in range(120)]
    try:
        produce(
            kafka_bootstrap,
            [(t.enrollments, e.encode(), enrollment(e, interval_s=3600)) for e in fleet],
        )
        sent_runs: list[tuple[str, bytes]] = []
        for round_no in range(16):
            batch = []
            for envoy in fleet:
                results = rng.choice([("ok",), ("changed",), ("a:ok", "b:failed"), ("ok", "ok")])
                value = run_event(envoy, *results, run_id=str(uuid.uuid4()))
                batch.append((t.runs, envoy.encode(), value))
                sent_runs.append((envoy, value))
            # At-least-once producers resend: replay a few earlier runs verbatim.
            for envoy, value in rng.sample(sent_runs, 10):
                batch.append((t.runs, envoy.encode(), value))
            produce(kafka_bootstrap, batch)
            if round_no == 6:
                first.kill()
            time.sleep(0.3)  # part of the scenario: rounds paced around the kill

        expected, final = recompute_fleet(kafka_bootstrap, t)

        def matches(rs: list[Any]) -> bool:
            return bool(rs) and rs[-1]["by_status"] == expected.as_dict()

        published = consume(kafka_bootstrap, t.fleet_convergence, until=matches, timeout=120)
        assert published[-1]["by_status"] == expected.as_dict()
        assert published[-1]["active"] == expected.active == len(fleet)
        assert published[-1]["compliant"] == expected.compliant
    finally:
        first.kill()
        second.stop()

    changes = consume(kafka_bootstrap, t.status_changes, timeout=15)
    by_version: dict[tuple[str, int], dict[str, Any]] = {}
    for change in changes:
        key = (change["envoy_id"], change["version"])
        # A replayed change is the same change, never a different one with the same version.
        assert by_version.setdefault(key, change) == change
    for envoy in fleet:
        versions = sorted(v for e, v in by_version if e == envoy)
        assert versions == list(range(1, len(versions) + 1)), envoy
        assert by_version[(envoy, versions[-1])]["to"] == final[envoy]


def test_two_workers_starting_together_consume_every_partition(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two workers joining at once rebalance twice; faust-streaming can leave a partition
    it kept through the second rebalance unfetched. The stall guard must fetch it again,
    so every record is processed."""
    t = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix)
    workers = [Worker(config, tmp_path, name=f"w{i}") for i in (1, 2)]
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        fleet = [f"tw-{i:02d}" for i in range(40)]
        produce(kafka_bootstrap, [(t.runs, e.encode(), run_event(e, "ok")) for e in fleet])
        out = consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: {r["envoy_id"] for r in rs} >= set(fleet),
            timeout=90,
        )
    finally:
        for worker in workers:
            worker.stop()
    assert {r["envoy_id"] for r in out} >= set(fleet)


def test_rocksdb_store_keeps_state_across_a_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The production store: state survives a restart and the worker carries on from it."""
    t = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix, processor={"store": "rocksdb"})
    worker = Worker(config, tmp_path)
    try:
        worker.start()
        produce(
            kafka_bootstrap,
            [(t.enrollments, b"rk-1", enrollment("rk-1", interval_s=3600, tier="gold"))],
        )
        produce(kafka_bootstrap, [(t.runs, b"rk-1", run_event("rk-1", "changed"))])
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["to"] == "drifted" for r in rs),
            timeout=40,
        )
        worker.stop()
        assert any((tmp_path / "w1-data").rglob("*")), "no RocksDB files were written"
        worker.start()
        produce(kafka_bootstrap, [(t.runs, b"rk-1", run_event("rk-1", "changed"))])
        out = consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["to"] == "relapsed" for r in rs),
            timeout=40,
        )
        # The partition's indexes are built from the database Faust also keeps its own
        # offset in: the listing must hold the envoy, and nothing may have crashed.
        status, listed = http_json(f"{worker.url}/api/envoys?status=relapsed")
        assert status == 200, listed
        assert [e["envoy_id"] for e in listed["envoys"]] == ["rk-1"], listed
        assert worker.proc is not None and worker.proc.poll() is None
        assert "Traceback" not in worker.log_text(), worker.log_text()[-3000:]
        # Its databases share one budget (SPEC 11.5, default 256 MiB), and say so.
        cache = metric_total(worker.url, "vigo_rocksdb_memory_bytes", 'part="block_cache"')
        memtables = metric_total(worker.url, "vigo_rocksdb_memory_bytes", 'part="memtables"')
        assert 0 < memtables <= cache <= 256 * 2**20, (memtables, cache)
    finally:
        worker.stop()
    # Relapsed (2 consecutive changed runs) only if the first run's state survived; the
    # version continues the chain (the enrollment and first run may come in either order).
    mine = [(r["to"], r["version"]) for r in out if r["envoy_id"] == "rk-1"]
    assert mine[-1][0] == "relapsed"
    assert [v for _, v in mine] == list(range(1, len(mine) + 1))
    assert out[-1]["labels"] == {"tier": "gold"}
