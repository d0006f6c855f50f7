"""Integration-test harness: real `vigo-processor worker` subprocesses against the real
broker, and small synchronous producer/consumer helpers built on aiokafka."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "kafka"))
import kafkabroker

from tests.eventgen import iso

REPO = Path(__file__).resolve().parent.parent
PROCESSOR = Path(sys.executable).parent / "vigo-processor"


def _below_ephemeral_ports() -> range:
    """Ports under the kernel's ephemeral range, where no outgoing connection (a Kafka
    client's, an HTTP probe's) takes its local port: a port found free inside that range
    can be taken by one before the worker binds it (seen in CI: "address already in
    use" on a worker's web port). Brokers pick from the 6,000 below these."""
    low = kafkabroker.ephemeral_port_floor()
    return range(max(1024, low - 6000), low)


_PORTS = _below_ephemeral_ports()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1, not handed out before by this process, picked at random
    below the ephemeral range (so that parallel test processes rarely pick the same)."""
    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range is crowded: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_config(
    bootstrap: str, prefix: str, *, partitions: int = 4, interval: str = "2s", **sections: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": partitions},
        "checkin": {"interval": interval},
        "smtp": {"events": {}},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


#: Every worker started, in order: conftest's `no_worker_outlives_its_test` kills what a
#: test started and left running (a failed assertion before its `finally`).
STARTED: list[Worker] = []


@dataclass
class Worker:
    """One `vigo-processor worker` subprocess with its own data dir, web port and log."""

    config: dict[str, Any]
    workdir: Path
    name: str = "w1"
    env: dict[str, str] = field(default_factory=dict)
    web_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, wait: bool = True, timeout: float = 90) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.web_port:
            self.web_port = free_port()
        config = dict(self.config)
        config["web"] = {**config.get("web", {}), "port": self.web_port, "host": "127.0.0.1"}
        config["processor"] = {
            **config.get("processor", {}),
            "data_dir": str(self.workdir / f"{self.name}-data"),
        }
        path = self.workdir / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(PROCESSOR), "worker", "--config", str(path), "-l", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        STARTED.append(self)
        if wait:
            self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90) -> None:
        """Ready = Faust says so and the web server answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_text()[-4000:]}")
            if "[^Worker]: Ready" in self.log_text():
                try:
                    urllib.request.urlopen(self.url + "/healthz", timeout=2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.3)
        raise AssertionError(f"worker {self.name} not ready:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send (topic, key, value) records in order and wait until all are acknowledged."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            await producer.start()
            for topic, key, value in records:
                await producer.send(topic, value=value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    run(go())


def send_one(
    bootstrap: str,
    topic: str,
    key: bytes,
    value: bytes,
    *,
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> None:
    """One record, to a chosen partition or with a chosen timestamp, acknowledged."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, value=value, key=key, partition=partition, timestamp_ms=timestamp_ms
            )
        finally:
            await producer.stop()

    run(go())


def consume(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool] | None = None,
    timeout: float = 30,
) -> list[Any]:
    """Every record of `topic` from the beginning, decoded as JSON, until `until(records)`
    holds or the timeout passes (then the records so far are returned). Without `until`:
    everything up to the end offsets as of the call."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, topic, timeout)
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            end = await consumer.end_offsets(tps) if until is None else {}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                for messages in batch.values():
                    records.extend(orjson.loads(m.value) for m in messages if m.value)
                if until is not None and until(records):
                    break
                if until is None:
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                        break
            return records
        finally:
            await consumer.stop()

    return run(go())  # type: ignore[no-any-return]


def read_raw(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of `topic` up to its end offsets, raw (aiokafka ConsumerRecords),
    ordered by partition and offset."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic, timeout)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=300)).values():
                    records.extend(messages)
                if all([await consumer.position(tp) >= end[tp] for tp in tps]):
                    break
            return sorted(records, key=lambda r: (r.partition, r.offset))
        finally:
            await consumer.stop()

    return run(go())  # type: ignore[no-any-return]


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)


# -- event builders (JSON bytes as an envoy would send them) ---------------------------------


def replayed_states(
    bootstrap: str, topics: Iterable[str], rules: Any, timeout: float = 60
) -> dict[str, Any]:
    """Every envoy's `EnvoyState` from the input `topics` alone (read in this order, each
    in partition and offset order) through the pure rules: the oracle of the soak tests."""
    from projections.envoy import apply_event
    from topics.decode import decode_input
    from topics.events import DeadLetter, RecordMeta

    states: dict[str, Any] = {}
    for topic in topics:
        for record in read_raw(bootstrap, topic, timeout=timeout):
            meta = RecordMeta(topic, record.partition, record.offset, record.timestamp)
            event = decode_input(record.key, record.value, meta)
            assert not isinstance(event, DeadLetter), event
            previous = states.get(event.envoy_id)
            states[event.envoy_id] = apply_event(previous, event, record.timestamp, rules).state
    return states


def enrollment(
    envoy: str, action: str = "enrolled", interval_s: int | None = None, **labels: str
) -> bytes:
    doc: dict[str, Any] = {
        "schema": "vigo.enrollment/1",
        "envoy_id": envoy,
        "action": action,
        "at": iso(int(time.time() * 1000)),
        "labels": labels,
    }
    if interval_s is not None:
        doc["checkin_interval_s"] = interval_s
    return orjson.dumps(doc)


def checkin(envoy: str) -> bytes:
    return orjson.dumps(
        {"schema": "vigo.checkin/1", "envoy_id": envoy, "at": iso(int(time.time() * 1000))}
    )


def run_event(
    envoy: str,
    *results: str,
    run_id: str | None = None,
    module_errors: Iterable[str] = (),
    config_version: str | None = None,
    finished_ms: int | None = None,
) -> bytes:
    """A run whose resources have `results`; `module:result` puts a resource in a module.
    `config_version` is left out of the event when None. It finishes now, or at
    `finished_ms` after starting a second earlier."""
    now = iso(int(time.time() * 1000) if finished_ms is None else finished_ms)
    started = now if finished_ms is None else iso(finished_ms - 1000)
    resources = []
    for i, spec in enumerate(results):
        module, _, result = spec.rpartition(":")
        resources.append({"id": f"res[{i}]", "module": module or f"m{i}", "result": result})
    event: dict[str, Any] = {
        "schema": "vigo.run/1",
        "envoy_id": envoy,
        "run_id": run_id or str(uuid.uuid4()),
        "started_at": started,
        "finished_at": now,
        "resources": resources,
        "module_errors": [{"module": m, "message": "boom"} for m in module_errors],
    }
    if config_version is not None:
        event["config_version"] = config_version
    return orjson.dumps(event)


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return orjson.loads(response.read())


def http_json(url: str, timeout: float = 5) -> tuple[int | None, Any]:
    """The HTTP status `url` answers with and its JSON body (None when it is not JSON);
    (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    except OSError:
        return None, None
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, None


def metric_total(url: str, name: str, *label_parts: str, timeout: float = 5) -> float:
    """The sum of the samples of metric `name` on `url`/metrics whose line holds every
    one of `label_parts` (e.g. 'outcome="applied"'); 0 when the worker does not answer."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(part in line for part in label_parts):
            total += float(line.rsplit(" ", 1)[1])
    return total
