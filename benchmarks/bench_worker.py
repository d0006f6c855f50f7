"""Worker throughput on a preloaded backlog, end-to-end latency, and the baseline of a bare
aiokafka loop applying the same rules to a dict, all in one run on one broker.

Run: .venv/bin/python benchmarks/bench_worker.py [--envoys 10000] [--events 200000]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

Figures printed:
- worker events/s: a fresh `vigo-processor worker` working off a preloaded backlog
  (time from its first committed offset to all input offsets committed);
- baseline events/s: decode_input + apply_event into a dict, in one aiokafka loop;
- latency p50/p95/p99: input record timestamp -> status-change record timestamp, for runs
  sent at a steady rate to a caught-up worker (each run flips its envoy's status).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "deploy" / "kafka")]

import kafkabroker  # noqa: E402

from tests.harness import Worker, worker_config  # noqa: E402
from vigo.projections.envoy import EnvoyState, Position, Rules, apply_event  # noqa: E402
from vigo.topics.decode import decode_input  # noqa: E402
from vigo.topics.events import DeadLetter, RecordMeta  # noqa: E402
from vigo.topics.names import TopicNames  # noqa: E402

#: Per resource: most runs of a healthy fleet are clean; about 1 in 5 changes something and
#: 1 in 50 has a failure.
RESULTS = ("ok",) * 987 + ("changed",) * 12 + ("failed",) * 1


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def build_backlog(envoys: int, events: int, seed: int = 1) -> list[tuple[int, bytes, bytes]]:
    """(topic index, key, value): enrollments first, then check-ins and runs (1:1)."""
    rng = random.Random(seed)
    now = time.time()
    out: list[tuple[int, bytes, bytes]] = []
    ids = [f"host-{i:07d}" for i in range(envoys)]
    for envoy in ids:
        doc = {
            "schema": "vigo.enrollment/1",
            "envoy_id": envoy,
            "action": "enrolled",
            "at": iso(now),
            "labels": {"env": "prod"},
            "checkin_interval_s": 3600,
        }
        out.append((0, envoy.encode(), orjson.dumps(doc)))
    for i in range(events - envoys):
        envoy = ids[rng.randrange(envoys)]
        if i % 2:
            doc = {"schema": "vigo.checkin/1", "envoy_id": envoy, "at": iso(now)}
            out.append((1, envoy.encode(), orjson.dumps(doc)))
        else:
            resources = [
                {"id": f"file[/etc/f{j}]", "module": f"m{j % 4}", "result": rng.choice(RESULTS)}
                for j in range(rng.randint(5, 30))
            ]
            doc = {
                "schema": "vigo.run/1",
                "envoy_id": envoy,
                "run_id": str(uuid.uuid4()),
                "started_at": iso(now),
                "finished_at": iso(now + i / 1000),
                "resources": resources,
            }
            out.append((2, envoy.encode(), orjson.dumps(doc)))
    return out


async def preload(
    bootstrap: str, names: TopicNames, records: list[tuple[int, bytes, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256_000)
    await producer.start()
    try:
        futures = [await producer.send(names.inputs[t], value=v, key=k) for t, k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(
            meta.offset
            for tp, meta in offsets.items()
            if ".envoy." in tp.topic and not tp.topic.endswith(("ticks", "status-changes"))
        )
    finally:
        await admin.close()


async def baseline(bootstrap: str, names: TopicNames, total: int) -> float:
    """The same rules on the same records, without Faust: decode, apply, keep in a dict."""
    consumer = AIOKafkaConsumer(
        *names.inputs,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{uuid.uuid4()}",
        max_poll_records=5000,
    )
    await consumer.start()
    states: dict[bytes, EnvoyState | None] = {}
    rules = Rules(default_interval_s=300)
    index = {name: i for i, name in enumerate(names.inputs)}
    seen = 0
    started = None
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            for tp, messages in batch.items():
                for m in messages:
                    meta = RecordMeta(tp.topic, tp.partition, m.offset, m.timestamp)
                    event = decode_input(m.key, m.value, meta)
                    seen += 1
                    if isinstance(event, DeadLetter):
                        continue
                    applied = apply_event(
                        states.get(m.key),
                        event,
                        m.timestamp,
                        rules,
                        Position(index[tp.topic], m.offset),
                    )
                    states[m.key] = applied.state
    finally:
        await consumer.stop()
    assert started is not None
    return seen / (time.perf_counter() - started)


def worker_throughput(bootstrap: str, prefix: str, total: int, partitions: int) -> float:
    group = f"{prefix}compliance"
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(
            worker_config(bootstrap, prefix, partitions=partitions, interval="5m"),
            Path(tmp),
            name="bench",
        )
        worker.start()
        try:
            first_t, first_n = None, 0
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                done = asyncio.run(committed_total(bootstrap, group))
                now = time.perf_counter()
                if first_t is None and done > 0:
                    first_t, first_n = now, done
                if done >= total:
                    assert first_t is not None
                    return (total - first_n) / max(now - first_t, 1e-9)
                time.sleep(0.25)
            raise SystemExit(f"worker did not finish the backlog: {done}/{total}")
        finally:
            worker.stop()


async def latency(
    bootstrap: str, names: TopicNames, envoys: int, rate: int, seconds: int
) -> list[float]:
    """Steady runs alternating clean and changed, so every run flips its envoy's status."""
    consumer = AIOKafkaConsumer(
        names.status_changes, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None
    )
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, int] = {}
    arrived: dict[str, int] = {}
    flip = 0

    async def collect() -> None:
        while True:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for m in messages:
                    run_id = orjson.loads(m.value).get("run_id")
                    if run_id:
                        arrived[run_id] = m.timestamp

    collector = asyncio.create_task(collect())
    try:
        for second in range(seconds):
            tick = time.monotonic()
            flip ^= 1
            pending = []
            for i in range(rate):
                envoy = f"host-{(second * rate + i) % envoys:07d}"
                run_id = str(uuid.uuid4())
                doc = {
                    "schema": "vigo.run/1",
                    "envoy_id": envoy,
                    "run_id": run_id,
                    "started_at": iso(time.time()),
                    "finished_at": iso(time.time() + 3600 + second),
                    "resources": [
                        {"id": "f", "module": "files", "result": "changed" if flip else "ok"}
                    ],
                }
                fut = await producer.send(names.runs, orjson.dumps(doc), key=envoy.encode())
                pending.append((run_id, fut))
            for run_id, fut in pending:
                sent[run_id] = (await fut).timestamp
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        await asyncio.sleep(3)
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    return [(arrived[r] - t) / 1000 for r, t in sent.items() if r in arrived]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500, help="runs/s for the latency phase")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()

    external = os.environ.get("VIGO_TEST_KAFKA")
    broker = None if external else kafkabroker.start_broker()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        names = TopicNames(prefix)
        records = build_backlog(args.envoys, args.events)
        # The worker creates the topics with the configured partition count; create them
        # the same way before preloading.
        asyncio.run(_create_topics(bootstrap, names, args.partitions))
        t0 = time.perf_counter()
        asyncio.run(preload(bootstrap, names, records))
        print(f"preloaded {len(records)} records in {time.perf_counter() - t0:.1f} s")

        base = asyncio.run(baseline(bootstrap, names, len(records)))
        rate = worker_throughput(bootstrap, prefix, len(records), args.partitions)

        # Latency on a caught-up worker.
        with tempfile.TemporaryDirectory() as tmp:
            worker = Worker(
                worker_config(bootstrap, prefix, partitions=args.partitions, interval="5m"),
                Path(tmp),
                name="lat",
            ).start()
            try:
                while asyncio.run(committed_total(bootstrap, f"{prefix}compliance")) < len(records):
                    time.sleep(0.5)
                lat = asyncio.run(latency(bootstrap, names, args.envoys, args.rate, args.seconds))
            finally:
                worker.stop()

        print()
        print(f"{'measure':<44}{'value':>14}")
        print(f"{'worker events/s (preloaded backlog)':<44}{rate:>14,.0f}")
        print(f"{'baseline events/s (bare aiokafka + rules)':<44}{base:>14,.0f}")
        print(f"{'worker / baseline':<44}{rate / base:>14.2f}")
        print(f"{'fleet of 1M envoys needs (events/s)':<44}{6_600:>14,}")
        if lat:
            print(f"{'latency p50 (ms), run -> status change':<44}{pct(lat, 50) * 1000:>14.1f}")
            print(f"{'latency p95 (ms)':<44}{pct(lat, 95) * 1000:>14.1f}")
            print(f"{'latency p99 (ms)':<44}{pct(lat, 99) * 1000:>14.1f}")
            print(f"{'latency samples':<44}{len(lat):>14}")
    finally:
        if broker is not None:
            broker.stop()


async def _create_topics(bootstrap: str, names: TopicNames, partitions: int) -> None:
    from aiokafka.admin import NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in names.inputs])
    finally:
        await admin.close()


if __name__ == "__main__":
    main()
