"""Publishing events (SPEC 10.6): the `Publisher` library and the `vigo-publish` command,
against a real broker and a real worker that applies what they send."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from tests.harness import Worker, consume, free_port, read_raw, worker_config
from tests.test_vigocli import one_line
from tests.webharness import http_get, poll
from topics.names import TopicNames
from topics.publish import EventRefused, Publisher, PublishError, run_doc

VIGO_PUBLISH = Path(sys.executable).parent / "vigo-publish"
PARTITIONS = 4


# -- Kafka's murmur2, written out here from the Java client's Utils.murmur2 -------------------


def kafka_murmur2(data: bytes) -> int:
    """The Java client's `Utils.murmur2` as a signed 32-bit int: an implementation of our
    own, so the test does not trust the partitioner it checks."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if tail:
        for i in reversed(range(len(tail))):
            h ^= tail[i] << (8 * i)
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """`Utils.toPositive(Utils.murmur2(key)) % numPartitions`, the Java default."""
    return (kafka_murmur2(key) & 0x7FFFFFFF) % partitions


def test_our_murmur2_gives_the_java_clients_test_vectors() -> None:
    # From Apache Kafka's UtilsTest.testMurmur2.
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: kafka_murmur2(key) for key in vectors} == vectors


# -- helpers ---------------------------------------------------------------------------------


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async def go() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            return {tp.partition: n for tp, n in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(go())


def envoy(worker: Worker, envoy_id: str, done: Any = bool) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        reply = http_get(f"{worker.url}/api/envoys/{envoy_id}")
        return reply.json() if reply.status == 200 else {}

    doc: dict[str, Any] = poll(fetch, lambda d: bool(d) and done(d), timeout=60)
    return doc


def changes(bootstrap: str, prefix: str, envoy_id: str, count: int) -> list[tuple[Any, ...]]:
    records = consume(
        bootstrap,
        TopicNames(prefix).status_changes,
        until=lambda rs: sum(r["envoy_id"] == envoy_id for r in rs) >= count,
        timeout=40,
    )
    return [(r["from"], r["to"], r["cause"]) for r in records if r["envoy_id"] == envoy_id]


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    prefix = f"pub{free_port()}."
    config = worker_config(kafka_bootstrap, prefix, partitions=PARTITIONS, interval="1h")
    w = Worker(config, tmp_path_factory.mktemp("publish")).start()
    try:
        yield w
    finally:
        w.stop()


def prefix_of(worker: Worker) -> str:
    prefix: str = worker.config["kafka"]["topic_prefix"]
    return prefix


# -- the library -----------------------------------------------------------------------------


def test_every_event_type_is_applied_by_a_real_worker(kafka_bootstrap: str, worker: Worker) -> None:
    prefix = prefix_of(worker)

    async def enroll() -> list[Any]:
        async with Publisher(kafka_bootstrap, topic_prefix=prefix) as p:
            return [await p.enroll("lib-1", {"env": "prod"}, interval_s=600)]

    async def report() -> list[Any]:
        async with Publisher(kafka_bootstrap, topic_prefix=prefix) as p:
            sent = [await p.checkin("lib-1")]
            changed = {"resources": [{"id": "file[/a]", "module": "files", "result": "changed"}]}
            sent.append(await p.run("lib-1", changed))
            sent.append(await p.run("lib-1", {"resources": [], "run_id": "lib-1-second"}))
            sent.append(await p.enroll("lib-2"))
            sent.append(await p.revoke("lib-2"))
            return sent

    # Topics are not ordered against each other: the enrollment is applied first.
    sent = asyncio.run(enroll())
    envoy(worker, "lib-1")
    sent += asyncio.run(report())
    t = TopicNames(prefix)
    assert [m.topic for m in sent] == [
        t.enrollments,
        t.checkins,
        t.runs,
        t.runs,
        t.enrollments,
        t.enrollments,
    ]
    doc = envoy(worker, "lib-1", lambda d: len(d["history"]) == 2)
    assert (doc["status"], doc["labels"], doc["interval_s"]) == ("converged", {"env": "prod"}, 600)
    assert [h["outcome"] for h in doc["history"]] == ["clean", "changed"]
    assert doc["history"][0]["run_id"] == "lib-1-second"
    assert changes(kafka_bootstrap, prefix, "lib-1", 3) == [
        (None, "no_data", "enrollment"),
        ("no_data", "drifted", "run"),
        ("drifted", "converged", "run"),
    ]
    assert changes(kafka_bootstrap, prefix, "lib-2", 2) == [
        (None, "no_data", "enrollment"),
        ("no_data", "revoked", "revocation"),
    ]


def test_a_key_lands_on_kafkas_murmur2_partition(kafka_bootstrap: str, worker: Worker) -> None:
    keys = [f"host-{i:03d}.example" for i in range(40)] + ["ünï-cødé", "a", "web-01"]

    async def go() -> list[int]:
        async with Publisher(kafka_bootstrap, topic_prefix=prefix_of(worker)) as p:
            return [(await p.checkin(key)).partition for key in keys]

    partitions = asyncio.run(go())
    assert partitions == [kafka_partition(k.encode(), PARTITIONS) for k in keys]
    assert len(set(partitions)) == PARTITIONS  # the keys do spread


@pytest.mark.parametrize(
    ("call", "reason", "names"),
    [
        (lambda p: p.enroll("bad-1", {"env": "x" * 256}), "schema_violation", "labels.env"),
        (lambda p: p.enroll("bad\n2"), "schema_violation", "envoy_id"),
        (lambda p: p.enroll("bad-3", interval_s=5), "schema_violation", "checkin_interval_s"),
        (lambda p: p.checkin("bad-4", at="yesterday"), "schema_violation", "at: must be date-time"),
        (lambda p: p.run("bad-5", {}), "schema_violation", "missing required field(s) resources"),
        (
            lambda p: p.run("bad-6", {"resources": [{"id": "x", "module": "m", "result": "meh"}]}),
            "schema_violation",
            "resources[0].result: must be one of ok, changed, failed",
        ),
        (
            lambda p: p.run("bad-7", {"envoy_id": "other", "resources": []}),
            "key_mismatch",
            "differs from envoy_id 'other'",
        ),
        (lambda p: p.run("bad-8", {"schema": "vigo.run/2", "resources": []}), "unknown_schema", ""),
    ],
)
def test_a_bad_event_is_refused_before_it_is_sent(
    kafka_bootstrap: str, worker: Worker, call: Any, reason: str, names: str
) -> None:
    t = TopicNames(prefix_of(worker))
    before = {topic: end_offsets(kafka_bootstrap, topic) for topic in t.inputs}

    async def go() -> None:
        async with Publisher(kafka_bootstrap, topic_prefix=prefix_of(worker)) as p:
            await call(p)

    with pytest.raises(EventRefused) as refused:
        asyncio.run(go())
    assert refused.value.reason == reason
    assert names in str(refused.value)
    assert str(refused.value).startswith(f"{reason}: ")
    assert {topic: end_offsets(kafka_bootstrap, topic) for topic in t.inputs} == before


def test_run_fields_are_filled_only_when_absent() -> None:
    doc = run_doc("web-01", {"resources": [], "finished_at": "2026-11-27T12:05:04Z"})
    assert doc["schema"] == "vigo.run/1" and doc["envoy_id"] == "web-01"
    assert len(doc["run_id"]) == 36
    assert doc["started_at"] == doc["finished_at"] == "2026-11-27T12:05:04Z"
    given = run_doc("web-01", {"resources": [], "run_id": "r1", "started_at": "x"})
    assert (given["run_id"], given["started_at"]) == ("r1", "x")
    assert given["finished_at"].endswith("Z")


def test_unreachable_kafka_is_a_publish_error() -> None:
    async def go() -> None:
        async with Publisher(f"127.0.0.1:{free_port()}", timeout_s=3) as p:
            await p.checkin("x")

    with pytest.raises(PublishError, match=r"cannot reach Kafka at 127\.0\.0\.1:"):
        asyncio.run(go())


# -- the command -----------------------------------------------------------------------------


def publish(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VIGO_PUBLISH), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_vigo_publish_enrolls_and_runs_from_stdin_and_file(
    kafka_bootstrap: str, worker: Worker, tmp_path: Path
) -> None:
    prefix = prefix_of(worker)
    kafka = ("--bootstrap", kafka_bootstrap, "--topic-prefix", prefix)
    done = publish(*kafka, "enroll", "cli-1", "--label", "env=prod", "--label", "role=web")
    assert done.returncode == 0, done
    assert one_line(done.stdout).startswith(f"sent vigo.enrollment/1 of cli-1 to {prefix}envoy.")
    # The worker's own configuration works as well as --bootstrap.
    config = ("--config", str(worker.workdir / f"{worker.name}.yaml"))
    done = publish(*config, "enroll", "cli-1", "--label", "env=prod", "--interval", "5m")
    assert done.returncode == 0, done
    # Topics are not ordered against each other: the enrollments are applied first.
    assert envoy(worker, "cli-1", lambda d: d["interval_s"] == 300)["labels"] == {"env": "prod"}
    changed = {"resources": [{"id": "pkg[nginx]", "module": "packages", "result": "changed"}]}
    done = publish(*kafka, "run", "cli-1", stdin=orjson.dumps(changed).decode())
    assert done.returncode == 0, done
    assert "run_id " in done.stdout
    path = tmp_path / "run.json"
    path.write_bytes(orjson.dumps({"resources": [], "run_id": "from-file", "config_version": "c1"}))
    done = publish(*config, "run", "cli-1", "--file", str(path))
    assert done.returncode == 0, done
    doc = envoy(worker, "cli-1", lambda d: len(d["history"]) == 2)
    assert (doc["labels"], doc["interval_s"], doc["status"]) == ({"env": "prod"}, 300, "converged")
    assert doc["history"][0]["run_id"] == "from-file"
    assert [h["outcome"] for h in doc["history"]] == ["clean", "changed"]
    done = publish(*kafka, "checkin", "cli-1")
    assert done.returncode == 0, done


def test_vigo_publish_refuses_a_bad_event_with_one_line_and_exit_1(
    kafka_bootstrap: str, worker: Worker, tmp_path: Path
) -> None:
    t = TopicNames(prefix_of(worker))
    kafka = ("--bootstrap", kafka_bootstrap, "--topic-prefix", prefix_of(worker))
    before = {topic: end_offsets(kafka_bootstrap, topic) for topic in t.inputs}
    bad_result = '{"resources": [{"id": "a", "module": "m", "result": "fine"}]}'
    cases = [
        (("run", "x"), '{"resources": [', "standard input: not JSON"),
        (("run", "x"), "[1, 2]", "the run must be a JSON object"),
        (("run", "x"), bad_result, "resources[0].result: must be one of ok, changed, failed"),
        (("run", "x"), "{}", "missing required field(s) resources"),
        (("enroll", "x", "--label", "env=" + "v" * 300), "", "labels.env"),
        (("enroll", "x", "--interval", "5s"), "", "checkin_interval_s"),
    ]
    for args, stdin, expected in cases:
        done = publish(*kafka, *args, stdin=stdin)
        assert done.returncode == 1, done
        line = one_line(done.stderr)
        assert line.startswith("vigo-publish: bad event, nothing sent: "), line
        assert expected in line
        assert done.stdout == ""
    # Even with Kafka out of reach, a bad event is a bad event (1), judged first.
    done = publish("--bootstrap", f"127.0.0.1:{free_port()}", "run", "x", stdin="{}")
    assert done.returncode == 1, done
    assert {topic: end_offsets(kafka_bootstrap, topic) for topic in t.inputs} == before


def test_vigo_publish_unreachable_kafka_is_exit_2() -> None:
    done = publish("--bootstrap", f"127.0.0.1:{free_port()}", "--timeout", "3", "checkin", "x")
    assert done.returncode == 2, done
    assert one_line(done.stderr).startswith("vigo-publish: cannot reach Kafka at 127.0.0.1:")


@pytest.mark.parametrize(
    "args",
    [
        ("--bootstrap", "h:1", "--config", "c.yaml", "checkin", "x"),
        ("--topic-prefix", "p.", "checkin", "x"),
        ("--bootstrap", "h:1", "enroll"),
        ("--bootstrap", "h:1", "enroll", "x", "--label", "no-equals"),
        ("--bootstrap", "h:1", "enroll", "x", "--interval", "soon"),
        ("--bootstrap", "h:1", "run", "x", "--file", "/nonexistent/run.json"),
        ("--bootstrap", "h:1", "launch", "x"),
        ("--config", "/nonexistent/vigo.yaml", "checkin", "x"),
    ],
)
def test_vigo_publish_usage_errors_exit_64(args: tuple[str, ...]) -> None:
    done = publish(*args)
    assert done.returncode == 64, done
    assert "Traceback" not in done.stderr


def test_published_records_carry_the_envoy_key(kafka_bootstrap: str, worker: Worker) -> None:
    t = TopicNames(prefix_of(worker))
    done = publish("--bootstrap", kafka_bootstrap, "--topic-prefix", t.prefix, "checkin", "key-1")
    assert done.returncode == 0, done
    records = [r for r in read_raw(kafka_bootstrap, t.checkins) if r.key == b"key-1"]
    assert len(records) == 1
    assert records[0].partition == kafka_partition(b"key-1", PARTITIONS)
    assert orjson.loads(records[0].value)["envoy_id"] == "key-1"
