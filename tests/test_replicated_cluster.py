"""A worker on three replicated brokers loses the leader of most of its input partitions
(SPEC 9, 11.4 "Broker outages", 11.5 "Replication").

Three combined broker+controller nodes form one KRaft quorum (`kafkabroker.start_cluster`);
the worker runs with `kafka.replication_factor: 3`, so its topics get
`min.insync.replicas` 2 and its acks=all producer has every output on two nodes before it
counts as sent. A backlog of enrollments and RUNS runs of a few thousand envoys is
produced while the worker starts; once it has applied KILL_AFTER runs, the broker that
leads the most input partitions is SIGKILLed and stays down. The worker must keep
running, finish the backlog on the two brokers left, and publish what an oracle computes
from the input topics alone: every envoy's final status, a status-change version chain
1..N without a gap and without two contents for one version, and the fleet numbers.

The summary line gives the stall: the longest time `vigo_events_total` did not move
after the kill. The killed broker is restarted on its data dir at the end (it must
rejoin), then the cluster is stopped.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import kafkabroker
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from processor.config import Settings
from processor.topics_admin import ensure_topics, topic_plan
from projections.fleet import FleetCounts
from tests.harness import (
    Worker,
    consume,
    enrollment,
    metric_total,
    run_event,
    worker_config,
)
from tests.test_broker_outage import oracle
from tests.test_chaos import check_versions
from tests.test_topics_admin import min_insync_replicas
from topics.names import TopicNames

RUNS = 200_000
ENVOYS = [f"r-{i:04d}" for i in range(3000)]
#: Applied runs after which the leader of the most input partitions is killed.
KILL_AFTER = 30_000
#: No envoy goes offline during the test (the oracle's rule): statuses come from runs.
INTERVAL_S = 3600
PREFIX = "replicated."
PARTITIONS = 4
OUTCOMES = [("ok",), ("ok", "ok"), ("changed",), ("a:ok", "b:failed"), ("failed",)]

Record = tuple[str, bytes, bytes]


def backlog(names: TopicNames, rng: random.Random) -> list[Record]:
    """Enrollments, then RUNS runs in random envoy order, 1% of them sent twice."""
    records: list[Record] = [
        (names.enrollments, e.encode(), enrollment(e, interval_s=INTERVAL_S)) for e in ENVOYS
    ]
    runs: list[Record] = []
    while len(runs) < RUNS:
        if runs and rng.random() < 0.01:
            runs.append(rng.choice(runs))  # an at-least-once producer's resend
            continue
        envoy = rng.choice(ENVOYS)
        value = run_event(envoy, *rng.choice(OUTCOMES), run_id=str(uuid.uuid4()))
        runs.append((names.runs, envoy.encode(), value))
    return records + runs


class Producer(threading.Thread):
    """Sends the backlog (acks=all) while the worker starts; `done` is when the last
    record was acknowledged."""

    def __init__(self, bootstrap: str, records: list[Record]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.records = bootstrap, records
        self.done: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
            self.done = time.monotonic()
        except BaseException as exc:
            self.error = exc

    async def _send(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=20, max_batch_size=256_000
        )
        await producer.start()
        try:
            for topic, key, value in self.records:
                await producer.send(topic, value=value, key=key)
            await producer.flush()
        finally:
            await producer.stop()


class Progress(threading.Thread):
    """Samples the worker's input records processed (`vigo_events_total`, any outcome)
    four times a second, and whether its process still runs."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.samples: list[tuple[float, float]] = []
        self.exited: int | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            assert self.worker.proc is not None
            if self.exited is None:
                self.exited = self.worker.proc.poll()
            self.samples.append((time.monotonic(), processed(self.worker)))
            self.halt.wait(0.25)

    def longest_stall(self, since: float) -> tuple[float, float]:
        """The longest time without progress after `since`, and when it began."""
        longest, began = 0.0, since
        last_t, last_v = since, None
        for t, v in self.samples:
            if t < since:
                last_v = v
                continue
            if last_v is None or v > last_v:
                if t - last_t > longest:
                    longest, began = t - last_t, last_t
                last_t, last_v = t, v
        return longest, began

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(10)


def processed(worker: Worker) -> float:
    """Input records processed (any outcome; a record processed again counts again)."""
    names = TopicNames(PREFIX)
    return sum(
        metric_total(worker.url, "vigo_events_total", f'topic="{topic}"', timeout=2)
        for topic in (names.enrollments, names.runs)
    )


def applied_runs(worker: Worker, names: TopicNames) -> float:
    return metric_total(
        worker.url, "vigo_events_total", f'topic="{names.runs}"', 'outcome="applied"'
    )


async def leaders(bootstrap: str, topics: list[str]) -> Counter[int]:
    """How many of the topics' partitions each node leads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        led: Counter[int] = Counter()
        for topic in await admin.describe_topics(topics):
            for partition in topic["partitions"]:
                led[partition["leader"]] += 1
        return led
    finally:
        await admin.close()


def wait_for(what: str, check: Any, timeout: float, worker: Worker) -> None:
    """Poll `check()` until it holds; the worker must stay up meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc is not None and worker.proc.poll() is None, (
            f"the worker exited while waiting for {what}:\n{worker.log_text()[-4000:]}"
        )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s:\n{worker.log_text()[-4000:]}")
        time.sleep(0.25)


@pytest.mark.timeout(420)
def test_a_worker_rides_out_the_loss_of_its_busiest_broker(tmp_path: Path) -> None:
    started = time.monotonic()
    cluster = kafkabroker.start_cluster(3, tmp_path / "kafka")
    names = TopicNames(PREFIX)
    config = worker_config(
        cluster.bootstrap,
        PREFIX,
        partitions=PARTITIONS,
        interval=f"{INTERVAL_S}s",
        kafka={"replication_factor": 3},
        processor={"session_timeout_s": 10},
    )
    settings = Settings.model_validate(config)
    assert settings.kafka.min_isr == 2
    worker = Worker(config, tmp_path)
    progress = Progress(worker)
    records = backlog(names, random.Random(5))
    producer = Producer(cluster.bootstrap, records)
    victim: kafkabroker.Broker | None = None
    try:
        cluster_up = time.monotonic()
        asyncio.run(ensure_topics(settings, {}))
        plan = list(topic_plan(settings))
        isr = min_insync_replicas(cluster.bootstrap, plan)
        assert isr == dict.fromkeys(plan, "2"), isr
        producer.start()
        worker.start()
        progress.start()
        wait_for(
            f"{KILL_AFTER} runs applied",
            lambda: applied_runs(worker, names) >= KILL_AFTER or producer.error is not None,
            150,
            worker,
        )
        assert producer.error is None, producer.error
        led = asyncio.run(leaders(cluster.bootstrap, [*names.inputs, names.ticks]))
        node, most = led.most_common(1)[0]
        victim = cluster.broker(node)
        before = applied_runs(worker, names)
        killed_at = time.monotonic()
        victim.kill()
        wait_for("the backlog produced", lambda: producer.done or producer.error, 120, worker)
        assert producer.error is None, producer.error
        wait_for(
            "the backlog processed",
            lambda: processed(worker) >= len(records),
            240,
            worker,
        )
        caught_up_at = time.monotonic()
        progress.stop()
        stall, stall_began = progress.longest_stall(killed_at)
        expected = oracle(cluster.bootstrap, names)
        counts = FleetCounts.of_statuses(expected.values())

        def settled(published: list[Any]) -> bool:
            return bool(published) and published[-1]["by_status"] == counts.as_dict()

        published = consume(cluster.bootstrap, names.fleet_convergence, until=settled, timeout=60)
        changes = consume(cluster.bootstrap, names.status_changes, timeout=60)
        assert worker.proc is not None and worker.proc.poll() is None
        checked_at = time.monotonic()
        victim.restart()
        assert victim.node_id in (kafkabroker.live_brokers(kafkabroker.HOST, victim.port) or [])
        restarted_at = time.monotonic()
    finally:
        progress.stop()
        worker.kill()
        cluster.stop()

    print(
        f"\nreplicated cluster: 3 brokers up in {cluster_up - started:.0f} s; "
        f"{len(records)} records ({RUNS} runs, {len(ENVOYS)} envoys) produced in "
        f"{producer.done - cluster_up if producer.done else float('nan'):.0f} s; "
        f"node {node} (leader of {most} of {sum(led.values())} input partitions) SIGKILLed "
        f"after {before:.0f} runs applied; backlog done {caught_up_at - killed_at:.0f} s "
        f"after the kill; longest stall {stall:.1f} s (from {stall_began - killed_at:+.1f} s "
        f"after the kill); oracle and checks {checked_at - caught_up_at:.0f} s; "
        f"killed broker restarted in {restarted_at - checked_at:.0f} s; "
        f"{len(changes)} status changes; {time.monotonic() - started:.0f} s in all"
    )
    assert progress.exited is None, f"the worker exited with {progress.exited}"
    assert before < RUNS  # the broker went down with a backlog left
    assert published[-1]["by_status"] == counts.as_dict(), (published[-1], counts.as_dict())
    assert published[-1]["active"] == len(expected) == len(ENVOYS)
    check_versions(changes, expected, {})


@pytest.fixture(autouse=True)
def _show_print(capsys: pytest.CaptureFixture[str]) -> Any:
    """The summary line is part of the result: shown even when the test passes."""
    yield
    with capsys.disabled():
        print(capsys.readouterr().out, end="")
