"""Resources that drift (SPEC 11.3) end to end: a real worker on the real broker counts the
runs of envoys spread over its partitions; `/api/resources/top` answers each kind, for
the fleet and for a group counted on its own, and refuses bad queries with JSON; `vigocli
resources top` prints it; a worker killed with SIGKILL while it counts loses nothing and
counts nothing twice.

No eviction happens at this size, so every count is exact and every `error` 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.eventgen import iso
from tests.harness import Worker, enrollment, metric_total, produce, worker_config
from tests.webharness import VIGOCLI, http_get, new_prefix, poll, prefix_of, running_workers
from topics.names import TopicNames

NTP, NGINX, PG = "file[/etc/ntp.conf]", "service[nginx]", "package[postgresql]"
DB = [f"db-{i}" for i in range(3)]
WEB = [f"web-{i}" for i in range(5)]
#: Round numbers at which db-0 changes postgresql: never twice in a row.
PG_ROUNDS = (0, 2)


def drift_run(envoy: str, round_no: int, base_ms: int) -> bytes:
    """Every envoy corrects ntp.conf on every run (at one version: non-idempotent from
    its third run on); the web envoys fail nginx; db-0 changes postgresql now and then."""
    resources = [
        {"id": NTP, "module": "files", "result": "changed"},
        {"id": "file[/etc/motd]", "module": "files", "result": "ok"},
    ]
    if envoy.startswith("web"):
        resources.append({"id": NGINX, "module": "services", "result": "failed"})
    if envoy == "db-0" and round_no in PG_ROUNDS:
        resources.append({"id": PG, "module": "packages", "result": "changed"})
    finished = iso(base_ms + round_no * 1000)
    return orjson.dumps(
        {
            "schema": "vigo.run/1",
            "envoy_id": envoy,
            "run_id": str(uuid.uuid4()),
            "started_at": finished,
            "finished_at": finished,
            "config_version": "v7",
            "resources": resources,
        }
    )


def expected(rounds: int, scope: str = "") -> dict[str, dict[str, tuple[int, int]]]:
    """kind -> id -> (runs, envoys), exact."""
    db, web = len(DB), 0 if scope == "role=db" else len(WEB)
    envoys = db + web
    pg = sum(1 for r in PG_ROUNDS if r < rounds)
    changed = {NTP: (rounds * envoys, envoys), **({PG: (pg, 1)} if pg else {})}
    failed = {NGINX: (rounds * web, web)} if web else {}
    stuck = max(0, rounds - 2)
    non_idempotent = {NTP: (stuck * envoys, envoys)} if stuck else {}
    return {"changed": changed, "failed": failed, "non_idempotent": non_idempotent}


def top(url: str, kind: str, label: str | None = None) -> dict[str, tuple[int, int]]:
    query = f"?kind={kind}" + (f"&label={label}" if label else "")
    reply = http_get(url + "/api/resources/top" + query)
    if reply.status == 503:  # the fleet projection is not ready yet (after a restart)
        return {}
    doc = reply.json()
    assert doc["window_s"] == 86_400, doc
    return {r["id"]: (r["runs"], r["envoys"]) for r in doc["resources"] if r["error"] == 0}


def top_when(
    url: str, kind: str, label: str | None, done: Callable[[dict[str, tuple[int, int]]], bool]
) -> dict[str, tuple[int, int]]:
    """`top` polled until `done` (the last answer on timeout)."""
    return poll(lambda: top(url, kind, label), done, timeout=120)


def vigocli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIGO_URL", "VIGO_TOKEN")}
    return subprocess.run(
        [str(VIGOCLI), *args], capture_output=True, text=True, env=env, timeout=60
    )


def _is_found(reply: Any) -> bool:
    return bool(reply.status == 200)


@contextmanager
def counted_fleet(bootstrap: str, workdir: Path) -> Iterator[tuple[Worker, int]]:
    """One worker (4 partitions, groups by role, role=db counted on its own) that has
    counted three rounds of runs (every kind and scope polled until exact), and when the
    rounds finished (later rounds follow them)."""
    prefix = new_prefix()
    config = worker_config(
        bootstrap,
        prefix,
        fleet={"group_by": ["role"]},
        resources={"groups": ["role=db"]},
        processor={"session_timeout_s": 6},
    )
    worker = Worker(config, workdir).start()
    try:
        t = TopicNames(prefix)
        # Enrolled first and seen: the enrollments and runs topics are not ordered with
        # each other, and a run read before its envoy's labels counts for no group.
        produce(
            bootstrap,
            [(t.enrollments, e.encode(), enrollment(e, role=e.split("-")[0])) for e in DB + WEB],
        )
        for envoy in DB + WEB:
            reply = poll(partial(http_get, f"{worker.url}/api/envoys/{envoy}"), _is_found)
            assert reply.status == 200, (envoy, reply.status)
        records: list[tuple[str, bytes | None, bytes | None]] = []
        base_ms = int(time.time() * 1000)
        for round_no in range(3):
            records += [(t.runs, e.encode(), drift_run(e, round_no, base_ms)) for e in DB + WEB]
        produce(bootstrap, records)
        for scope in ("", "role=db"):
            want = expected(3, scope)
            for kind in ("changed", "failed", "non_idempotent"):
                got = top_when(worker.url, kind, scope or None, want[kind].__eq__)
                assert got == want[kind], (scope, kind)
        yield worker, base_ms
    finally:
        worker.kill()


@pytest.fixture(scope="module")
def fleet(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """Counted three rounds; no test changes it."""
    with counted_fleet(kafka_bootstrap, tmp_path_factory.mktemp("resources")) as (worker, _):
        yield worker


def test_each_kind_is_counted_exactly_fleet_wide_and_for_the_group(fleet: Worker) -> None:
    """The fixture waited for the exact counts; they stay exact (nothing counted twice)."""
    for scope in ("", "role=db"):
        want = expected(3, scope)
        for kind in ("changed", "failed", "non_idempotent"):
            assert top(fleet.url, kind, scope or None) == want[kind], (scope, kind)
    doc = http_get(fleet.url + "/api/resources/top?kind=changed&limit=1").json()
    assert doc["resources"] == [{"id": NTP, "module": "files", "runs": 24, "envoys": 8, "error": 0}]
    # Counters held for the partitions, and no resource id as a label (SPEC 11.3).
    assert metric_total(fleet.url, "vigo_resource_counters", 'kind="changed"') >= 2
    metrics = http_get(fleet.url + "/metrics").body.decode()
    assert NTP not in metrics and "ntp.conf" not in metrics


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("kind=ok", 400, "kind must be one of changed, failed, non_idempotent"),
        ("limit=0", 400, "limit must be an integer from 1 to 1000"),
        ("limit=abc", 400, "limit must be an integer from 1 to 1000"),
        ("label=role", 400, "label must be KEY=VALUE, e.g. role=db"),
        ("label=env=prod", 400, "'env' is not a key of fleet.group_by (role)"),
        ("label=role=web", 404, "group 'role=web' is not counted on its own"),
    ],
)
def test_bad_queries_are_json_errors(fleet: Worker, query: str, status: int, error: str) -> None:
    reply = http_get(fleet.url + "/api/resources/top?" + query)
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json()["error"].startswith(error)


def test_the_cli_prints_the_table_and_exits_as_the_other_commands(fleet: Worker) -> None:
    poll(lambda: top(fleet.url, "non_idempotent"), lambda g: g == expected(3)["non_idempotent"])
    done = vigocli("--url", fleet.url, "resources", "top")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "resources changed (corrected drift), last 24h"
    assert lines[1].split() == ["RESOURCE", "MODULE", "RUNS", "±ERROR", "ENVOYS"]
    assert lines[2].split() == [NTP, "files", "24", "±0", "8"]
    assert lines[3].split() == [PG, "packages", "2", "±0", "1"]

    done = vigocli("resources", "top", "--non-idempotent", "--label", "role=db", "--url", fleet.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == [NTP, "files", "3", "±0", "3"]

    done = vigocli("--url", fleet.url, "resources", "top", "--failed", "--json", "--limit", "5")
    assert done.returncode == 0
    assert json.loads(done.stdout)["resources"] == [
        {"id": NGINX, "module": "services", "runs": 15, "envoys": 5, "error": 0}
    ]

    done = vigocli("--url", fleet.url, "resources", "top", "--label", "role=web")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip() == (
        "vigocli: group 'role=web' is not counted on its own (resources.groups: role=db)"
    )
    done = vigocli("--url", fleet.url, "resources", "top", "--failed", "--non-idempotent")
    assert done.returncode == 64 and "exclude each other" in done.stderr
    done = vigocli("--url", fleet.url, "resources", "top", "--label", "env=prod")
    assert done.returncode == 64 and "not a key of fleet.group_by" in done.stderr
    done = vigocli("--url", "http://127.0.0.1:9", "resources", "top")
    assert done.returncode == 2 and "cannot reach the processor" in done.stderr


def test_a_sigkill_while_counting_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Killed right after more rounds were produced (mid-count, mid-checkpoint or between
    the two checkpoint writes), restarted: the counts reach the exact totals and stay
    there."""
    with counted_fleet(kafka_bootstrap, tmp_path) as (worker, base_ms):
        t = TopicNames(worker.config["kafka"]["topic_prefix"])
        more = [(t.runs, e.encode(), drift_run(e, r, base_ms)) for r in (3, 4) for e in DB + WEB]
        produce(kafka_bootstrap, more)
        worker.kill()
        worker.start()
        want = expected(5)
        for kind in ("changed", "failed", "non_idempotent"):
            reached = want[kind]
            got = top_when(
                worker.url,
                kind,
                None,
                lambda g, reached=reached: all(  # type: ignore[misc]
                    g.get(i, (0, 0))[0] >= n for i, (n, _) in reached.items()
                ),
            )
            assert got == want[kind], kind
        db = expected(5, "role=db")["non_idempotent"]
        assert top_when(worker.url, "non_idempotent", "role=db", db.__eq__) == db


def test_the_demo_fleet_shows_its_non_idempotent_resource(kafka_bootstrap: str) -> None:
    """`scripts/up`'s simulated fleet (`vigo-simulate`): a few rounds, and ntp.conf, which
    the drifting envoys correct on every run at one version, tops the non-idempotent
    list and the changed list."""
    with running_workers(kafka_bootstrap, fleet={"group_by": ["role"]}) as (worker,):
        simulate = Path(sys.executable).parent / "vigo-simulate"
        done = subprocess.run(
            [str(simulate), "--bootstrap", kafka_bootstrap, "--prefix", prefix_of(worker),
             "--envoys", "60", "--interval", "0.5", "--rounds", "4"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for kind in ("non_idempotent", "changed"):
            doc = poll(
                lambda kind=kind: http_get(  # type: ignore[misc]
                    worker.url + f"/api/resources/top?kind={kind}&limit=1"
                ).json(),
                lambda d: bool(d.get("resources")) and d["resources"][0]["envoys"] >= 2,
            )
            assert doc["resources"][0]["id"] == "file[/etc/ntp.conf]", doc
            assert doc["resources"][0]["module"] == "files"
