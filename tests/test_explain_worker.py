"""Explain a status (SPEC 11.1) end to end: two real workers on the real broker, envoys
brought to relapsed (with a late run in their history), diverged beyond the history,
converged (by a clean run and by a rollout), failed, no data and offline; then
`GET /api/envoys/{id}/explain` from either worker, `vigocli envoys explain` and the
dashboard's "Why this status" card in headless Chromium.

Where each run was read is checked against the offsets the broker gave the records when
they were produced. The pure parts (the document's shape for every reachable state, the
CLI's escaping) are checked without a broker at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.cli.explain import render_explanation
from processor.web.explain import explanation_doc, newest_version
from processor.web.openapi import openapi_document
from projections.explain import INTENTIONAL_RULE, STATUS_RULES, explain
from tests.eventgen import enrolled
from tests.harness import REPO, Worker, enrollment, run, run_event
from tests.test_dashboard import CHROMIUM, dump_dom
from tests.test_dashboard_groups import screenshot
from tests.test_explain_rules import RULES, fold, steps
from tests.webharness import VIGOCLI, http_get, poll, prefix_of, running_workers, threshold_config
from topics.names import TopicNames
from topics.statuses import ACTIVE_STATUSES, Status

SCREENSHOT = REPO / "docs" / "dashboard-explain.png"
DOCUMENT = openapi_document()
EXPLANATION_SCHEMA = {
    "$ref": "#/components/schemas/Explanation",
    "components": DOCUMENT["components"],
}


def valid(doc: Any) -> bool:
    return bool(jsonschema_rs.is_valid(EXPLANATION_SCHEMA, doc))


@dataclass(frozen=True)
class Sent:
    """A run as produced, and where the broker put it."""

    run_id: str
    partition: int
    offset: int
    changed: tuple[str, ...]


def run_record(
    envoy: str,
    finished_ms: int,
    *results: str,
    config_version: str | None = None,
    module_errors: tuple[str, ...] = (),
) -> tuple[str, bytes, tuple[str, ...]]:
    """A run finished at `finished_ms` (the harness' runs finish now): its id, its JSON, and
    the ids of its changed resources."""
    run_id = f"{envoy}-{uuid.uuid4().hex[:8]}"
    value = run_event(
        envoy,
        *results,
        run_id=run_id,
        module_errors=module_errors,
        config_version=config_version,
        finished_ms=finished_ms,
    )
    changed = tuple(f"res[{i}]" for i, r in enumerate(results) if r.rpartition(":")[2] == "changed")
    return run_id, value, changed


def produce_noting_offsets(
    bootstrap: str, records: list[tuple[str, bytes, bytes]]
) -> list[tuple[int, int]]:
    """Send in order, acknowledged; (partition, offset) of each record as the broker
    gave them."""

    async def go() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            futures = [
                await producer.send(topic, value=value, key=key) for topic, key, value in records
            ]
            return [((m := await f).partition, m.offset) for f in futures]
        finally:
            await producer.stop()

    return run(go())  # type: ignore[no-any-return]


@dataclass
class Fleet:
    workers: list[Worker]
    topics: TopicNames
    #: Envoy -> its runs as produced, in the order sent.
    runs: dict[str, list[Sent]]
    expected: dict[str, str]


LATE_ENVOY = "relapse-1"
ODD_IDS = ("rack 7/conv-é", "odd/explain")


@pytest.fixture(scope="module")
def fleet(kafka_bootstrap: str) -> Iterator[Fleet]:
    with running_workers(kafka_bootstrap, count=2, smtp=threshold_config(50)) as workers:
        topics = TopicNames(prefix_of(workers[0]))
        now = int(time.time() * 1000)
        plans: dict[str, list[tuple[int, tuple[str, ...], dict[str, Any]]]] = {
            # A and B change; C finished between them and comes last: late, in the history
            # between them, and no evidence.
            LATE_ENVOY: [
                (now - 30_000, ("files:changed", "pkgs:ok"), {"config_version": "v41"}),
                (now - 1_000, ("files:changed",), {"config_version": "v41"}),
                (now - 10_000, ("files:changed", "pkgs:changed"), {"config_version": "v41"}),
            ],
            "diverge-1": [(now - 60_000 + i * 1000, ("changed",), {}) for i in range(12)],
            "intent-1": [
                (now - 20_000, ("changed",), {"config_version": "v1"}),
                (now - 10_000, ("changed", "ok"), {"config_version": "v2"}),
            ],
            "fail-1": [(now - 5_000, ("a:failed",), {"module_errors": ("b",)})],
            ODD_IDS[0]: [(now - 5_000, ("ok",), {})],
            ODD_IDS[1]: [(now - 5_000, ("ok",), {})],
            "nodata-1": [],
            "offline-1": [],
        }
        expected = {
            LATE_ENVOY: "relapsed",
            "diverge-1": "diverged",
            "intent-1": "converged",
            "fail-1": "failed",
            ODD_IDS[0]: "converged",
            ODD_IDS[1]: "converged",
            "nodata-1": "no_data",
            "offline-1": "offline",
        }
        records: list[tuple[str, bytes, bytes]] = []
        made: list[tuple[str, str, tuple[str, ...]]] = []
        for envoy, plan in plans.items():
            # The offline one follows the workers' default interval: two seconds in tests.
            interval = None if envoy == "offline-1" else 3600
            records.append(
                (topics.enrollments, envoy.encode(), enrollment(envoy, interval_s=interval))
            )
            for finished_ms, results, extra in plan:
                run_id, value, changed = run_record(envoy, finished_ms, *results, **extra)
                records.append((topics.runs, envoy.encode(), value))
                made.append((envoy, run_id, changed))
        placed = produce_noting_offsets(kafka_bootstrap, records)
        runs: dict[str, list[Sent]] = {envoy: [] for envoy in plans}
        run_places = [
            p for (topic, _, _), p in zip(records, placed, strict=True) if topic == topics.runs
        ]
        for (envoy, run_id, changed), (partition, offset) in zip(made, run_places, strict=True):
            runs[envoy].append(Sent(run_id, partition, offset, changed))
        for envoy, status in expected.items():
            reached = poll(partial(explained, workers[0], envoy), partial(has_status, status))
            assert reached[1].get("status") == status, (envoy, reached)
        yield Fleet(workers, topics, runs, expected)


def has_status(status: str, answer: tuple[int, Any]) -> bool:
    return answer[0] == 200 and answer[1].get("status") == status


def explained(worker: Worker, envoy: str) -> tuple[int, Any]:
    reply = http_get(f"{worker.url}/api/envoys/{quote(envoy, safe='')}/explain")
    return reply.status, reply.json()


def vigocli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VIGO_URL"}
    return subprocess.run(
        [str(VIGOCLI), "--url", worker.url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def source(fleet: Fleet, sent: Sent) -> dict[str, Any]:
    return {"topic": fleet.topics.runs, "partition": sent.partition, "offset": sent.offset}


def test_relapsed_names_the_two_runs_of_its_streak_and_where_each_was_read(fleet: Fleet) -> None:
    a, b, c = fleet.runs[LATE_ENVOY]
    status, doc = explained(fleet.workers[0], LATE_ENVOY)
    assert status == 200 and valid(doc), doc
    assert doc["rule"] == {
        "status": "relapsed",
        "text": STATUS_RULES[Status.RELAPSED].text,
        "section": "4",
    }
    # B then A, newest first: C sits between them in the history but was late.
    assert [r["run_id"] for r in doc["evidence"]] == [b.run_id, a.run_id]
    assert [r["source"] for r in doc["evidence"]] == [source(fleet, b), source(fleet, a)]
    assert [tuple(r["changed"]) for r in doc["evidence"]] == [b.changed, a.changed]
    assert all(r["outcome"] == "changed" and not r["intentional"] for r in doc["evidence"])
    assert [r["config_version"] for r in doc["evidence"]] == ["v41", "v41"]
    assert (doc["consecutive_changed_runs"], doc["streak_truncated"]) == (2, False)
    history = http_get(f"{fleet.workers[0].url}/api/envoys/{LATE_ENVOY}").json()["history"]
    assert [r["run_id"] for r in history] == [b.run_id, c.run_id, a.run_id]
    assert doc["config_version"]["applied"] == "v41"


def test_a_streak_longer_than_the_history_is_marked_truncated(fleet: Fleet) -> None:
    sent = fleet.runs["diverge-1"]
    _, doc = explained(fleet.workers[0], "diverge-1")
    assert doc["status"] == "diverged" and doc["consecutive_changed_runs"] == 12
    assert doc["streak_truncated"] is True
    newest_ten = sent[::-1][:10]
    assert [r["run_id"] for r in doc["evidence"]] == [s.run_id for s in newest_ten]
    assert [r["source"] for r in doc["evidence"]] == [source(fleet, s) for s in newest_ten]


def test_last_run_statuses_name_the_last_run(fleet: Fleet) -> None:
    _, failed = explained(fleet.workers[0], "fail-1")
    (run_sent,) = fleet.runs["fail-1"]
    assert failed["rule"]["text"] == STATUS_RULES[Status.FAILED].text
    assert [r["run_id"] for r in failed["evidence"]] == [run_sent.run_id]
    assert failed["evidence"][0]["failed"] == ["res[0]"]
    assert failed["evidence"][0]["module_errors"] == ["a", "b"]
    assert failed["evidence"][0]["source"] == source(fleet, run_sent)

    _, rollout = explained(fleet.workers[0], "intent-1")
    _, second = fleet.runs["intent-1"]
    assert rollout["rule"] == {
        "status": "converged",
        "text": INTENTIONAL_RULE.text,
        "section": "10.1",
    }
    assert [r["run_id"] for r in rollout["evidence"]] == [second.run_id]
    assert rollout["evidence"][0]["intentional"] is True
    assert rollout["config_version"] == {
        "applied": "v2",
        "last_run": "v2",
        "newest_in_fleet": rollout["config_version"]["newest_in_fleet"],
    }


def test_no_data_and_offline_name_no_run_but_the_enrollment_and_deadline(fleet: Fleet) -> None:
    _, nodata = explained(fleet.workers[0], "nodata-1")
    assert nodata["evidence"] == [] and nodata["rule"]["section"] == "4"
    assert nodata["liveness"]["last_seen"] is None
    assert nodata["liveness"]["counted_from"] == nodata["liveness"]["enrolled_at"]
    _, offline = explained(fleet.workers[0], "offline-1")
    assert offline["evidence"] == []
    assert offline["rule"]["text"] == STATUS_RULES[Status.OFFLINE].text
    assert offline["liveness"]["interval_s"] == 2
    assert offline["liveness"]["offline_at"] == offline["since"]  # the deadline that expired


def test_either_worker_answers_for_every_envoy_and_ids_need_encoding(fleet: Fleet) -> None:
    for envoy in fleet.expected:
        docs = [explained(w, envoy) for w in fleet.workers]
        assert docs[0] == docs[1], envoy
        assert docs[0][0] == 200 and valid(docs[0][1]), docs[0]
    # `/explain` at the end of an id is the id's, encoded; the route takes the rest.
    odd = fleet.workers[1].url + "/api/envoys/" + quote(ODD_IDS[1], safe="")
    assert http_get(odd).json()["envoy_id"] == ODD_IDS[1]
    assert http_get(odd + "/explain").json()["envoy_id"] == ODD_IDS[1]
    for worker in fleet.workers:
        status, body = explained(worker, "no-such-envoy")
        assert status == 404 and body["envoy_id"] == "no-such-envoy", body


def test_newest_in_fleet_is_the_fleet_owners_or_null(fleet: Fleet) -> None:
    """Asked of the fleet owner's `/api/rollouts` (SPEC 11.2); null when there is none
    (that route missing, no rollout yet) and never a failed explanation."""

    def newest() -> tuple[str | None, str | None]:
        reply = http_get(fleet.workers[0].url + "/api/rollouts")
        want = newest_version(reply.body) if reply.status == 200 else None
        return want, explained(fleet.workers[1], LATE_ENVOY)[1]["config_version"]["newest_in_fleet"]

    want, got = poll(newest, lambda pair: pair[0] == pair[1], timeout=30)
    assert got == want


def test_cli_says_why_in_sentences(fleet: Fleet) -> None:
    a, b, _ = fleet.runs[LATE_ENVOY]
    done = vigocli(fleet.workers[1], "envoys", "explain", LATE_ENVOY)
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{LATE_ENVOY} is relapsed since ")
    # res[1] changed only in the late run: no evidence.
    assert lines[0].endswith("because its last 2 runs changed resources: res[0].")
    for sent in (b, a):
        where = f"Read from {fleet.topics.runs} partition {sent.partition} offset {sent.offset}."
        assert any(sent.run_id in line and line.endswith(where) for line in lines), done.stdout
    text = STATUS_RULES[Status.RELAPSED].text
    assert f"Rule (SPEC section 4, relapsed): {text}." in lines
    assert any(line.startswith("Last seen ") and "goes offline at" in line for line in lines)
    assert any(line.startswith("It is on config version v41") for line in lines)

    offline = vigocli(fleet.workers[0], "envoys", "explain", "offline-1")
    assert offline.returncode == 0, offline
    assert (
        "is offline since" in offline.stdout and "2 x its 2 s check-in interval" in offline.stdout
    )

    truncated = vigocli(fleet.workers[0], "envoys", "explain", "diverge-1").stdout
    assert "its last 12 runs changed resources" in truncated
    assert "the history holds the newest 10 of those 12 runs" in truncated


def test_cli_json_is_the_api_document_and_unknown_envoys_exit_1(fleet: Fleet) -> None:
    for envoy in (LATE_ENVOY, ODD_IDS[0], "offline-1"):
        done = vigocli(fleet.workers[0], "envoys", "explain", envoy, "--json")
        assert done.returncode == 0, done
        assert json.loads(done.stdout) == explained(fleet.workers[1], envoy)[1]
    missing = vigocli(fleet.workers[0], "envoys", "explain", "no-such-envoy")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == "vigocli: no envoy 'no-such-envoy'"
    unreachable = subprocess.run(
        [str(VIGOCLI), "--url", "http://127.0.0.1:9", "envoys", "explain", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unreachable.returncode == 2


class WhyCard(HTMLParser):
    """The "Why this status" card of the rendered envoy page: text by id, and per
    evidence item its run id and source."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.evidence: list[tuple[str, str]] = []
        self.scripts = 0
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.scripts += tag == "script"
        if tag == "li" and a.get("data-evidence-run") is not None:
            self.evidence.append((a["data-evidence-run"] or "", a.get("data-source") or ""))
        if a.get("id"):
            self.text.setdefault(a["id"] or "", "")
        self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text[element_id] += data


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test adds it)")
def test_the_envoy_page_shows_why_this_status(fleet: Fleet, tmp_path: Path) -> None:
    a, b, _ = fleet.runs[LATE_ENVOY]
    url = f"{fleet.workers[1].url}/envoys/{LATE_ENVOY}"
    card = WhyCard(dump_dom(url))
    assert card.text["why-title"] == "Why this status"
    assert card.text["why-rule"] == STATUS_RULES[Status.RELAPSED].text
    assert "relapsed since" in card.text["why-reason"]
    assert "its last 2 runs changed resources" in card.text["why-reason"]
    runs_topic = fleet.topics.runs
    assert card.evidence == [(s.run_id, f"{runs_topic}/{s.partition}/{s.offset}") for s in (b, a)]
    assert (
        f"read from {runs_topic} · partition {b.partition} · offset {b.offset}"
        in (card.text["why-evidence"])
    )
    assert card.scripts == 3  # the page's own

    quiet = WhyCard(dump_dom(f"{fleet.workers[0].url}/envoys/offline-1"))
    assert quiet.text["why-rule"] == STATUS_RULES[Status.OFFLINE].text
    assert quiet.evidence == [] and "No run is evidence" in quiet.text["why-no-runs"]

    shot = tmp_path / "dashboard-explain.png"
    screenshot(url, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("VIGO_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


# -- without a broker ------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(steps, max_size=40), st.integers(0, 63), st.none() | st.text(max_size=8))
def test_every_reachable_state_gives_a_document_as_described(
    script: list[Any], partition: int, newest: str | None
) -> None:
    for state, _ in fold([enrolled(), *script]):
        doc = explanation_doc(explain(state, RULES), "vigo.envoy.runs", partition, newest)
        assert valid(doc), doc
        assert orjson.loads(orjson.dumps(doc)) == doc
        text = render_explanation(doc)
        assert text.startswith(f"web-01 is {state.status.value} since ")


def test_cli_text_escapes_what_envoys_sent() -> None:
    hostile = "evil\x1b]52;c;aGk=\x07\u202eid"
    doc = {
        "envoy_id": hostile,
        "status": "drifted",
        "since": "2026-11-27T12:05:00.000Z",
        "rule": {"status": "drifted", "text": "x", "section": "4"},
        "evidence": [
            {
                "run_id": hostile,
                "finished_at": hostile,
                "outcome": "changed",
                "config_version": hostile,
                "intentional": False,
                "source": {"topic": "vigo.envoy.runs", "partition": 1, "offset": 7},
                "changed": [hostile],
                "changed_count": 1,
                "failed": [],
                "failed_count": 0,
                "module_errors": [],
                "module_errors_count": 0,
            }
        ],
        "consecutive_changed_runs": 1,
        "streak_truncated": False,
        "liveness": {
            "enrolled_at": "2026-11-27T12:00:00.000Z",
            "last_seen": "2026-11-27T12:05:00.000Z",
            "last_reported_at": hostile,
            "counted_from": "2026-11-27T12:05:00.000Z",
            "interval_s": 300,
            "offline_at": "2026-11-27T12:15:00.001Z",
            "stale_at": "2026-11-27T12:20:00.001Z",
            "inactive_at": None,
            "stale": False,
        },
        "config_version": {"applied": hostile, "last_run": None, "newest_in_fleet": hostile},
    }
    assert valid(doc)
    text = render_explanation(doc)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "evil\\x1b]52;c;aGk=\\x07\\u202eid is drifted since 2026-11-27 12:05:00Z" in text
    assert "Read from vigo.envoy.runs partition 1 offset 7." in text


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (b'{"newest": {"version": "v42", "envoys": 3}}', "v42"),
        (b'{"newest": null, "versions": []}', None),
        (b'{"newest": {"version": 42}}', None),
        (b"[]", None),
        (b"not json", None),
    ],
)
def test_newest_version_reads_only_a_version(body: bytes, version: str | None) -> None:
    assert newest_version(body) == version


def test_the_rules_name_every_status() -> None:
    assert set(STATUS_RULES) == set(Status)
    assert {STATUS_RULES[s].section for s in ACTIVE_STATUSES} == {"4"}
