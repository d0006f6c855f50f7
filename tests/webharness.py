"""Helpers for the operator-surface tests (API, metrics, vigocli, dashboard): groups of
real workers, polling, and plain HTTP that returns error statuses instead of raising."""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import yaml

from tests.harness import Worker, enrollment, produce, run_event, worker_config
from topics.names import TopicNames
from topics.statuses import ACTIVE_STATUSES

VIGOCLI = Path(sys.executable).parent / "vigocli"
T = TypeVar("T")
Record = tuple[str, bytes | None, bytes | None]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def http_get(url: str, timeout: float = 15, token: str | None = None) -> Reply:
    """GET, with the API's bearer token when one is given (SPEC 10.7)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers.items()), exc.read())


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 90) -> T:
    """`fetch()` until `done(value)`; on timeout the last value is returned, so the test's
    own assertion shows what was seen instead of a bare timeout."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = fetch()
    return value


def settled(workers: Sequence[Worker]) -> bool:
    """Every worker ready, all of them in one group, exactly one owning the fleet."""
    bodies = []
    for worker in workers:
        reply = http_get(worker.url + "/readyz")
        if reply.status != 200:
            return False
        bodies.append(reply.json())
    return (
        all(b["workers"] == len(workers) and not b["rebalancing"] for b in bodies)
        and sum(bool(b["fleet_owner"]) for b in bodies) == 1
    )


@contextmanager
def running_workers(bootstrap: str, count: int = 1, **sections: Any) -> Iterator[list[Worker]]:
    """`count` workers of one group (same config and topic prefix), started together and
    settled; always stopped on exit.

    Their directory is not under pytest's basetemp: a concurrent pytest session prunes
    the older numbered directories, and would take the logs of running workers with it.
    It is kept when VIGO_KEEP_WORKDIR is set, for reading the logs."""
    workdir = Path(tempfile.mkdtemp(prefix="vigo-web-"))
    config = worker_config(bootstrap, new_prefix(), **sections)
    workers = [Worker(config, workdir, name=f"w{i + 1}") for i in range(count)]
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        if not poll(lambda: settled(workers), bool, timeout=120):
            logs = "\n".join(w.log_text()[-3000:] for w in workers)
            raise AssertionError(f"workers did not settle:\n{logs}")
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        if not os.environ.get("VIGO_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)


def prefix_of(worker: Worker) -> str:
    prefix: str = worker.config["kafka"]["topic_prefix"]
    return prefix


def threshold_config(threshold: float) -> dict[str, Any]:
    """Only the threshold event: no stale mail, and no SMTP server needed."""
    return {"events": {"convergence.threshold": {"threshold": threshold}}, "port": 1}


def status_fleet(topics: TopicNames, tag: str = "") -> tuple[list[Record], dict[str, str]]:
    """Input records giving every status (and a revoked envoy), and the status expected of
    each envoy. Envoys get a one-hour check-in interval so none goes offline during a test,
    except the one meant to."""
    runs: dict[str, list[tuple[str, ...]]] = {
        "conv-1": [("ok", "ok")],
        "conv-2": [("changed",), ("ok",)],
        "conv-3": [("ok",)],
        "rack 7/db-é": [("ok",)],  # needs URL quoting both ways
        "drift-1": [("ok", "changed")],
        "relapse-1": [("changed",), ("changed",)],
        "diverge-1": [("changed",), ("changed",), ("changed", "ok")],
        "degrade-1": [("a:ok", "b:failed")],
        "fail-1": [("a:failed",)],
        "nodata-1": [],
        "nodata-2": [],
        "gone-1": [("ok",)],
        "offline-1": [],
    }
    expected = {
        "conv-1": "converged",
        "conv-2": "converged",
        "conv-3": "converged",
        "rack 7/db-é": "converged",
        "drift-1": "drifted",
        "relapse-1": "relapsed",
        "diverge-1": "diverged",
        "degrade-1": "degraded",
        "fail-1": "failed",
        "nodata-1": "no_data",
        "nodata-2": "no_data",
        "gone-1": "revoked",
        "offline-1": "offline",
    }
    records: list[Record] = []
    for name, results in runs.items():
        envoy = tag + name
        key = envoy.encode()
        # The offline one gets the worker's default interval: two seconds in tests.
        interval = None if name == "offline-1" else 3600
        role = name.split("-")[0]
        records.append((topics.enrollments, key, enrollment(envoy, interval_s=interval, role=role)))
        records.extend((topics.runs, key, run_event(envoy, *r)) for r in results)
    gone = (tag + "gone-1").encode()
    records.append((topics.enrollments, gone, enrollment(tag + "gone-1", "revoked")))
    return records, {tag + name: status for name, status in expected.items()}


def counts_of(expected: dict[str, str]) -> dict[str, int]:
    """The fleet breakdown the expected statuses give (revoked envoys are not counted)."""
    counts = dict.fromkeys((s.value for s in ACTIVE_STATUSES), 0)
    for status in expected.values():
        if status in counts:
            counts[status] += 1
    return counts


def publish_status_fleet(
    bootstrap: str, workers: Sequence[Worker], tag: str = "", token: str | None = None
) -> dict[str, str]:
    """Publish `status_fleet` to the workers' topics and wait until every worker's
    `/api/compliance` shows its counts; returns envoy id -> expected status."""
    records, expected = status_fleet(TopicNames(prefix_of(workers[0])), tag=tag)
    produce(bootstrap, records)
    want = counts_of(expected)
    for worker in workers:
        url = worker.url + "/api/compliance"
        reply = poll(
            lambda: http_get(url, token=token),  # noqa: B023 - used before the loop moves on
            lambda r: r.status == 200 and r.json()["by_status"] == want,
        )
        assert reply.status == 200 and reply.json()["by_status"] == want, reply.body
    return expected


def fetch(base_url: str, path: str, headers: Mapping[str, str | bytes] | None = None) -> Reply:
    """GET `path` with http.client: redirects are not followed, and a header value given
    as bytes goes out as those very bytes (a raw Latin-1 0xE9, say), which urllib would
    re-encode."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def initialized_app(worker: Worker, scratch: Path) -> Any:
    """A Faust app built from the worker's own configuration, its web server initialized
    as a worker's is at start (Faust's blueprints applied), not started: its aiohttp
    router (`app.web.web_app.router`) holds what that worker's web server can route to."""
    from processor.config import load_settings
    from processor.topology import build_app

    config = yaml.safe_load((worker.workdir / f"{worker.name}.yaml").read_text())
    config["processor"]["data_dir"] = str(scratch / "data")
    path = scratch / "routes.yaml"
    path.write_text(yaml.safe_dump(config))
    app = build_app(load_settings(path)).app
    app.web.init_server()
    return app
