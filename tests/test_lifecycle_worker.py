"""SPEC 10.3 on the real broker with a real worker, durations of seconds from the
configuration: an envoy silent past `lifecycle.deactivate_after` goes `inactive` (the
change on the topic, dated by its deadline; the fleet numbers count it as inactive, out
of active), a check-in brings it back with one change from `inactive`; silent again past
`purge_after`, it is purged: `to: purged` published, a tombstone for its key in the envoy
table's changelog, a 404 from the API (also after a restart, which restores the table
from that changelog), and a later check-in starts it afresh at version 1. A revoked
envoy is counted as revoked and, after purge_after, shrinks but is not forgotten."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    get_json,
    produce,
    read_raw,
    run_event,
    worker_config,
)
from tests.webharness import http_get, poll
from topics.names import TopicNames

ENVOY = "lc-1"
REVOKED = "rev-1"
DEACTIVATE_S = 4
PURGE_S = 5


def changes_of(records: list[dict[str, Any]], envoy: str) -> list[tuple[Any, ...]]:
    return [
        (r["from"], r["to"], r["version"], r["cause"]) for r in records if r["envoy_id"] == envoy
    ]


def ms(at: str) -> int:
    return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)


def fleet_envoys(worker: Worker) -> dict[str, float]:
    text = http_get(worker.url + "/metrics").body.decode()
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vigo_fleet_envoys"
    }


def test_inactive_reactivated_purged_and_started_afresh(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    config = worker_config(
        kafka_bootstrap,
        topic_prefix,
        interval="1s",
        lifecycle={"deactivate_after": f"{DEACTIVATE_S}s", "purge_after": f"{PURGE_S}s"},
    )
    worker = Worker(config, tmp_path).start()
    try:

        def wait_for(predicate: Any, timeout: float = 40) -> list[dict[str, Any]]:
            return consume(kafka_bootstrap, t.status_changes, until=predicate, timeout=timeout)

        produce(
            kafka_bootstrap,
            [
                (t.runs, ENVOY.encode(), run_event(ENVOY, "ok")),
                (t.enrollments, REVOKED.encode(), enrollment(REVOKED, interval_s=3600, env="prod")),
            ],
        )
        wait_for(lambda rs: len(changes_of(rs, REVOKED)) == 1)
        produce(
            kafka_bootstrap,
            [(t.enrollments, REVOKED.encode(), enrollment(REVOKED, action="revoked"))],
        )

        # Silent: offline after two intervals, inactive after deactivate_after.
        out = wait_for(lambda rs: len(changes_of(rs, ENVOY)) >= 3)
        assert changes_of(out, ENVOY) == [
            (None, "converged", 1, "run"),
            ("converged", "offline", 2, "sweep"),
            ("offline", "inactive", 3, "sweep"),
        ]
        mine = [r for r in out if r["envoy_id"] == ENVOY]
        # Dated by the deadline: last seen (the run's record time) + deactivate_after.
        assert ms(mine[2]["at"]) - ms(mine[0]["at"]) == DEACTIVATE_S * 1000

        def counted(rs: list[dict[str, Any]]) -> bool:
            return bool(rs) and (rs[-1]["inactive"], rs[-1]["revoked"]) == (1, 1)

        fleet = consume(kafka_bootstrap, t.fleet_convergence, until=counted, timeout=30)
        assert (fleet[-1]["active"], fleet[-1]["inactive"], fleet[-1]["revoked"]) == (0, 1, 1)
        assert fleet[-1]["percent"] is None and sum(fleet[-1]["by_status"].values()) == 0
        api = poll(lambda: get_json(worker.url + "/api/compliance"), lambda d: d["inactive"] == 1)
        assert (api["active"], api["inactive"], api["revoked"]) == (0, 1, 1)
        gauges = poll(lambda: fleet_envoys(worker), lambda g: g.get("inactive") == 1)
        assert (gauges["inactive"], gauges["revoked"], gauges["offline"]) == (1, 1, 0)

        # A check-in reactivates it: one change from inactive.
        produce(kafka_bootstrap, [(t.checkins, ENVOY.encode(), checkin(ENVOY))])
        out = wait_for(lambda rs: len(changes_of(rs, ENVOY)) >= 4)
        assert changes_of(out, ENVOY)[3] == ("inactive", "converged", 4, "checkin")
        fleet = consume(
            kafka_bootstrap,
            t.fleet_convergence,
            until=lambda rs: bool(rs) and rs[-1]["active"] == 1,
            timeout=30,
        )
        assert (fleet[-1]["active"], fleet[-1]["inactive"], fleet[-1]["compliant"]) == (1, 0, 1)

        # Silent again: offline, inactive, and purge_after later purged.
        out = wait_for(lambda rs: (changes_of(rs, ENVOY) or [()])[-1][1:2] == ("purged",))
        assert changes_of(out, ENVOY)[4:] == [
            ("converged", "offline", 5, "sweep"),
            ("offline", "inactive", 6, "sweep"),
            ("inactive", "purged", 7, "sweep"),
        ]
        mine = [r for r in out if r["envoy_id"] == ENVOY]
        assert ms(mine[6]["at"]) - ms(mine[5]["at"]) == PURGE_S * 1000

        # Its key's last record in the envoy table's changelog is a tombstone.
        changelog = f"{topic_prefix}compliance-envoys-changelog"

        def last_of_key() -> Any:
            records = [r for r in read_raw(kafka_bootstrap, changelog) if r.key == ENVOY.encode()]
            return records[-1] if records else None

        last = poll(last_of_key, lambda r: r is not None and r.value is None, timeout=20)
        assert last is not None and last.value is None
        status = poll(
            lambda: http_get(f"{worker.url}/api/envoys/{ENVOY}").status, lambda s: s == 404
        )
        assert status == 404

        # The revoked envoy shrank after purge_after (labels gone) but is still known.
        detail = poll(
            lambda: get_json(f"{worker.url}/api/envoys/{REVOKED}"), lambda d: d["labels"] == {}
        )
        assert (detail["status"], detail["labels"]) == ("revoked", {})
        fleet = consume(
            kafka_bootstrap,
            t.fleet_convergence,
            until=lambda rs: bool(rs) and rs[-1]["inactive"] == 0 and rs[-1]["active"] == 0,
            timeout=30,
        )
        assert (fleet[-1]["active"], fleet[-1]["inactive"], fleet[-1]["revoked"]) == (0, 0, 1)

        # A restart restores the table from the changelog: the tombstone keeps it gone.
        worker.stop()
        worker = Worker(config, tmp_path, name="w2").start()
        assert http_get(f"{worker.url}/api/envoys/{ENVOY}").status == 404
        assert get_json(f"{worker.url}/api/envoys/{REVOKED}")["status"] == "revoked"

        # A later event starts a new envoy: from null, version 1; the revoked one's
        # events are still refused.
        produce(
            kafka_bootstrap,
            [
                (t.checkins, ENVOY.encode(), checkin(ENVOY)),
                (t.checkins, REVOKED.encode(), checkin(REVOKED)),
            ],
        )
        out = wait_for(lambda rs: len(changes_of(rs, ENVOY)) >= 8)
        assert changes_of(out, ENVOY)[7:] == [(None, "no_data", 1, "checkin")]
        dead = consume(kafka_bootstrap, t.deadletter, until=lambda rs: bool(rs), timeout=20)
        assert [(d["reason"], d["key"]) for d in dead] == [("revoked", REVOKED)]
        assert get_json(f"{worker.url}/api/envoys/{ENVOY}")["status"] == "no_data"
        assert "Traceback" not in worker.log_text()
    finally:
        worker.stop()
