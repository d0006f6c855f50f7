"""Hostile input at volume (SPEC 9: no input, however malformed, stops an agent): more
than 10,000 bad records of every kind we could think of, interleaved with good ones, on
one real worker. Every bad record must come out as a dead letter with its reason, found
by its topic/partition/offset; every good one must be applied; the worker must neither
crash nor restart an agent.

Far-future and far-past timestamps that RFC 3339 allows (years 0001 to 9999, with any
offset) are valid events and are applied: liveness runs on the record timestamp, not on
the envoy's clock; a run from the far future becomes the envoy's newest run. Years
outside 0001-9999, month 13, leap seconds and timestamps over 64 characters are
schema violations. HTML markup in ids and CR/LF in resource ids are valid (outputs
escape them); CR/LF in an envoy id is a schema violation (the schema forbids controls).
"""

from __future__ import annotations

import asyncio
import random
import re
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
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

MAX_EVENT_BYTES = 300_000  # a 100,000-deep bomb (200 KB) must reach the parser
BAD_PER_KIND = 720
SEED = 20261127

Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


def doc_run(envoy: str, n: int, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(run_event(envoy, "ok", "changed", run_id=f"h-{n}"))
    doc.update(fields)
    return doc


def doc_checkin(envoy: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(checkin(envoy))
    doc.update(fields)
    return doc


def doc_enrollment(envoy: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(enrollment(envoy))
    doc.update(fields)
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


# -- the bad kinds: (name, reason, record maker of index n) -----------------------------------

Maker = Callable[[TopicNames, int], Record]


def truncated(t: TopicNames, n: int) -> Record:
    whole = dumps(doc_run(f"trunc-{n}", n))
    return t.runs, f"trunc-{n}".encode(), whole[: n % (len(whole) - 1)]


INVALID_JSON = [
    b"{not json",
    b'{"schema": NaN}',
    b"{'schema': 'vigo.run/1'}",
    b'{"schema": "vigo.checkin/1",}',
    b"\xef\xbb\xbf{}",
    b"[1, 2, 3]",
    b'"vigo.run/1"',
    b"null",
    b'{"envoy_id": "\\ud800"}',
    b"",
]


def invalid_json(t: TopicNames, n: int) -> Record:
    return t.checkins, f"inv-{n}".encode(), INVALID_JSON[n % len(INVALID_JSON)]


def non_utf8(t: TopicNames, n: int) -> Record:
    value = dumps(doc_checkin(f"utf-{n}")).replace(b'"utf-', b'"\xff\xfe-')
    return t.checkins, f"utf-{n}".encode(), value


def depth_bomb(t: TopicNames, n: int) -> Record:
    """Every 72nd bomb is 100,000 arrays deep (200 KB); the others 1,025 to 3,000."""
    depth = 100_000 if n % 72 == 0 else 1025 + n % 2000
    opener, closer = (b"[", b"]") if n % 2 or depth == 100_000 else (b'{"a":', b"}")
    bomb = opener * depth + b"1" + closer * depth
    inner = b'{"schema": "vigo.checkin/1", "envoy_id": "bomb", "x": ' + bomb + b"}"
    return t.checkins, b"bomb", bomb if n % 3 else inner


WRONG_TYPES: list[Callable[[int], dict[str, Any]]] = [
    lambda n: doc_run(f"wt-{n}", n, envoy_id=n),
    lambda n: doc_run(f"wt-{n}", n, resources={"id": "a"}),
    lambda n: doc_run(f"wt-{n}", n, resources=[{"id": "a", "module": "m", "result": "boom"}]),
    lambda n: doc_run(f"wt-{n}", n, finished_at=1_795_781_104),
    lambda n: doc_run(f"wt-{n}", n, run_id=["r"]),
    lambda n: doc_enrollment(f"wt-{n}", labels=["env"]),
    lambda n: doc_enrollment(f"wt-{n}", checkin_interval_s="300"),
    lambda n: doc_enrollment(f"wt-{n}", action=True),
    lambda n: doc_checkin(f"wt-{n}", at=None),
]


def wrong_types(t: TopicNames, n: int) -> Record:
    doc = WRONG_TYPES[n % len(WRONG_TYPES)](n)
    return t.runs, f"wt-{n}".encode(), dumps(doc)


def too_large(t: TopicNames, n: int) -> Record:
    """Few (they are big): one in 36 indexes, a valid run padded past the limit."""
    doc = doc_run(f"big-{n}", n, padding="x" * (MAX_EVENT_BYTES + n % 7))
    return t.runs, f"big-{n}".encode(), dumps(doc)


def unknown_schema(t: TopicNames, n: int) -> Record:
    choices: list[Any] = ["vigo.run/2", "vigo.checkin/9", "vigo.status-change/1", None, 1]
    doc = doc_run(f"us-{n}", n, schema=choices[n % len(choices)])
    if doc["schema"] is None:
        del doc["schema"]
    return t.runs, f"us-{n}".encode(), dumps(doc)


def key_mismatch(t: TopicNames, n: int) -> Record:
    return t.checkins, f"km-{n}-other".encode(), dumps(doc_checkin(f"km-{n}"))


def bad_keys(t: TopicNames, n: int) -> Record:
    key = [b"", None, b"\xff\xfe", f"km {n} ".encode()][n % 4]
    return t.runs, key, dumps(doc_run(f"km {n}", n))


def crlf_envoy(t: TopicNames, n: int) -> Record:
    envoy = [f"cr-{n}\r\nBcc: x@y", f"lf-{n}\n", f"nul-{n}\x00"][n % 3]
    return t.checkins, envoy.encode(), dumps(doc_checkin(envoy))


BAD_TIMES = [
    "10000-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2016-12-31T23:59:60Z",  # a leap second: Python's datetime has none
    "2026-11-27T12:05:04." + "9" * 60 + "Z",  # over 64 characters
    "+275760-09-13T00:00:00Z",
]


def impossible_times(t: TopicNames, n: int) -> Record:
    moment = BAD_TIMES[n % len(BAD_TIMES)]
    doc = doc_run(f"tm-{n}", n, finished_at=moment) if n % 2 else doc_checkin(f"tm-{n}", at=moment)
    return t.runs, f"tm-{n}".encode(), dumps(doc)


LABELS_OVER = [
    lambda n: {f"k{i}": "v" for i in range(65)},
    lambda n: {"k" * 64: "v"},
    lambda n: {"é" * 32: "v"},
    lambda n: {"env": "v" * 256},
    lambda n: {"env": "€" * 86},
    lambda n: {f"k{i:02d}": "v" * 128 for i in range(64)},
]


def labels_over(t: TopicNames, n: int) -> Record:
    labels = LABELS_OVER[n % len(LABELS_OVER)](n)
    return t.enrollments, f"lb-{n}".encode(), dumps(doc_enrollment(f"lb-{n}", labels=labels))


def names_over(t: TopicNames, n: int) -> Record:
    long = ["x" * 1025, "€" * 342, "é" * 513][n % 3]
    doc = doc_run(f"nm-{n}", n)
    if n % 2:
        doc["resources"][n % 2]["id"] = long
    else:
        doc["module_errors"] = [{"module": long, "message": "boom"}]
    return t.runs, f"nm-{n}".encode(), dumps(doc)


def tombstone(t: TopicNames, n: int) -> Record:
    return t.checkins, f"ts-{n}".encode(), None


def not_enrolled(t: TopicNames, n: int) -> Record:
    envoy = f"stranger-{n}"
    value = dumps(doc_run(envoy, n)) if n % 2 else dumps(doc_checkin(envoy))
    return (t.runs if n % 2 else t.checkins), envoy.encode(), value


GONE = [f"gone-{i}" for i in range(5)]


def revoked(t: TopicNames, n: int) -> Record:
    envoy = GONE[n % len(GONE)]
    value = dumps(doc_run(envoy, n)) if n % 2 else dumps(doc_checkin(envoy))
    return (t.runs if n % 2 else t.checkins), envoy.encode(), value


BAD_KINDS: list[tuple[str, str, Maker, int]] = [
    # name, reason, maker, one record in `every` indexes (the big ones are fewer)
    ("truncated JSON", "malformed_json", truncated, 1),
    ("invalid JSON", "malformed_json", invalid_json, 1),
    ("non-UTF-8 bytes", "malformed_json", non_utf8, 1),
    ("depth bomb", "malformed_json", depth_bomb, 1),
    ("tombstone", "malformed_json", tombstone, 1),
    ("wrong types", "schema_violation", wrong_types, 1),
    ("over max_event_bytes", "too_large", too_large, 36),
    ("unknown schema", "unknown_schema", unknown_schema, 1),
    ("key differs from envoy_id", "key_mismatch", key_mismatch, 1),
    ("empty, missing, non-UTF-8 keys", "key_mismatch", bad_keys, 1),
    ("CR/LF/NUL in envoy_id", "schema_violation", crlf_envoy, 1),
    ("impossible timestamps", "schema_violation", impossible_times, 1),
    ("labels over the limits", "schema_violation", labels_over, 1),
    ("names over 1,024 bytes", "schema_violation", names_over, 1),
    ("never enrolled (strict)", "not_enrolled", not_enrolled, 1),
    ("revoked envoy", "revoked", revoked, 1),
]


# -- the good envoys ---------------------------------------------------------------------------

PATTERNS: list[tuple[list[tuple[str, ...]], str]] = [
    ([("ok",)], "converged"),
    ([("ok",), ("changed",)], "drifted"),
    ([("changed",), ("changed",)], "relapsed"),
    ([("changed",)] * 3, "diverged"),
    ([("a:ok", "b:failed")], "degraded"),
    ([("changed",), ("a:failed",)], "failed"),
]


@dataclass
class Good:
    """A good envoy: its records in order, and the status they must end in."""

    envoy: str
    records: list[Record]
    status: str
    api: dict[str, Any] = field(default_factory=dict)


def regular_envoys(t: TopicNames, count: int) -> Iterator[Good]:
    for i in range(count):
        envoy = f"good-{i:03d}"
        runs, status = PATTERNS[i % len(PATTERNS)]
        records: list[Record] = [(t.checkins, envoy.encode(), checkin(envoy))]
        records += [(t.runs, envoy.encode(), run_event(envoy, *results)) for results in runs]
        yield Good(envoy, records, status)


def odd_but_valid_envoys(t: TopicNames) -> Iterator[Good]:
    """What looks hostile but is valid: applied, not dead-lettered."""
    for envoy in ["<script>alert('x')</script>", '<b onclick="x()">b</b>&amp;']:
        records: list[Record] = [(t.runs, envoy.encode(), run_event(envoy, "ok"))]
        yield Good(envoy, records, "converged", {"envoy_id": envoy})
    crlf = doc_run("crlf-id", 0)
    crlf["resources"] = [{"id": "file[/etc/a\r\nb]<i>", "module": "files", "result": "changed"}]
    yield Good("crlf-id", [(t.runs, b"crlf-id", dumps(crlf))], "drifted")
    # A run from the far future is the newest run: a normal run after it is late.
    future = doc_run("future", 1, finished_at="9999-12-31T23:59:59.999Z")
    later = run_event("future", "ok")
    records = [(t.runs, b"future", dumps(future)), (t.runs, b"future", later)]
    yield Good("future", records, "drifted")
    # A check-in's `at` is display only: the envoy's clock, however wrong, is shown.
    clocks = [("future-at", "9999-12-31T23:59:59-23:59"), ("past-at", "0001-01-01T00:00:00+01:00")]
    for envoy, at in clocks:
        records = [(t.checkins, envoy.encode(), dumps(doc_checkin(envoy, at=at)))]
        yield Good(envoy, records, "no_data", {"last_reported_at": at})
    past = doc_run("past", 2, finished_at="0001-01-01T00:00:00Z")
    records = [(t.runs, b"past", dumps(past))]
    yield Good("past", records, "drifted", {"last_reported_at": "0001-01-01T00:00:00Z"})


# -- the test ----------------------------------------------------------------------------------


def interleave(bad: list[tuple[Record, str]], good: list[Good]) -> list[tuple[Record, str | None]]:
    """A random merge that keeps each good envoy's records in their order."""
    queues = {g.envoy: list(g.records) for g in good}
    slots: list[str | None] = [None] * len(bad) + [g.envoy for g in good for _ in g.records]
    random.Random(SEED).shuffle(slots)
    bad_iter = iter(bad)
    merged: list[tuple[Record, str | None]] = []
    for slot in slots:
        if slot is None:
            merged.append(next(bad_iter))
        else:
            merged.append((queues[slot].pop(0), None))
    return merged


async def produce_all(bootstrap: str, records: list[tuple[Record, str | None]]) -> list[Any]:
    """Send everything without waiting for each acknowledgement; the record metadata
    (partition, offset) of each, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_request_size=1_048_576
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key) for (topic, key, value), _ in records
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def bad_records(t: TopicNames) -> tuple[list[tuple[Record, str]], Counter[str]]:
    """Every bad record with its expected reason, and how many of each kind."""
    bad = []
    kinds: Counter[str] = Counter()
    for name, reason, maker, every in BAD_KINDS:
        made = [(maker(t, n), reason) for n in range(0, BAD_PER_KIND, every)]
        kinds[name] = len(made)
        bad += made
    return bad, kinds


CRASH = re.compile(r"Traceback|Crashed|Restarting|Max restarts|Agent error")


def metric_values(worker: Worker, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric of the worker's `/metrics`, by their sorted labels."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_hostile_input_at_volume(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    t = TopicNames(topic_prefix)
    config = worker_config(
        kafka_bootstrap,
        topic_prefix,
        interval="60s",
        enrollment={"strict": True},
        processor={"max_event_bytes": MAX_EVENT_BYTES},
    )
    worker = Worker(config, tmp_path).start()
    assert worker.proc is not None
    pid = worker.proc.pid
    try:
        good = [*regular_envoys(t, 240), *odd_but_valid_envoys(t)]
        # Strict enrollment: enroll the good envoys, enroll and revoke the gone ones, and
        # wait for it (topics are not ordered against each other).
        setup = [(t.enrollments, g.envoy.encode(), enrollment(g.envoy)) for g in good]
        for envoy in GONE:
            setup += [(t.enrollments, envoy.encode(), enrollment(envoy))]
            setup += [(t.enrollments, envoy.encode(), enrollment(envoy, "revoked"))]
        produce(kafka_bootstrap, setup)
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: (
                len({r["envoy_id"] for r in rs}) >= len(good) + len(GONE)
                and sum(r["to"] == "revoked" for r in rs) >= len(GONE)
            ),
            timeout=40,
        )

        bad, kinds = bad_records(t)
        merged = interleave(bad, good)
        metadata = asyncio.run(produce_all(kafka_bootstrap, merged))
        expected = {
            (m.topic, m.partition, m.offset): reason
            for m, (_, reason) in zip(metadata, merged, strict=True)
            if reason is not None
        }
        print(
            f"\n{len(bad)} bad records of {len(BAD_KINDS)} kinds {dict(kinds)}, "
            f"{len(merged) - len(bad)} good"
        )
        assert len(bad) >= 10_000

        dead = consume(
            kafka_bootstrap, t.deadletter, until=lambda rs: len(rs) >= len(expected), timeout=60
        )
        found = {(d["topic"], d["partition"], d["offset"]): d["reason"] for d in dead}
        assert len(dead) == len(found)  # no record dead-lettered twice
        missing = {k: v for k, v in expected.items() if found.get(k) != v}
        assert missing == {}, f"{len(missing)} bad records not dead-lettered as expected"
        assert found == expected  # and no good record among them

        wanted = {g.envoy: g.status for g in good} | dict.fromkeys(GONE, "revoked")

        def settled(rs: list[dict[str, Any]]) -> bool:
            last = {r["envoy_id"]: r["to"] for r in rs}
            return all(last.get(e) == s for e, s in wanted.items())

        changes = consume(kafka_bootstrap, t.status_changes, until=settled, timeout=40)
        last = {r["envoy_id"]: r["to"] for r in changes}
        assert {e: last.get(e) for e in wanted} == wanted
        assert set(last) == set(wanted)  # nothing of a bad record was applied
        for g in good:
            if g.api:
                detail = get_json(f"{worker.url}/api/envoys/{_quote(g.envoy)}")
                assert {k: detail[k] for k in g.api} == g.api
        crlf = get_json(f"{worker.url}/api/envoys/crlf-id")
        assert crlf["history"][0]["changed"] == ["file[/etc/a\r\nb]<i>"]
        future = get_json(f"{worker.url}/api/envoys/future")
        assert [r["outcome"] for r in future["history"]] == ["changed", "clean"]

        # Bounded work: every input record was handled exactly once (none read again,
        # none looping through a retry), and each dead letter counted under its reason.
        total = len(setup) + len(merged)
        events = poll(
            lambda: metric_values(worker, "vigo_events_total"),
            lambda values: sum(values.values()) >= total,
            timeout=60,
        )
        assert sum(events.values()) == total, events
        by_reason = {
            dict(labels)["reason"]: n
            for labels, n in metric_values(worker, "vigo_deadletters_total").items()
        }
        assert {r: n for r, n in by_reason.items() if n} == Counter(expected.values())
        assert sum(metric_values(worker, "vigo_delivery_gaps_total").values()) == 0

        assert worker.proc.poll() is None and worker.proc.pid == pid
        assert CRASH.findall(worker.log_text()) == []
    finally:
        worker.stop()


def _quote(envoy: str) -> str:
    from urllib.parse import quote

    return quote(envoy, safe="")
