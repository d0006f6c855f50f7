"""Shared by the benchmark scripts: the machine line, a broker for the run, topic creation,
a SPEC-shaped run backlog, preloading, committed offsets of a group, process memory.

Not a benchmark itself. Scripts put the repository and deploy/kafka on sys.path first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

REPO = Path(__file__).resolve().parent.parent
for _path in (str(REPO), str(REPO / "deploy" / "kafka")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import kafkabroker  # noqa: E402

# aiokafka logs a coordinator that is still loading (a new broker's first group) as an
# error and retries: noise in the figures.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# A benchmark stopped with SIGTERM (timeout, CI) still stops its worker and its broker.
signal.signal(signal.SIGTERM, _terminate)

#: Outcome mix of the issue's backlog: 81% clean, 15% one changed resource, 3% one failed
#: resource (a partial run), 1% every resource failed (a failed run).
MIX = (("clean", 81), ("changed", 15), ("partial", 3), ("failed", 1))
MODULES = ("files", "packages", "services", "users")
T0_MS = 1_795_000_000_000  # 2026-11-17


def machine() -> str:
    """One line: cores, CPU, Python, Kafka."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError):
        load = " load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"machine: {os.cpu_count()} cores ({model or platform.machine()}){load}; "
        f"Python {platform.python_version()}; Kafka {kafkabroker.KAFKA_VERSION} on loopback"
    )


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """VIGO_TEST_KAFKA if set, else a broker of our own for the run (stopped after)."""
    external = os.environ.get("VIGO_TEST_KAFKA")
    if external:
        yield external
        return
    started = kafkabroker.start_broker()
    try:
        yield started.bootstrap
    finally:
        started.stop()


def new_prefix(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:6]}."


async def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, 1, topic_configs=config or {})]
                )
    finally:
        await admin.close()


async def create_offsets_topic(bootstrap: str, topic: str) -> None:
    """Make the broker create `__consumer_offsets` before anything is timed: a throw-away
    group commits one offset on `topic` (which must exist). A new broker creates the
    topic, and loads its partitions, at the first group's first coordinator request,
    which would otherwise be charged to whichever system happens to run first."""
    from aiokafka import AIOKafkaConsumer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"warm-up", key=b"warm-up", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-warmup-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        await consumer.commit({tp: sent.offset + 1})
    finally:
        await consumer.stop()


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def run_doc(envoy: str, finished_ms: int, kind: str, rng: random.Random) -> dict[str, Any]:
    """A SPEC section 3 run of 3-8 resources over the four modules, of outcome `kind`."""
    count = rng.randint(3, 8)
    resources: list[dict[str, Any]] = [
        {"id": f"file[/etc/app/conf{j}.d]", "module": MODULES[j % 4], "result": "ok"}
        for j in range(count)
    ]
    if kind == "changed":
        resources[rng.randrange(count)]["result"] = "changed"
    elif kind == "partial":
        victim = resources[rng.randrange(count)]
        victim["result"], victim["message"] = "failed", "exit status 1"
    elif kind == "failed":
        for resource in resources:
            resource["result"], resource["message"] = "failed", "exit status 1"
    return {
        "schema": "vigo.run/1",
        "envoy_id": envoy,
        "run_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "started_at": iso(finished_ms - 4000),
        "finished_at": iso(finished_ms),
        "config_version": "a1b2c3",
        "resources": resources,
    }


def envoy_id(i: int) -> str:
    return f"host-{i:07d}.prod.example.com"


def build_runs(runs: int, envoys: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value) of `runs` runs spread evenly over `envoys` envoys, in time order."""
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    out: list[tuple[bytes, bytes]] = []
    for i in range(runs):
        envoy = envoy_id(i % envoys)
        finished_ms = T0_MS + (i // envoys) * 300_000 + (i % envoys)
        doc = run_doc(envoy, finished_ms, rng.choice(kinds), rng)
        out.append((envoy.encode(), orjson.dumps(doc)))
    return out


def backlog_consumer(bootstrap: str, topic: str, kind: str) -> AIOKafkaConsumer:
    """The in-process readers' consumer: a new group from the beginning, large fetches
    (8 MiB a partition, 64 MiB a request, as the Quix peer's), commits by hand."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{kind}-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


async def preload(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, int]]
) -> int:
    """Send every record (to the partition given as a third element, if any) and wait."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1_000_000, acks=1
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for record in records:
            fields: tuple[Any, ...] = record
            key, value = fields[0], fields[1]
            partition = fields[2] if len(fields) > 2 else None
            pending.append(await producer.send(topic, value=value, key=key, partition=partition))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


class Incomplete(Exception):
    """The group stopped short of the end: its process exited, or the time ran out."""

    def __init__(self, message: str, done: int, seconds: float) -> None:
        super().__init__(message)
        self.done, self.seconds = done, seconds


class CommitWatch:
    """Polls a group's committed offsets on one topic; one admin client for the watch."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.admin: AIOKafkaAdminClient | None = None

    async def __aenter__(self) -> CommitWatch:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def committed(self) -> int:
        assert self.admin is not None
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.group)
        except Exception:  # the group may not exist yet
            return 0
        return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == self.topic)

    async def until(
        self,
        total: int,
        started: float,
        timeout: float,
        alive: Any = None,
        stall: float | None = None,
    ) -> tuple[float, float, int]:
        """Wait until `total` offsets are committed. Returns (seconds since `started`,
        seconds from the first commit seen, offsets committed at that first commit).
        Raises Incomplete when the process exits, on `timeout`, or when the committed
        offsets do not move for `stall` seconds after the first commit."""
        first_t: float | None = None
        first_n = 0
        deadline = started + timeout
        last_n, last_move = 0, started
        while True:
            done = await self.committed()
            now = time.perf_counter()
            if first_t is None and done > 0:
                first_t, first_n = now, done
            if done != last_n:
                last_n, last_move = done, now
            elif stall is not None and now - last_move > stall:
                message = (
                    f"{self.group}: committed offsets stuck at {done}/{total} for {stall:.0f}s"
                )
                raise Incomplete(message, done, last_move - started)
            if done >= total:
                assert first_t is not None
                return now - started, now - first_t, first_n
            if now > deadline:
                message = f"{self.group}: {done}/{total} committed after {timeout:.0f}s"
                raise Incomplete(message, done, now - started)
            if alive is not None and not alive():
                message = f"{self.group}: process exited at {done}/{total} committed"
                raise Incomplete(message, done, now - started)
            await asyncio.sleep(0.1)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (VmRSS from /proc)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids.extend(int(c) for c in children)
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
