"""A broker outage longer than every client timeout (SPEC 11.4 "Broker outages").

A broker of the test's own (not the session's) holds a backlog of 80,000 runs of a few
thousand envoys; one worker starts on it, and when it has worked off part of it the
broker is SIGKILLed and kept down for 90 s. Meanwhile the worker process must stay up and
`/readyz` answer 503. Then the broker restarts on the same data and ports, the worker
catches up, and an oracle recomputes from the input topics alone every envoy's final
status and the fleet numbers: what the worker published must equal them, and every
envoy's status changes must be numbered 1..N without a gap and without two contents for
one version (nothing lost, nothing doubled).

`VIGO_OUTAGE_SECONDS` changes the outage's length (90 by default).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import kafkabroker
import pytest

from processor.config import Settings
from processor.topics_admin import ensure_topics
from projections.envoy import Rules
from projections.fleet import FleetCounts
from tests.harness import (
    Worker,
    consume,
    enrollment,
    http_json,
    metric_total,
    produce,
    replayed_states,
    run_event,
    worker_config,
)
from tests.test_chaos import check_versions
from topics.names import TopicNames
from topics.statuses import Status

OUTAGE_S = float(os.environ.get("VIGO_OUTAGE_SECONDS", "90"))
RUNS = 80_000
ENVOYS = [f"o-{i:04d}" for i in range(3000)]
#: Applied events after which the broker goes down (enrollments count too).
KILL_AFTER = 20_000
#: Long enough that no envoy goes offline during the test: final statuses come from runs.
INTERVAL_S = 3600
PREFIX = "outage."
OUTCOMES = [("ok",), ("ok", "ok"), ("changed",), ("a:ok", "b:failed"), ("failed",)]


def backlog(names: TopicNames, rng: random.Random) -> list[tuple[str, bytes | None, bytes | None]]:
    """Enrollments, then RUNS runs in random envoy order, 1% of them sent twice."""
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (names.enrollments, e.encode(), enrollment(e, interval_s=INTERVAL_S)) for e in ENVOYS
    ]
    sent: list[tuple[str, bytes | None, bytes | None]] = []
    while len(sent) < RUNS:
        if sent and rng.random() < 0.01:
            sent.append(rng.choice(sent))  # an at-least-once producer's resend
            continue
        envoy = rng.choice(ENVOYS)
        value = run_event(envoy, *rng.choice(OUTCOMES), run_id=str(uuid.uuid4()))
        sent.append((names.runs, envoy.encode(), value))
    return records + sent


def oracle(bootstrap: str, names: TopicNames) -> dict[str, Status]:
    """Every envoy's final status from the input topics alone, through the pure rules
    (enrollments, then runs in partition order; nobody is silent for 2 x an hour)."""
    states = replayed_states(
        bootstrap, (names.enrollments, names.runs), Rules(default_interval_s=INTERVAL_S), 90
    )
    return {envoy: state.status for envoy, state in states.items()}


def applied(worker: Worker) -> float:
    return metric_total(worker.url, "vigo_events_total", 'outcome="applied"')


def wait_for(what: str, check: Any, timeout: float, worker: Worker) -> None:
    """Poll `check()` until it holds; the worker must stay up meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.proc is not None and worker.proc.poll() is None, (
            f"the worker exited while waiting for {what}:\n{worker.log_text()[-4000:]}"
        )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s:\n{worker.log_text()[-4000:]}")
        time.sleep(0.2)


#: One readiness probe: seconds into the outage, HTTP status, the body's "broker".
Probe = tuple[float, int | None, Any]


def outage(broker: Any, worker: Worker, seconds: float) -> list[Probe]:
    """SIGKILL the broker, keep it down `seconds` while probing the worker's `/readyz`
    once a second, restart it on the same data and ports."""
    os.killpg(broker.pid, signal.SIGKILL)
    start = time.monotonic()
    seen: list[Probe] = []
    while (elapsed := time.monotonic() - start) < seconds:
        assert worker.proc is not None and worker.proc.poll() is None, (
            f"the worker exited {elapsed:.0f} s into the outage:\n{worker.log_text()[-4000:]}"
        )
        status, body = http_json(worker.url + "/readyz", timeout=5)
        seen.append((elapsed, status, body.get("broker") if isinstance(body, dict) else None))
        time.sleep(1.0)  # the outage's pace: one readiness probe a second
    broker.restart()
    return seen


@pytest.mark.timeout(OUTAGE_S + 240)
def test_a_worker_survives_a_long_broker_outage(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = kafkabroker.start_broker(data_dir=tmp_path / "kafka")
    names = TopicNames(PREFIX)
    config = worker_config(
        broker.bootstrap,
        PREFIX,
        partitions=4,
        interval=f"{INTERVAL_S}s",
        processor={"session_timeout_s": 10},
    )
    worker = Worker(config, tmp_path)
    try:
        asyncio.run(ensure_topics(Settings.model_validate(config), {}))
        produce(broker.bootstrap, backlog(names, random.Random(7)))
        produced_at = time.monotonic()
        worker.start()
        wait_for(f"{KILL_AFTER} events applied", lambda: applied(worker) >= KILL_AFTER, 90, worker)
        before = applied(worker)
        seen = outage(broker, worker, OUTAGE_S)
        restarted_at = time.monotonic()
        expected = oracle(broker.bootstrap, names)
        counts = FleetCounts.of_statuses(expected.values())

        def settled(records: list[Any]) -> bool:
            return bool(records) and records[-1]["by_status"] == counts.as_dict()

        published = consume(broker.bootstrap, names.fleet_convergence, until=settled, timeout=150)
        caught_up_at = time.monotonic()
        ready_url = worker.url + "/readyz"
        wait_for("/readyz 200 again", lambda: http_json(ready_url)[0] == 200, 60, worker)
        changes = consume(broker.bootstrap, names.status_changes, timeout=60)
        assert worker.proc is not None and worker.proc.poll() is None
        log = worker.log_text()
    finally:
        worker.kill()
        broker.stop()

    print(
        f"\nbroker outage: backlog produced in {produced_at - started:.0f} s, "
        f"{before:.0f} events applied before the outage, {OUTAGE_S:.0f} s down, "
        f"caught up {caught_up_at - restarted_at:.0f} s after the restart, "
        f"{len(changes)} status changes, {time.monotonic() - started:.0f} s in all; "
        f"/readyz during the outage: {summary(seen)}"
    )
    # The worker noticed within a minute (client timeouts, then one deadline), and from
    # then to the end of the outage /readyz said 503 with "broker": false.
    noticed = [at for at, _, reachable in seen if reachable is False]
    assert noticed and noticed[0] < 60, seen
    assert all(
        status == 503 and reachable is False for at, status, reachable in seen if at >= noticed[0]
    ), seen
    assert before < len(ENVOYS) + RUNS  # the broker went down with a backlog left
    assert "broker unreachable" in log and "broker reachable again" in log
    assert published[-1]["by_status"] == counts.as_dict(), (published[-1], counts.as_dict())
    assert published[-1]["active"] == len(expected) == len(ENVOYS)
    check_versions(changes, expected, {})


def summary(seen: list[Probe]) -> str:
    """`status/broker from..to s` runs of the readiness probes, for the summary line."""
    runs: list[tuple[str, float, float]] = []
    for at, status, reachable in seen:
        what = f"{status}/broker={reachable}"
        if runs and runs[-1][0] == what:
            runs[-1] = (what, runs[-1][1], at)
        else:
            runs.append((what, at, at))
    return ", ".join(f"{what} {a:.0f}..{b:.0f} s" for what, a, b in runs)


@pytest.fixture(autouse=True)
def _show_print(capsys: pytest.CaptureFixture[str]) -> Any:
    """The summary line is part of the result: shown even when the test passes."""
    yield
    with capsys.disabled():
        print(capsys.readouterr().out, end="")
