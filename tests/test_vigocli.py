"""`vigocli` as an operator runs it: a subprocess against real workers (SPEC section 8)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from processor.cli.vigocli import render_doctor
from tests.harness import Worker, enrollment, free_port, produce, run_event
from tests.webharness import (
    VIGOCLI,
    poll,
    prefix_of,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.names import TopicNames
from topics.statuses import ACTIVE_STATUSES, Status


def vigocli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VIGO_URL"}
    if url is not None:
        env["VIGO_URL"] = url
    return subprocess.run(
        [str(VIGOCLI), *args], capture_output=True, text=True, env=env, timeout=60
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="module")
def listed(kafka_bootstrap: str) -> Iterator[tuple[Worker, dict[str, str]]]:
    """A worker whose fleet has every status."""
    with running_workers(kafka_bootstrap, smtp=threshold_config(50)) as (worker,):
        yield worker, publish_status_fleet(kafka_bootstrap, [worker])


def table_ids(output: str) -> list[str]:
    """Envoy ids of `envoys list` (ids may contain spaces: split on the status column)."""
    lines = output.strip().splitlines()
    assert lines[0].split() == ["ENVOY", "STATUS", "SINCE", "LAST", "SEEN", "LABELS"]
    width = lines[0].index("STATUS")
    return [line[:width].rstrip() for line in lines[1:]]


def test_unreachable_processor_is_one_line_and_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["doctor"], ["envoys", "list", "--status", "errors"], ["envoys", "show", "x"]):
        done = vigocli("--url", url, *args)
        assert done.returncode == 2, done
        assert done.stdout == ""
        assert one_line(done.stderr).startswith(f"vigocli: cannot reach the processor at {url}")
    # VIGO_URL is the default for --url.
    done = vigocli("doctor", url=url)
    assert done.returncode == 2 and url in one_line(done.stderr)


def test_unknown_status_is_a_usage_error_naming_the_valid_ones() -> None:
    done = vigocli("--url", "http://127.0.0.1:9", "envoys", "list", "--status", "errors,bogus")
    assert done.returncode == 64  # a usage error (SPEC 10.8): 2 stays "cannot reach"
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if "bogus" in line]
    assert len(error) == 1
    for name in [*(s.value for s in Status), "errors"]:
        assert name in error[0]


def test_doctor_shows_inactive_and_revoked_beside_active() -> None:
    """SPEC 10.3: the counts outside active, when the processor reports them."""
    doc = {"active": 2, "compliant": 1, "percent": 50.0, "by_status": {"converged": 1}}
    assert "Outside active" not in render_doctor(doc)  # a processor before the lifecycle
    text = render_doctor(doc | {"inactive": 3, "revoked": 4})
    assert text.splitlines()[-1] == "Outside active     3 inactive, 4 revoked"
    assert "1 of 2 active envoys compliant" in text


def test_doctor_exit_status_follows_the_threshold(kafka_bootstrap: str) -> None:
    with running_workers(kafka_bootstrap, smtp=threshold_config(60)) as (worker,):
        t = TopicNames(prefix_of(worker))

        def doctor(*extra: str) -> subprocess.CompletedProcess[str]:
            return vigocli("--url", worker.url, "doctor", *extra)

        def fleet_of(active: int) -> subprocess.CompletedProcess[str]:
            """Doctor once every envoy's enrollment and run are counted: the topics are
            read independently, so an envoy may be counted `no_data` for a moment."""

            def settled(d: subprocess.CompletedProcess[str]) -> bool:
                doc = json.loads(d.stdout) if d.returncode != 2 else {}
                return doc.get("active") == active and doc["by_status"]["no_data"] == 0

            done = poll(lambda: doctor("--json"), settled)
            assert json.loads(done.stdout)["active"] == active, done
            return doctor()

        empty = fleet_of(0)
        assert empty.returncode == 0, empty
        assert "no active envoys" in empty.stdout

        def envoys(results: dict[str, tuple[str, ...]]) -> None:
            produce(
                kafka_bootstrap,
                [(t.enrollments, e.encode(), enrollment(e, interval_s=3600)) for e in results]
                + [(t.runs, e.encode(), run_event(e, *r)) for e, r in results.items()],
            )

        envoys({"a-1": ("ok",), "a-2": ("ok",), "a-3": ("ok", "ok"), "a-4": ("changed",)})
        above = fleet_of(4)
        assert above.returncode == 0, above
        assert "75.00%" in above.stdout and "3 of 4 active envoys compliant" in above.stdout
        assert "60%" in above.stdout and "ok: at or above" in above.stdout
        for status in ACTIVE_STATUSES:
            assert status.value in above.stdout

        envoys({"b-1": ("a:failed",), "b-2": ("a:failed",), "b-3": ("a:ok", "b:failed")})
        below = fleet_of(7)
        assert below.returncode == 1, below
        assert "42.86%" in below.stdout and "3 of 7" in below.stdout
        assert "BREACHED" in below.stdout

        machine = doctor("--json")
        assert machine.returncode == 1
        doc = json.loads(machine.stdout)
        assert doc["breached"] is True and doc["threshold"] == 60
        assert doc["by_status"]["failed"] == 2 and doc["by_status"]["degraded"] == 1


def test_list_by_each_status_and_by_errors(listed: tuple[Worker, dict[str, str]]) -> None:
    worker, expected = listed
    for status in [*ACTIVE_STATUSES, Status.REVOKED]:
        done = vigocli("--url", worker.url, "envoys", "list", "--status", status.value)
        assert done.returncode == 0, done
        want = sorted(e for e, s in expected.items() if s == status)
        if want:
            assert table_ids(done.stdout) == want, status
        else:
            assert done.stdout.strip() == f"no envoys with status {status.value}"
    errors = vigocli("--url", worker.url, "envoys", "list", "--status", "errors")
    assert table_ids(errors.stdout) == ["degrade-1", "fail-1"]
    several = vigocli("--url", worker.url, "envoys", "list", "--status", "relapsed,diverged")
    assert table_ids(several.stdout) == ["diverge-1", "relapse-1"]


def test_list_follows_every_page_and_json(listed: tuple[Worker, dict[str, str]]) -> None:
    worker, expected = listed
    active = sorted(e for e, s in expected.items() if s != "revoked")
    paged = vigocli("--url", worker.url, "envoys", "list", "--page-size", "2")
    assert paged.returncode == 0, paged
    assert table_ids(paged.stdout) == active
    limited = vigocli("--url", worker.url, "envoys", "list", "--limit", "3", "--page-size", "2")
    assert table_ids(limited.stdout) == active[:3]
    machine = vigocli("--url", worker.url, "envoys", "list", "--status", "errors", "--json")
    doc = json.loads(machine.stdout)
    assert [e["envoy_id"] for e in doc["envoys"]] == ["degrade-1", "fail-1"]
    assert {e["status"] for e in doc["envoys"]} == {"degraded", "failed"}


def test_show_one_envoy_and_its_drift_history(listed: tuple[Worker, dict[str, str]]) -> None:
    worker, _ = listed
    done = vigocli("--url", worker.url, "envoys", "show", "diverge-1")
    assert done.returncode == 0, done
    assert "diverge-1" in done.stdout and "diverged since" in done.stdout
    assert "3 consecutive" in done.stdout and "role=diverge" in done.stdout
    assert done.stdout.count("changed: res[0]") == 3
    odd = vigocli("--url", worker.url, "envoys", "show", "rack 7/db-é", "--json")
    assert odd.returncode == 0, odd
    doc = json.loads(odd.stdout)
    assert doc["envoy_id"] == "rack 7/db-é" and doc["status"] == "converged"
    assert [r["outcome"] for r in doc["history"]] == ["clean"]

    missing = vigocli("--url", worker.url, "envoys", "show", "no-such-envoy")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert one_line(missing.stderr) == "vigocli: no envoy 'no-such-envoy'"
