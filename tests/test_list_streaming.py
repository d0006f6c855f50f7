"""`vigocli envoys list` and `vigocli deadletters list` stream (SPEC 11.4 "Lists"): pages
and records are printed as they arrive, no more is fetched than `--limit` needs, and
nothing holds the whole listing.

- `envoys list` against a small real HTTP server serving the API's pages: the requests
  are counted, and the server holds the second page until the first one was printed.
- `deadletters list` in process over a dead-letter topic that never ends: `--limit`
  stops the reading; and against a real broker, in topic order over several partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner

from processor.cli import deadletters as deadletters_cli
from processor.cli.deadletter_topic import DeadLetterRecord, parse_deadletter
from processor.cli.streamed import StreamedJson, StreamedTable
from processor.cli.vigocli import cli
from processor.web.documents import decode_cursor, encode_cursor
from tests.webharness import VIGOCLI
from topics.codec import encode_deadletter
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames

FLEET = [f"host-{i:04d}" for i in range(1000)]


class Pages(BaseHTTPRequestHandler):
    """`GET /api/envoys` as a worker answers it, over `FLEET` (every envoy converged)."""

    server: PagesServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.requests.append(query)
        if len(self.server.requests) == 2:
            self.server.timed_out = not self.server.second_page.wait(20)
        limit = int(query.get("limit", "100"))
        after = decode_cursor(query["cursor"]) if "cursor" in query else None
        rest = [e for e in FLEET if after is None or e > after]
        envoys = [
            {
                "envoy_id": e,
                "status": "converged",
                "since": "2026-11-27T12:00:00Z",
                "last_seen": "2026-11-27T12:00:00Z",
                "labels": {"env": "prod"},
            }
            for e in rest[:limit]
        ]
        more = len(rest) > limit
        doc = {"envoys": envoys, "next_cursor": encode_cursor(rest[limit - 1]) if more else None}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PagesServer(ThreadingHTTPServer):
    requests: list[dict[str, str]]
    second_page: threading.Event
    timed_out: bool


@pytest.fixture
def server() -> Iterator[PagesServer]:
    httpd = PagesServer(("127.0.0.1", 0), Pages)
    httpd.requests, httpd.second_page, httpd.timed_out = [], threading.Event(), False
    httpd.second_page.set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def url_of(server: PagesServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def vigocli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO_")}
    return subprocess.run(
        [str(VIGOCLI), *args], capture_output=True, text=True, env=env, timeout=60
    )


def ids_of(table: str) -> list[str]:
    lines = table.strip().splitlines()
    assert lines[0].split() == ["ENVOY", "STATUS", "SINCE", "LAST", "SEEN", "LABELS"]
    return [line.split()[0] for line in lines[1:]]


def test_envoys_list_requests_only_the_pages_the_limit_needs(server: PagesServer) -> None:
    url = url_of(server)
    done = vigocli("--url", url, "envoys", "list", "--limit", "250", "--page-size", "100")
    assert done.returncode == 0, done
    assert ids_of(done.stdout) == FLEET[:250]
    assert [r["limit"] for r in server.requests] == ["100", "100", "50"]
    assert "cursor" not in server.requests[0]
    assert decode_cursor(server.requests[2]["cursor"]) == FLEET[199]

    server.requests.clear()
    one = vigocli("--url", url_of(server), "envoys", "list", "--limit", "100", "--page-size", "100")
    assert ids_of(one.stdout) == FLEET[:100]
    assert len(server.requests) == 1


def test_envoys_list_follows_every_page_and_streams_its_json(server: PagesServer) -> None:
    done = vigocli("--url", url_of(server), "envoys", "list", "--json", "--page-size", "300")
    assert done.returncode == 0, done
    assert len(server.requests) == 4
    doc = json.loads(done.stdout)
    assert [e["envoy_id"] for e in doc["envoys"]] == FLEET
    # The same text as the whole document dumped at once.
    assert done.stdout == json.dumps(doc, indent=2) + "\n"


def test_envoys_list_prints_a_page_before_it_asks_for_the_next(server: PagesServer) -> None:
    server.second_page.clear()  # the server answers page 2 once page 1 was read here
    args = ["--url", url_of(server), "envoys", "list", "--page-size", "100", "--limit", "150"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO_")}
    command = [str(VIGOCLI), *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as cli_run:
        assert cli_run.stdout is not None
        first = [cli_run.stdout.readline() for _ in range(101)]
        server.second_page.set()
        rest = cli_run.stdout.read()
    assert cli_run.returncode == 0
    assert not server.timed_out, "page 1 was not printed before page 2 was asked for"
    assert ids_of("".join(first) + rest) == FLEET[:150]


def test_a_streamed_table_keeps_its_columns_and_widens_for_a_longer_cell() -> None:
    out: list[str] = []
    table = StreamedTable(("ID", "STATE"), (4,), write=out.append)
    table.rows([])
    assert out == []
    table.rows([("a", "ok"), ("bb", "ok")])
    table.rows([("a-much-longer-id", "ok")])
    table.rows([("c\x1b[2J", "ok")])
    assert "".join(out).splitlines() == [
        "ID    STATE",
        "a     ok",
        "bb    ok",
        "a-much-longer-id  ok",
        "c\\x1b[2J          ok",
    ]


@pytest.mark.parametrize("items", [[], [{"a": [1, {}]}], [{"a": 1}, {"b": "é"}, []]])
def test_streamed_json_is_the_document_dumped_at_once(items: list[Any]) -> None:
    out: list[str] = []
    doc = StreamedJson("things", write=out.append)
    doc.items(items[:1])
    doc.items(items[1:])
    doc.close(unreadable=3)
    assert "".join(out) == json.dumps({"things": items, "unreadable": 3}, indent=2) + "\n"


# -- dead letters ----------------------------------------------------------------------------


def dead_letter(origin: str, partition: int, offset: int) -> bytes:
    """A dead letter of the record at `origin/partition/offset`."""
    meta = RecordMeta(origin, partition, offset, 1_795_000_000_000)
    return encode_deadletter(DeadLetter(meta, b"web-01", b"{}", "schema_violation", "bad"))


class Endless:
    """A reader over a dead-letter topic that never ends (every tenth record no dead
    letter): only a reading that stops at `--limit` returns."""

    def __init__(self) -> None:
        self.read = 0
        self.closed = False

    async def replayed(self) -> set[str]:
        return {"p.deadletter/0/1"}

    async def records(self) -> AsyncGenerator[DeadLetterRecord | None, None]:
        try:
            while True:
                offset = self.read
                self.read += 1
                if offset % 10 == 9:
                    yield None
                    continue
                value = dead_letter(TopicNames("p.").runs, 0, offset)
                yield parse_deadletter("p.deadletter", 0, offset, value)
                await asyncio.sleep(0)
        finally:
            self.closed = True


@pytest.fixture
def endless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Endless, Path]]:
    reader = Endless()

    @contextlib.asynccontextmanager
    async def opened(target: Any, timeout_s: float) -> AsyncIterator[Endless]:
        yield reader

    monkeypatch.setattr(deadletters_cli, "opened", opened)
    config = tmp_path / "vigo.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"topic_prefix": "p."}}))
    yield reader, config


def test_deadletters_list_stops_reading_at_the_limit(endless: tuple[Endless, Path]) -> None:
    reader, config = endless
    args = ["deadletters", "list", "--config", str(config), "--limit", "25", "--json"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert [d["deadletter"]["offset"] for d in doc["deadletters"]] == [
        o for o in range(27) if o % 10 != 9
    ]
    assert doc["unreadable"] == 2
    assert [d["state"] for d in doc["deadletters"][:3]] == ["replayable", "replayed", "replayable"]
    assert reader.closed and reader.read == 27

    args = ["deadletters", "list", "--config", str(config), "--limit", "3"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DEADLETTER", "REASON", "ORIGIN", "KEY", "STATE", "ERROR"]
    assert len(lines) == 4


def test_deadletters_list_reads_in_topic_order_over_partitions(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    names = TopicNames(topic_prefix)

    async def fill() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(names.deadletter, 3, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for n in range(30):  # interleaved over the partitions, newest last
                value = dead_letter(names.runs, n % 3, n)
                await producer.send(names.deadletter, value, key=b"web-01", partition=(2 - n % 3))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(fill())
    config = tmp_path / "vigo.yaml"
    kafka = {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix}
    config.write_text(yaml.safe_dump({"kafka": kafka}))
    base = ["deadletters", "list", "--config", str(config), "--json"]
    every = json.loads(vigocli(*base).stdout)["deadletters"]
    where = [(d["deadletter"]["partition"], d["deadletter"]["offset"]) for d in every]
    assert where == [(p, o) for p in range(3) for o in range(10)]
    limited = vigocli(*base, "--limit", "12")
    assert limited.returncode == 0, limited
    assert json.loads(limited.stdout)["deadletters"] == every[:12]
