"""Groups by label (SPEC 10.2) on the operator surfaces of two real workers of one group:
`/api/compliance` with and without `?label=`, the envoy list filtered by label (paginated,
from either worker), re-enrollments with new labels, the cap, and the group metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.mail import body_text
from tests.harness import Worker, enrollment, produce
from tests.test_vigocli import one_line, table_ids, vigocli
from tests.webharness import (
    http_get,
    poll,
    prefix_of,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.names import TopicNames

#: Label values are data: quotes, a backslash, CR/LF, markup and non-ASCII.
HOSTILE = 'x"\\\r\n<script>alert(1)</script> é'
ONE_ENVOY_ROLES = {"degrade", "diverge", "drift", "offline", "rack 7/db", "relapse"}


@pytest.fixture(scope="module")
def fleet(kafka_bootstrap: str) -> Iterator[list[Worker]]:
    smtp = threshold_config(50.0)
    smtp["events"]["convergence.threshold"]["groups"] = {"role=conv": 80, "role=fail": 30}
    fleet_section = {"group_by": ["role", "env"], "max_group_values": 5}
    with running_workers(kafka_bootstrap, count=2, smtp=smtp, fleet=fleet_section) as workers:
        publish_status_fleet(kafka_bootstrap, workers)
        enroll(kafka_bootstrap, workers, "hostile-1", env=HOSTILE)
        for worker in workers:
            poll(lambda: compliance(worker), lambda d: d["active"] == 13)  # noqa: B023
        yield workers


def enroll(bootstrap: str, workers: list[Worker], envoy: str, **labels: str) -> None:
    topic = TopicNames(prefix_of(workers[0])).enrollments
    produce(bootstrap, [(topic, envoy.encode(), enrollment(envoy, interval_s=3600, **labels))])


def compliance(worker: Worker, label: str | None = None) -> Any:
    query = "?" + urlencode({"label": label}) if label is not None else ""
    reply = http_get(worker.url + "/api/compliance" + query)
    assert reply.status == 200, reply.body
    return reply.json()


def listing(worker: Worker, **query: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        full = {**query, **({"cursor": cursor} if cursor else {})}
        reply = http_get(worker.url + "/api/envoys?" + urlencode(full))
        assert reply.status == 200, reply.body
        page = reply.json()
        ids.extend(e["envoy_id"] for e in page["envoys"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_groups_sum_to_the_fleet_and_the_cap_names_the_largest(fleet: list[Worker]) -> None:
    for worker in fleet:
        doc = compliance(worker)
        assert list(doc["groups"]) == ["role", "env"]
        roles = doc["groups"]["role"]
        # 5 values named by size (ties in byte order), role=conv and role=fail named for
        # their own thresholds (no slot taken), hostile-1 under (none), the rest under
        # (other). Which of the one-envoy values are named depends on how they fall into
        # partitions: each partial names at most 5 values too (README, "Groups by label").
        named = set(roles) - {"conv", "fail", "(other)", "(none)"}
        assert "nodata" in named and len(named) == 5, roles.keys()
        assert named - {"nodata"} <= ONE_ENVOY_ROLES
        in_named = sum(roles[v]["active"] for v in named)
        assert roles["(other)"]["active"] == 13 - 3 - 1 - 1 - in_named
        assert roles["(none)"]["by_status"]["no_data"] == 1
        assert roles["conv"] == {
            "active": 3,
            "compliant": 3,
            "percent": 100.0,
            "by_status": roles["conv"]["by_status"],
            "inactive": 0,
            "revoked": 0,
        }
        assert doc["groups"]["env"] == {
            "(none)": doc["groups"]["env"]["(none)"],
            HOSTILE: doc["groups"]["env"][HOSTILE],
        }
        assert doc["groups"]["env"]["(none)"]["active"] == 12
        for key in ("role", "env"):
            values = doc["groups"][key].values()
            assert sum(v["active"] for v in values) == doc["active"] == 13
            assert sum(v["compliant"] for v in values) == doc["compliant"]
            for status, n in doc["by_status"].items():
                assert sum(v["by_status"][status] for v in values) == n


def test_one_group_in_the_fleets_shape_from_either_worker(fleet: list[Worker]) -> None:
    for worker in fleet:
        conv = compliance(worker, "role=conv")
        assert "history" not in conv and "groups" not in conv
        assert conv["label"] == "role=conv"
        assert (conv["active"], conv["compliant"], conv["percent"]) == (3, 3, 100.0)
        assert (conv["threshold"], conv["breached"]) == (80, False)  # its own threshold
        fail = compliance(worker, "role=fail")
        assert (fail["percent"], fail["threshold"], fail["breached"]) == (0.0, 30, True)
        drift = compliance(worker, "role=drift")
        assert (drift["threshold"], drift["breached"]) == (50, True)  # the fleet's
        other = compliance(worker)["groups"]["role"]["(other)"]["active"]
        assert compliance(worker, "role=(other)")["active"] == other
        assert compliance(worker, "env=(none)")["active"] == 12  # taken literally
        hostile = compliance(worker, "env=" + HOSTILE)
        assert (hostile["label"], hostile["active"]) == ("env=" + HOSTILE, 1)
        assert set(hostile) == {
            "at", "label", "active", "compliant", "percent", "by_status", "threshold", "breached",
            "inactive", "revoked",
        }  # fmt: skip


@pytest.mark.parametrize(
    ("label", "status", "needle"),
    [
        ("site=x", 400, "not a key of fleet.group_by"),
        ("role", 400, "KEY=VALUE"),
        ("=x", 400, "KEY=VALUE"),
        ("role=nobody", 404, "no envoys in group"),
        ("env=prod", 404, "no envoys in group"),
    ],
)
def test_bad_labels_are_json_errors(
    fleet: list[Worker], label: str, status: int, needle: str
) -> None:
    for worker in fleet:
        reply = http_get(worker.url + "/api/compliance?" + urlencode({"label": label}))
        assert reply.status == status, reply.body
        assert reply.headers["Content-Type"].startswith("application/json")
        assert needle in reply.json()["error"]


def test_envoy_list_filtered_by_label_pages_from_either_worker(fleet: list[Worker]) -> None:
    active = sorted(
        ["conv-1", "conv-2", "conv-3", "rack 7/db-é", "drift-1", "relapse-1", "diverge-1"]
    )
    active = sorted(
        [*active, "degrade-1", "fail-1", "nodata-1", "nodata-2", "offline-1", "hostile-1"]
    )
    for worker in fleet:
        assert listing(worker, label="role=conv") == ["conv-1", "conv-2", "conv-3"]
        assert listing(worker, label="role=conv", limit=1) == ["conv-1", "conv-2", "conv-3"]
        assert listing(worker, label="role=conv", status="drifted") == []
        assert listing(worker, label="role=nodata", status="no_data", limit=1) == [
            "nodata-1",
            "nodata-2",
        ]
        assert listing(worker, label="env=" + HOSTILE) == ["hostile-1"]
        assert listing(worker, label="env=(none)", limit=4) == [
            e for e in active if e != "hostile-1"
        ]
        assert listing(worker, label="role=(none)") == ["hostile-1"]
        assert listing(worker, label="role=gone", status="revoked") == ["gone-1"]
        reply = http_get(worker.url + "/api/envoys?label=role")
        assert reply.status == 400 and "KEY=VALUE" in reply.json()["error"]


def test_vigocli_doctor_by_label_and_by_key(fleet: list[Worker]) -> None:
    url = fleet[1].url
    conv = vigocli("doctor", "--label", "role=conv", url=url)
    assert conv.returncode == 0, conv  # 100 % against its own 80 %
    assert "Group              role=conv" in conv.stdout
    assert "Threshold          80%  ok" in conv.stdout
    assert "Convergence        100.00%  (3 of 3 active envoys compliant)" in conv.stdout
    fail = vigocli("doctor", "--label", "role=fail", url=url)
    assert fail.returncode == 1 and "Threshold          30%  BREACHED" in fail.stdout
    drift = vigocli("doctor", "--label", "role=drift", url=url)
    assert drift.returncode == 1 and "Threshold          50%" in drift.stdout  # the fleet's
    as_json = vigocli("doctor", "--label", "env=(none)", "--json", url=url)
    assert json.loads(as_json.stdout)["active"] == 12

    unknown = vigocli("doctor", "--label", "role=nobody", url=url)
    assert unknown.returncode == 1 and "no envoys in group" in one_line(unknown.stderr)
    not_a_key = vigocli("doctor", "--label", "site=x", url=url)
    assert not_a_key.returncode == 64 and "fleet.group_by" in one_line(not_a_key.stderr)
    bad = vigocli("doctor", "--label", "role", url=url)
    assert bad.returncode == 64 and "KEY=VALUE" in bad.stderr

    by_role = vigocli("doctor", "--by", "role", url=url)
    assert by_role.returncode == 1, by_role  # the fleet: 4 of 13 against 50 %
    lines = by_role.stdout.splitlines()
    assert lines[0].startswith("Fleet convergence")
    start = lines.index("By role") + 2
    rows = [line.split() for line in lines[start:]]
    percents = [float(r[1].rstrip("%")) for r in rows if r[1] != "n/a"]
    assert percents == sorted(percents), "worst first"
    assert [r[0] for r in rows if r[0] in ("conv", "fail")] == ["fail", "conv"]
    by_env = vigocli("doctor", "--by", "env", url=url)
    assert "\r" not in by_env.stdout and "<script>" in by_env.stdout
    assert body_text(HOSTILE) in by_env.stdout  # escaped, on one line
    no_key = vigocli("doctor", "--by", "site", url=url)
    assert no_key.returncode == 64 and "role, env" in one_line(no_key.stderr)


def test_vigocli_envoys_list_by_label(fleet: list[Worker]) -> None:
    url = fleet[0].url
    done = vigocli("envoys", "list", "--label", "role=conv", url=url)
    assert done.returncode == 0, done
    assert table_ids(done.stdout) == ["conv-1", "conv-2", "conv-3"]
    hostile = vigocli("envoys", "list", "--label", "env=" + HOSTILE, "--json", url=url)
    assert [e["envoy_id"] for e in json.loads(hostile.stdout)["envoys"]] == ["hostile-1"]
    table = vigocli("envoys", "list", "--label", "env=" + HOSTILE, url=url)
    assert table_ids(table.stdout) == ["hostile-1"] and "\r" not in table.stdout
    none = vigocli("envoys", "list", "--label", "role=conv", "--status", "failed", url=url)
    assert none.stdout.strip() == "no envoys with status failed in role=conv"


def metric_samples(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = http_get(worker.url + "/metrics").body.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("vigo_group_")
    }


def group_envoys(key: str, value: str, status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("vigo_group_envoys", (("key", key), ("status", status), ("value", value)))


def test_relabelled_envoys_move_between_groups_and_metrics_follow(
    kafka_bootstrap: str, fleet: list[Worker]
) -> None:
    """A re-enrollment with new labels and the same status moves the envoy between groups
    (counts from state pairs, not from status changes); a value that empties disappears,
    from the API and from the metrics."""
    owner = next(w for w in fleet if http_get(w.url + "/readyz").json()["fleet_owner"])
    other = next(w for w in fleet if w is not owner)
    samples = metric_samples(owner)
    assert samples[group_envoys("env", HOSTILE, "no_data")] == 1
    ratio = ("vigo_group_convergence_ratio", (("key", "role"), ("value", "conv")))
    assert samples[ratio] == 1.0
    assert metric_samples(other) == {}  # only the fleet owner exports group gauges

    enroll(kafka_bootstrap, fleet, "conv-3", role="moved")
    enroll(kafka_bootstrap, fleet, "hostile-1", env="calm")
    doc = poll(
        lambda: compliance(other),
        lambda d: d["groups"]["role"]["conv"]["active"] == 2 and "calm" in d["groups"]["env"],
    )
    assert doc["groups"]["role"]["conv"]["active"] == 2
    assert sum(v["active"] for v in doc["groups"]["role"].values()) == 13
    assert HOSTILE not in doc["groups"]["env"]
    assert (doc["active"], doc["compliant"]) == (13, 4)  # the fleet did not move
    assert listing(other, label="role=moved") == ["conv-3"]
    samples = poll(
        lambda: metric_samples(owner),
        lambda s: group_envoys("env", "calm", "no_data") in s,
    )
    assert not any(HOSTILE in dict(labels).values() for _, labels in samples)

    enroll(kafka_bootstrap, fleet, "conv-3", role="conv")
    doc = poll(lambda: compliance(owner), lambda d: d["groups"]["role"]["conv"]["active"] == 3)
    assert doc["groups"]["role"]["conv"]["active"] == 3
