"""Rollouts by `config_version` (SPEC 11.2) end to end: a real worker on the real broker,
mailing a real aiosmtpd server. Six envoys (four `env=prod`, two `env=dev`) apply v1, then
three of them v2: the API, the `vigo.fleet.rollouts` records (against their JSON Schema),
the metrics, `vigocli rollouts` and its exit status, the stuck mails (once per version and
group, also across a restart), `/api/envoys?config_version=` and `vigocli envoys list
--version`. `rollouts.stuck_after` is 8 s, so stuck envoys show within the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from processor.cli.simulate import config_version, make_fleet
from tests.harness import Worker, consume, enrollment, metric_total, produce, run_event
from tests.smtpserver import SmtpServer
from tests.test_alerts_worker import alert_config
from tests.webharness import VIGOCLI, http_get, poll, prefix_of, running_workers
from topics.jsonschemas import validate
from topics.names import TopicNames

PROD = ["prod-0", "prod-1", "prod-2", "prod-3"]
DEV = ["dev-0", "dev-1"]
MOVED = ["prod-0", "prod-1", "dev-0"]
BEHIND = ["dev-1", "prod-2", "prod-3"]


def vigocli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VIGOCLI), "--url", url, *args], capture_output=True, text=True, timeout=60
    )


def rollouts(worker: Worker, label: str | None = None) -> Any:
    query = "" if label is None else f"?label={quote(label, safe='')}"
    reply = http_get(worker.url + "/api/rollouts" + query)
    return reply.json() if reply.status == 200 else {"status": reply.status}


def newest_is(version: str, envoys: int, stuck: int | None = None) -> Any:
    def done(doc: Any) -> bool:
        newest = doc.get("newest") or {}
        return (
            newest.get("version") == version
            and newest.get("envoys") == envoys
            and newest.get("converged") == envoys
            and (stuck is None or doc.get("stuck") == stuck)
        )

    return done


def marked(done: Any) -> Any:
    """`done`, and the 50% mark taken: the owner takes the marks at its ticks, so a document
    between a partial and the next tick has the new counts and not yet the mark."""
    return lambda doc: done(doc) and doc["newest"]["reached_50_at"] is not None


def listed_ids(worker: Worker, query: str) -> list[str]:
    reply = http_get(worker.url + "/api/envoys?" + query)
    assert reply.status == 200, reply.body
    return [e["envoy_id"] for e in reply.json()["envoys"]]


def test_a_rollout_through_api_topic_metrics_cli_and_mail(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)

    def runs(envoys: list[str], version: str, *results: str) -> None:
        produce(
            kafka_bootstrap,
            [(t.runs, e.encode(), run_event(e, *results, config_version=version)) for e in envoys],
        )

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            {"rollout.stuck": {"max_stuck": 0}},
            fleet={"group_by": ["env"]},
            rollouts={"stuck_after": "8s"},
        )
        worker = Worker(config, tmp_path).start()
        try:
            # A one-hour check-in interval: nobody goes offline during the test.
            produce(
                kafka_bootstrap,
                [
                    (t.enrollments, e.encode(), enrollment(e, interval_s=3600, env="prod"))
                    for e in PROD
                ]
                + [
                    (t.enrollments, e.encode(), enrollment(e, interval_s=3600, env="dev"))
                    for e in DEV
                ],
            )
            runs(PROD + DEV, "v1", "ok")
            doc = poll(lambda: rollouts(worker), marked(newest_is("v1", 6, 0)), timeout=60)
            assert newest_is("v1", 6, 0)(doc), doc
            assert doc["newest"]["reached_50_at"] is not None
            assert doc["newest"]["reached_90_at"] is not None
            assert doc["versions"] == [
                {"version": "v1", "envoys": 6, "first_seen": doc["newest"]["first_seen"]}
            ]

            # v2 reaches three envoys: the intentional change makes them converged.
            runs(MOVED, "v2", "changed")
            doc = poll(lambda: rollouts(worker), marked(newest_is("v2", 3, 0)), timeout=60)
            assert newest_is("v2", 3, 0)(doc), doc
            # 3 of 6 active envoys converged on v2: 50% reached, 90% not.
            assert doc["newest"]["reached_50_at"] is not None
            assert doc["newest"]["reached_90_at"] is None
            assert [(v["version"], v["envoys"]) for v in doc["versions"]] == [("v1", 3), ("v2", 3)]
            first_seen = doc["newest"]["first_seen"]
            assert first_seen > doc["versions"][0]["first_seen"]

            # The listing by version, with and without a label; the CLI's --version.
            assert listed_ids(worker, "config_version=v1") == BEHIND
            assert listed_ids(worker, "config_version=v1&label=env%3Dprod") == ["prod-2", "prod-3"]
            assert listed_ids(worker, "config_version=v2&status=drifted") == []
            assert listed_ids(worker, "config_version=v9") == []
            assert http_get(worker.url + "/api/envoys?config_version=").status == 400
            listing = vigocli(worker.url, "envoys", "list", "--version", "v2")
            assert listing.returncode == 0, listing.stderr
            assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == sorted(MOVED)

            # After stuck_after: the three still on v1 are stuck, fleet-wide and per group.
            doc = poll(lambda: rollouts(worker), newest_is("v2", 3, 3), timeout=60)
            assert doc["stuck"] == 3, doc
            assert rollouts(worker, "env=dev")["stuck"] == 1
            prod = rollouts(worker, "env=prod")
            assert (prod["newest"]["envoys"], prod["stuck"]) == (2, 2)
            assert prod["newest"]["first_seen"] == first_seen  # the fleet's time
            assert rollouts(worker, "env=nope") == {"status": 404}
            assert rollouts(worker, "role=web") == {"status": 400}
            assert rollouts(worker, "env") == {"status": 400}

            cli = vigocli(worker.url, "rollouts")
            assert cli.returncode == 1, cli.stderr
            assert "Newest version:  v2" in cli.stdout
            assert "On it:           3 of 6 active envoys (50.0%), 3 converged" in cli.stdout
            assert "Stuck:           3" in cli.stdout
            assert vigocli(worker.url, "rollouts", "--label", "env=dev").returncode == 1
            assert vigocli(worker.url, "rollouts", "--label", "role=web").returncode == 64
            assert vigocli(worker.url, "rollouts", "--label", "oops").returncode == 64

            records = consume(
                kafka_bootstrap,
                t.fleet_rollouts,
                until=lambda rs: any(r["label"] is None and r["stuck"] == 3 for r in rs),
                timeout=30,
            )
            fleet = [r for r in records if r["label"] is None and r["stuck"] == 3][-1]
            validate("vigo.rollout/1", fleet)
            assert (fleet["active"], fleet["newest"]["version"]) == (6, "v2")
            assert any(r["label"] == "env=prod" and r["stuck"] == 2 for r in records)
            for record in records:
                validate("vigo.rollout/1", record)

            assert metric_total(worker.url, "vigo_rollout_envoys", 'version="v2"') == 3
            text = http_get(worker.url + "/metrics").body.decode()
            assert "vigo_rollout_stuck_envoys 3.0" in text
            assert "vigo_rollout_newest_converged_ratio 0.5" in text

            # One mail per newest version and scope: the fleet, env=prod, env=dev.
            mails = smtp.wait_for(3)
            by_id = {m.message_id: m for m in mails}
            domain = "vigo" if topic_prefix == "vigo." else f"{topic_prefix.strip('.')}.vigo"
            assert set(by_id) == {
                f"<rollout.stuck/v2@{domain}>",
                f"<rollout.stuck/env=prod/v2@{domain}>",
                f"<rollout.stuck/env=dev/v2@{domain}>",
            }
            mail = by_id[f"<rollout.stuck/v2@{domain}>"]
            assert mail.subject == "[Vigo] 3 envoys stuck before config_version v2"
            body = mail.message.get_content()
            for envoy in BEHIND:
                assert f"  {envoy}  on v1" in body
            dev_body = by_id[f"<rollout.stuck/env=dev/v2@{domain}>"].message.get_content()
            assert "dev-1  on v1" in dev_body and "prod-2" not in dev_body

            # A restart keeps the first-seen time and sends no mail again.
            worker.stop()
            worker.start()
            doc = poll(lambda: rollouts(worker), newest_is("v2", 3, 3), timeout=60)
            assert doc["newest"]["first_seen"] == first_seen

            # The rest take v2: nobody stuck, 90% reached, the CLI exits 0.
            runs(BEHIND, "v2", "changed")
            doc = poll(lambda: rollouts(worker), newest_is("v2", 6, 0), timeout=60)
            assert newest_is("v2", 6, 0)(doc), doc
            assert doc["newest"]["reached_90_at"] is not None
            assert doc["versions"] == [{"version": "v2", "envoys": 6, "first_seen": first_seen}]
            assert vigocli(worker.url, "rollouts").returncode == 0
            assert len(smtp.messages) == 3
        finally:
            worker.stop()


def test_the_demo_fleet_rolls_out_a_new_version_and_some_envoys_stay_behind(
    kafka_bootstrap: str,
) -> None:
    """`scripts/up`'s simulated fleet (`vigo-simulate`) takes `demo-2` partway through, a
    quarter a round; every twelfth envoy never does and is stuck (`stuck_after` 1 s here,
    60 s in `scripts/up`)."""
    fleet = make_fleet(60, 42)
    rounds = 8
    # Envoys whose runs error never remember a version; silent ones stop after two rounds.
    reporting = [e for e in fleet if e.behaviour in ("healthy", "drifting")]
    on_new = [e for e in reporting if config_version(e, rounds - 1) == "demo-2"]
    behind = [e for e in reporting if config_version(e, rounds - 1) == "demo-1"]
    assert on_new and behind
    with running_workers(kafka_bootstrap, rollouts={"stuck_after": "1s"}) as (worker,):
        simulate = Path(sys.executable).parent / "vigo-simulate"
        done = subprocess.run(
            [str(simulate), "--bootstrap", kafka_bootstrap, "--prefix", prefix_of(worker),
             "--envoys", "60", "--interval", "0.5", "--rounds", str(rounds)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = poll(
            lambda: rollouts(worker),
            lambda d: (d.get("newest") or {}).get("envoys") == len(on_new) and d["stuck"] > 0,
        )
        assert doc["newest"]["version"] == "demo-2", doc
        versions = {v["version"]: v["envoys"] for v in doc["versions"]}
        assert versions["demo-2"] == len(on_new)
        assert versions["demo-1"] >= len(behind)  # the silent ones too, never rolled out
        assert doc["stuck"] >= len(behind)
