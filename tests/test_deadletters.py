"""Dead letters (SPEC 10.5): the metric from a real `/metrics` scrape, and `vigocli
deadletters list|replay` as an operator runs them, against a worker in strict mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.cli.deadletters import parse_deadletter
from tests.harness import Worker, consume, free_port, produce, read_raw, worker_config
from tests.test_publish import end_offsets, envoy
from tests.test_vigocli import one_line
from tests.webharness import VIGOCLI, http_get, poll
from topics.codec import encode_deadletter
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames
from topics.publish import Publisher

CHANGED = {"resources": [{"id": "file[/etc/motd]", "module": "files", "result": "changed"}]}


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    config = worker_config(
        kafka_bootstrap, f"dl{free_port()}.", interval="1h", enrollment={"strict": True}
    )
    w = Worker(config, tmp_path_factory.mktemp("deadletters")).start()
    try:
        yield w
    finally:
        w.stop()


def topics(worker: Worker) -> TopicNames:
    return TopicNames(worker.config["kafka"]["topic_prefix"])


def deadletters(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    """`vigocli deadletters ...` with the worker's own configuration file."""
    config = str(worker.workdir / f"{worker.name}.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO_")}
    return subprocess.run(
        [str(VIGOCLI), "deadletters", *args, "--config", config],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done
    return orjson.loads(done.stdout)


def deadletter_count(worker: Worker, reason: str) -> float:
    text = http_get(worker.url + "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vigo_deadletters_total" and sample.labels == {"reason": reason}:
                return sample.value
    raise AssertionError(f"no vigo_deadletters_total{{reason={reason!r}}} in:\n{text}")


def publish(bootstrap: str, worker: Worker, call: Callable[[Publisher], Awaitable[Any]]) -> None:
    async def go() -> None:
        async with Publisher(bootstrap, topic_prefix=topics(worker).prefix) as p:
            await call(p)

    asyncio.run(go())


def publish_run(bootstrap: str, worker: Worker, envoy_id: str, run: dict[str, Any]) -> None:
    publish(bootstrap, worker, lambda p: p.run(envoy_id, run))


def enroll(bootstrap: str, worker: Worker, envoy_id: str) -> None:
    publish(bootstrap, worker, lambda p: p.enroll(envoy_id, interval_s=3600))


def status_changes(bootstrap: str, worker: Worker, envoy_id: str) -> list[tuple[Any, ...]]:
    records = consume(bootstrap, topics(worker).status_changes, timeout=20)
    return [(r["from"], r["to"], r["cause"]) for r in records if r["envoy_id"] == envoy_id]


def test_a_refused_run_is_counted_listed_and_replayed_once(
    kafka_bootstrap: str, worker: Worker
) -> None:
    t = topics(worker)
    assert deadletter_count(worker, "not_enrolled") == 0
    assert deadletter_count(worker, "revoked") == 0
    publish_run(kafka_bootstrap, worker, "stray-1", {**CHANGED, "run_id": "stray-run-1"})
    poll(lambda: deadletter_count(worker, "not_enrolled"), lambda n: n == 1, timeout=30)
    assert deadletter_count(worker, "not_enrolled") == 1

    listed = as_json(deadletters(worker, "list", "--reason", "not_enrolled", "--json"))
    [dead] = listed["deadletters"]
    assert (dead["key"], dead["reason"], dead["state"]) == ("stray-1", "not_enrolled", "replayable")
    assert dead["topic"] == t.runs and dead["deadletter"]["topic"] == t.deadletter
    assert orjson.loads(dead["value"])["run_id"] == "stray-run-1"
    table = deadletters(worker, "list")
    assert table.returncode == 0, table
    assert table.stdout.splitlines()[0].split() == [
        "DEADLETTER",
        "REASON",
        "ORIGIN",
        "KEY",
        "STATE",
        "ERROR",
    ]
    assert "stray-1" in table.stdout and "replayable" in table.stdout

    # A dry run lists what it would send and sends nothing, not even the replays topic.
    runs_before = end_offsets(kafka_bootstrap, t.runs)
    dry = deadletters(worker, "replay", "--reason", "not_enrolled", "--dry-run")
    assert dry.returncode == 0, dry
    assert "would replay 1 not_enrolled dead letter;" in dry.stdout
    assert end_offsets(kafka_bootstrap, t.runs) == runs_before

    enroll(kafka_bootstrap, worker, "stray-1")
    assert envoy(worker, "stray-1")["status"] == "no_data"
    replayed = as_json(deadletters(worker, "replay", "--reason", "not_enrolled", "--json"))
    assert replayed["replayed"] == 1
    [row] = replayed["deadletters"]
    assert row["state"] == "replayable" and row["replayed_as"].startswith(f"{t.runs}/")
    doc = envoy(worker, "stray-1", lambda d: len(d["history"]) == 1)
    assert doc["status"] == "drifted"
    assert [h["run_id"] for h in doc["history"]] == ["stray-run-1"]
    # The replayed record is the original's key and value, marked with where it came from.
    copies = [r for r in read_raw(kafka_bootstrap, t.runs) if r.key == b"stray-1"]
    assert len(copies) == 2 and copies[1].value == copies[0].value
    origin = f"{t.runs}/{copies[0].partition}/{copies[0].offset}"
    assert dict(copies[1].headers) == {"vigo-replayed-from": origin.encode()}

    # A second replay sends nothing: the dead letter is recorded as replayed.
    runs_before = end_offsets(kafka_bootstrap, t.runs)
    again = deadletters(worker, "replay", "--reason", "not_enrolled")
    assert again.returncode == 0, again
    assert "replayed 0 not_enrolled dead letters; 1 replayed before" in again.stdout
    assert "already replayed" in again.stdout
    assert end_offsets(kafka_bootstrap, t.runs) == runs_before
    listed = as_json(deadletters(worker, "list", "--reason", "not_enrolled", "--json"))
    assert [d["state"] for d in listed["deadletters"]] == ["replayed"]
    assert status_changes(kafka_bootstrap, worker, "stray-1") == [
        (None, "no_data", "enrollment"),
        ("no_data", "drifted", "run"),
    ]
    assert len(envoy(worker, "stray-1")["history"]) == 1
    assert deadletter_count(worker, "not_enrolled") == 1
    assert "Traceback" not in worker.log_text()


def test_revoked_is_counted_and_a_cut_value_is_listed_never_replayed(
    kafka_bootstrap: str, worker: Worker
) -> None:
    t = topics(worker)
    enroll(kafka_bootstrap, worker, "gone-1")
    envoy(worker, "gone-1")
    publish(kafka_bootstrap, worker, lambda p: p.revoke("gone-1"))
    envoy(worker, "gone-1", lambda d: d["status"] == "revoked")
    publish_run(kafka_bootstrap, worker, "gone-1", CHANGED)
    poll(lambda: deadletter_count(worker, "revoked"), lambda n: n == 1, timeout=30)
    # The counter moves when the worker decides; the record is sent with its batch. Wait
    # for it in the topic, so the cut one below lands after it.
    poll(
        lambda: as_json(deadletters(worker, "list", "--reason", "revoked", "--json")),
        lambda doc: len(doc["deadletters"]) == 1,
        timeout=30,
    )
    # A dead letter whose value was cut, as the worker writes one for a huge record.
    meta = RecordMeta(t.runs, 0, 12345, 0)
    cut = DeadLetter(meta, b"gone-1", b"x" * 100, "revoked", "envoy is revoked")
    produce(
        kafka_bootstrap, [(t.deadletter, b"gone-1", encode_deadletter(cut, max_value_bytes=10))]
    )

    listed = as_json(
        deadletters(worker, "list", "--reason", "revoked", "--envoy", "gone-1", "--json")
    )
    assert [d["state"] for d in listed["deadletters"]] == ["replayable", "truncated"]
    runs_before = end_offsets(kafka_bootstrap, t.runs)
    enroll(kafka_bootstrap, worker, "gone-1")
    replayed = as_json(deadletters(worker, "replay", "--reason", "revoked", "--json"))
    assert replayed["replayed"] == 1
    assert [d["replayed_as"] is None for d in replayed["deadletters"]] == [False, True]
    assert sum(end_offsets(kafka_bootstrap, t.runs).values()) == sum(runs_before.values()) + 1
    table = deadletters(worker, "replay", "--reason", "revoked")
    assert "not replayed: value or key was cut" in table.stdout
    assert "replayed 0 revoked dead letters; 1 replayed before, 1 not replayable" in table.stdout
    limited = as_json(deadletters(worker, "list", "--limit", "1", "--json"))
    assert len(limited["deadletters"]) == 1


def test_unreachable_kafka_is_one_line_and_exit_2(tmp_path: Any) -> None:
    config = tmp_path / "vigo.yaml"
    config.write_text(f"kafka:\n  bootstrap_servers: 127.0.0.1:{free_port()}\n")
    for args in (["list"], ["replay", "--reason", "not_enrolled"]):
        done = subprocess.run(
            [str(VIGOCLI), "deadletters", *args, "--config", str(config), "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert one_line(done.stderr).startswith("vigocli: cannot reach Kafka at 127.0.0.1:")


@pytest.mark.parametrize(
    "args",
    [
        ["replay"],
        ["replay", "--reason", "bored"],
        ["list", "--limit", "0"],
        ["list", "--bogus"],
        ["list", "--config", "/nonexistent/vigo.yaml"],
        ["purge"],
    ],
)
def test_usage_errors_exit_64(args: list[str]) -> None:
    done = subprocess.run(
        [str(VIGOCLI), "deadletters", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 64, done
    assert "Traceback" not in done.stderr


def test_a_dead_letter_gives_back_its_original_bytes() -> None:
    meta = RecordMeta("p.envoy.runs", 3, 7, 0)
    for key, value in ((b"web-01", b'{"a": 1}'), (b"\xff\xfe", b"\x00\xc3(bin"), (None, None)):
        encoded = encode_deadletter(DeadLetter(meta, key, value, "malformed_json", "bad"))
        record = parse_deadletter("p.deadletter", 1, 2, encoded)
        assert record is not None
        assert (record.raw("key"), record.raw("value")) == (key, value)
        assert record.origin == "p.envoy.runs/3/7" and record.coordinates == "p.deadletter/1/2"
    assert parse_deadletter("p.deadletter", 0, 0, b"{not json") is None
    assert parse_deadletter("p.deadletter", 0, 0, b'{"schema": "vigo.deadletter/1"}') is None
