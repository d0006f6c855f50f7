"""The JSON API on two real workers of one group: every answer is the same from either
worker, whichever owns the envoy or the fleet (SPEC section 7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.harness import Worker
from tests.webharness import (
    counts_of,
    http_get,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.statuses import ACTIVE_STATUSES, Status

THRESHOLD = 50.0


@pytest.fixture(scope="module")
def fleet(kafka_bootstrap: str) -> Iterator[tuple[list[Worker], dict[str, str]]]:
    with running_workers(kafka_bootstrap, count=2, smtp=threshold_config(THRESHOLD)) as workers:
        yield workers, publish_status_fleet(kafka_bootstrap, workers)


def get(worker: Worker, path: str, **query: Any) -> Any:
    reply = http_get(worker.url + path + (f"?{urlencode(query)}" if query else ""))
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.json()


def listing(worker: Worker, **query: Any) -> list[str]:
    """Every envoy id of a listing, following the cursor page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = get(worker, "/api/envoys", **query, **({"cursor": cursor} if cursor else {}))
        ids.extend(e["envoy_id"] for e in page["envoys"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_compliance_is_the_same_from_either_worker(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, expected = fleet
    docs = [get(w, "/api/compliance") for w in workers]
    counts = counts_of(expected)
    active = sum(counts.values())
    for doc in docs:
        assert doc["by_status"] == counts
        assert doc["active"] == active == 12
        assert doc["compliant"] == counts["converged"] == 4
        assert doc["percent"] == round(100 * 4 / 12, 2)
        assert doc["threshold"] == THRESHOLD
        assert doc["breached"] is True
        assert doc["history"], "one point per bucket, at least the current one"
        assert all(set(p) == {"at", "percent"} for p in doc["history"])
        assert doc["history"][-1]["percent"] == doc["percent"]
        assert "groups" not in doc  # only with fleet.group_by (SPEC 10.2)
    # The same document from the owner, apart from the instant it was read.
    first, second = ({k: v for k, v in d.items() if k != "at"} for d in docs)
    assert first == second


def test_each_worker_owns_some_envoys_and_forwards_the_others(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, expected = fleet
    every = ",".join(s.value for s in Status)
    local = [
        {e["envoy_id"] for e in get(w, "/api/local/envoys", status=every)["envoys"]}
        for w in workers
    ]
    # Partitions are split between the workers, and so are the envoys.
    assert local[0] and local[1] and not local[0] & local[1]
    for envoy in expected:
        path = "/api/envoys/" + quote(envoy, safe="")
        first, second = (get(w, path) for w in workers)
        assert first == second
        assert first["envoy_id"] == envoy
        assert first["status"] == expected[envoy]


def test_envoy_detail_has_the_drift_history(fleet: tuple[list[Worker], dict[str, str]]) -> None:
    workers, _ = fleet
    doc = get(workers[0], "/api/envoys/diverge-1")
    assert set(doc) >= {
        "envoy_id",
        "status",
        "since",
        "last_seen",
        "interval_s",
        "labels",
        "consecutive_changed_runs",
        "config_version",
        "stale",
        "history",
    }
    assert doc["config_version"] is None  # its runs gave none (SPEC 10.1)
    assert doc["status"] == "diverged"
    assert doc["consecutive_changed_runs"] == 3
    assert doc["interval_s"] == 3600
    assert doc["labels"] == {"role": "diverge"}
    assert doc["stale"] is False
    assert doc["since"].endswith("Z") and doc["last_seen"].endswith("Z")
    history = doc["history"]
    assert [r["outcome"] for r in history] == ["changed"] * 3
    assert history[0]["changed"] == ["res[0]"] and history[0]["failed"] == []
    finished = [r["finished_at"] for r in history]
    assert finished == sorted(finished, reverse=True), "newest first"

    degraded = get(workers[1], "/api/envoys/degrade-1")
    assert degraded["history"][0]["outcome"] == "partial"
    assert degraded["history"][0]["failed"] == ["res[1]"]
    assert degraded["history"][0]["errored_modules"] == ["b"]

    nodata = get(workers[1], "/api/envoys/nodata-1")
    assert nodata["history"] == [] and nodata["last_seen"] is None


def test_unknown_envoy_is_a_json_404_from_either_worker(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, _ = fleet
    for worker in workers:
        reply = http_get(worker.url + "/api/envoys/no-such-envoy")
        assert reply.status == 404
        assert reply.headers["Content-Type"].startswith("application/json")
        assert "no-such-envoy" in reply.json()["error"]


def test_list_by_each_status_is_the_same_from_either_worker(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, expected = fleet
    for status in [*ACTIVE_STATUSES, Status.REVOKED]:
        want = sorted(e for e, s in expected.items() if s == status)
        for worker in workers:
            assert listing(worker, status=status.value) == want, (status, worker.name)
    errors = sorted(e for e, s in expected.items() if s in ("failed", "degraded"))
    assert errors == ["degrade-1", "fail-1"]
    several = sorted(e for e, s in expected.items() if s in ("failed", "degraded", "relapsed"))
    for worker in workers:
        assert listing(worker, status="errors") == errors
        assert listing(worker, status="errors,relapsed") == several


def test_revoked_envoys_are_shown_but_not_listed_unless_asked(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, expected = fleet
    active = sorted(e for e, s in expected.items() if s != "revoked")
    for worker in workers:
        assert listing(worker) == active
        assert get(worker, "/api/envoys/gone-1")["status"] == "revoked"
        assert listing(worker, status="revoked") == ["gone-1"]


def test_pages_are_stable_and_a_cursor_works_on_any_worker(
    fleet: tuple[list[Worker], dict[str, str]],
) -> None:
    workers, expected = fleet
    everything = sorted(e for e, s in expected.items() if s != "revoked")
    for worker in workers:
        assert listing(worker, limit=3) == everything
    # Alternate workers from page to page: the cursor is not tied to one of them.
    ids: list[str] = []
    cursor = None
    turn = 0
    while True:
        query: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = get(workers[turn % 2], "/api/envoys", **query)
        assert len(page["envoys"]) <= 5
        assert set(page["envoys"][0]) == {"envoy_id", "status", "since", "last_seen", "labels"}
        ids.extend(e["envoy_id"] for e in page["envoys"])
        cursor, turn = page["next_cursor"], turn + 1
        if cursor is None:
            break
    assert ids == everything
    assert turn == 3


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"status": "bogus"}, "unknown status 'bogus'"),
        ({"status": "failed,nope"}, "unknown status 'nope'"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "!!!"}, "cursor"),
    ],
)
def test_bad_queries_are_json_400s(
    fleet: tuple[list[Worker], dict[str, str]], query: dict[str, str], needle: str
) -> None:
    workers, _ = fleet
    reply = http_get(workers[1].url + "/api/envoys?" + urlencode(query))
    assert reply.status == 400
    error = reply.json()["error"]
    assert needle in error
    if "status" in query:
        for name in [*(s.value for s in Status), "errors"]:
            assert name in error


def test_health_readiness_and_pages(fleet: tuple[list[Worker], dict[str, str]]) -> None:
    workers, _ = fleet
    for worker in workers:
        assert http_get(worker.url + "/healthz").json() == {"status": "ok"}
        ready = http_get(worker.url + "/readyz")
        assert ready.status == 200 and ready.json()["ready"] is True
        for path in ("/compliance", "/envoys/conv-1"):
            page = http_get(worker.url + path)
            assert page.status == 200
            assert page.headers["Content-Type"].startswith("text/html")
            assert b"<svg" in page.body or b"timeline" in page.body
