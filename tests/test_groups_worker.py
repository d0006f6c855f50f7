"""Groups by label (SPEC 10.2) end to end: a real worker on the real broker, mailing a real
aiosmtpd server. Check-in interval 2 s, so the threshold checkers run every 2 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alerts.mail import message_id, message_id_domain
from alerts.rules import threshold_alert_id
from tests.harness import Worker, consume, enrollment, produce, run_event
from tests.smtpserver import SmtpServer
from tests.test_alerts_worker import (
    Heartbeat,
    alert_config,
    alerts_total,
    assert_clean_headers,
    checks_seeing,
    consumed,
)
from topics.jsonschemas import validate
from topics.names import TopicNames
from topics.timestamps import iso_from_ms


def group_percent(key: str, value: str, percent: float | None) -> Any:
    """`until` for the convergence topic: the newest record shows that group's percent."""

    def done(records: list[Any]) -> bool:
        if not records:
            return False
        group = records[-1].get("groups", {}).get(key, {}).get(value)
        return group is not None and group["percent"] == percent

    return done


def test_each_group_threshold_fires_once_and_survives_a_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two groups with their own thresholds (prod 90 %, dev 40 %) and a fleet threshold
    that stays met: prod falling below sends exactly one mail naming the group; dev,
    which stays at or above its own, sends none; a restart while prod is below sends
    nothing new."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    prod = [f"prod-{i}" for i in range(4)]
    dev = [f"dev-{i}" for i in range(2)]
    events = {"convergence.threshold": {"threshold": 10, "groups": {"env=prod": 90, "env=dev": 40}}}

    def runs(envoys: list[str], result: str) -> None:
        produce(kafka_bootstrap, [(t.runs, e.encode(), run_event(e, result)) for e in envoys])

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            events,
            fleet={"group_by": ["env"]},
        )
        worker = Worker(config, tmp_path).start()
        heartbeat = Heartbeat(kafka_bootstrap, t.checkins, prod + dev)
        try:
            produce(
                kafka_bootstrap,
                [(t.enrollments, e.encode(), enrollment(e, env="prod")) for e in prod]
                + [(t.enrollments, e.encode(), enrollment(e, env="dev")) for e in dev],
            )
            heartbeat.start()
            runs(prod, "ok")
            runs(dev[:1], "ok")
            runs(dev[1:], "changed")  # dev at 50 %: at or above its 40 % all along
            records = consume(
                kafka_bootstrap,
                t.fleet_convergence,
                until=lambda rs: (
                    group_percent("env", "prod", 100.0)(rs)
                    and group_percent("env", "dev", 50.0)(rs)
                ),
                timeout=60,
            )
            validate("vigo.fleet-convergence/1", records[-1])
            assert set(records[-1]["groups"]) == {"env"}
            # A check sees both at or above: no mail for that (the next mail, for prod's
            # fall, must be the first).
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_seeing(lambda r: prod_at(100.0)(r) and dev_at(50.0)(r), 1),
                timeout=60,
            )
            assert smtp.messages == []

            runs(prod[:1], "changed")  # prod 75 % < 90 %: its first fall
            (mail,) = smtp.wait_for(1)
            assert mail.message_id == message_id(threshold_alert_id(1, ("env", "prod")), domain)
            assert mail.message_id == f"<convergence.threshold/env=prod/1@{domain}>"
            assert mail.subject == "[Vigo] Convergence of env=prod 75% is below the 90% threshold"
            assert "Group:        env=prod" in mail.message.get_content()
            assert_clean_headers(mail)

            runs(prod[1:2], "changed")  # lower still (50 %): the same fall
            consume(
                kafka_bootstrap,
                t.fleet_convergence,
                until=group_percent("env", "prod", 50.0),
                timeout=60,
            )
            # Two more checks: nothing queued for them.
            consumed(kafka_bootstrap, t.fleet_convergence, until=checks_seeing(prod_at(50.0), 2))
            assert alerts_total(worker, "convergence.threshold", "queued") == 1
            assert len(smtp.messages) == 1

            worker.stop()  # a restart while below fires nothing new
            restarted = _iso(time.time())
            worker.start()
            # Two checks of the restarted worker, still below.
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_seeing(prod_at(50.0), 2, since=restarted),
                timeout=60,
            )
            assert [m.message_id for m in smtp.messages] == [mail.message_id]
            # Not even queued again: the detector's state came back from its changelog
            # (a detector starting over would write the same id again, dropped by the sender).
            assert alerts_total(worker, "convergence.threshold", "queued") == 0
            alerts = consume(kafka_bootstrap, t.alerts, timeout=10)
            assert {a["alert_id"] for a in alerts} == {"convergence.threshold/env=prod/1"}
            assert alerts[0]["subject"] == "env=prod"
            assert alerts[0]["details"]["group"] == {"key": "env", "value": "prod"}
        finally:
            heartbeat.stop()
            worker.stop()


def group_at(key: str, value: str, percent: float) -> Callable[[Any], bool]:
    """For one convergence record: that group is at `percent`."""

    def at(record: Any) -> bool:
        group = record.get("groups", {}).get(key, {}).get(value)
        return group is not None and group["percent"] == percent

    return at


def prod_at(percent: float) -> Callable[[Any], bool]:
    return group_at("env", "prod", percent)


def dev_at(percent: float) -> Callable[[Any], bool]:
    return group_at("env", "dev", percent)


def queued(worker: Worker) -> float:
    """Alerts this worker process wrote to the outbox, of either event."""
    return sum(
        alerts_total(worker, event, "queued")
        for event in ("convergence.threshold", "convergence.recovered")
    )


def _iso(seconds: float) -> str:
    return iso_from_ms(int(seconds * 1000))


def test_recovery_mails_once_per_crossing_back_for_the_fleet_and_a_group(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """`convergence.recovered` (SPEC 10.4): the fleet (70 %) and env=prod (90 %) fall, a
    restart while below mails nothing, both recover: one recovery mail each, ending the
    alert of the same number; a restart after the recovery mails nothing again."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    prod = [f"prod-{i}" for i in range(4)]
    dev = [f"dev-{i}" for i in range(2)]
    events = {
        "convergence.threshold": {"threshold": 70, "groups": {"env=prod": 90}},
        "convergence.recovered": {},
    }

    def runs(envoys: list[str], result: str) -> None:
        produce(kafka_bootstrap, [(t.runs, e.encode(), run_event(e, result)) for e in envoys])

    def fleet_at(percent: float) -> Any:
        return lambda rs: bool(rs) and rs[-1]["percent"] == percent

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap, topic_prefix, smtp.port, events, fleet={"group_by": ["env"]}
        )
        worker = Worker(config, tmp_path).start()
        heartbeat = Heartbeat(kafka_bootstrap, t.checkins, prod + dev)
        try:
            produce(
                kafka_bootstrap,
                [(t.enrollments, e.encode(), enrollment(e, env="prod")) for e in prod]
                + [(t.enrollments, e.encode(), enrollment(e, env="dev")) for e in dev],
            )
            heartbeat.start()
            runs(prod + dev, "ok")
            consume(kafka_bootstrap, t.fleet_convergence, until=fleet_at(100.0), timeout=60)
            # A check sees everything at or above: nothing to recover from (the next two
            # mails must be the falls).
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_seeing(lambda r: r["percent"] == 100.0 and prod_at(100.0)(r), 1),
                timeout=60,
            )
            assert smtp.messages == []

            runs(prod[:1], "changed")  # prod 75 % < 90 %; the fleet 83 % >= 70 %
            runs(dev, "changed")  # the fleet 50 % < 70 %
            falls = smtp.wait_for(2)
            assert {m.message_id for m in falls} == {
                message_id(threshold_alert_id(1, ("env", "prod")), domain),
                message_id(threshold_alert_id(1), domain),
            }

            worker.stop()  # below, restarted: nothing new
            restarted = _iso(time.time())
            worker.start()
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_seeing(
                    lambda r: r["percent"] == 50.0 and prod_at(75.0)(r), 2, since=restarted
                ),
                timeout=60,
            )
            assert queued(worker) == 0
            assert len(smtp.messages) == 2

            runs(prod[:1] + dev, "ok")  # both back to 100 %
            mails = smtp.wait_for(4)
            recoveries = [m for m in mails if "recovered" in m.message_id]
            assert sorted(m.message_id for m in recoveries) == sorted(
                [
                    f"<convergence.recovered/env=prod/1@{domain}>",
                    f"<convergence.recovered/1@{domain}>",
                ]
            )
            by_id = {m.message_id: m for m in recoveries}
            group_mail = by_id[f"<convergence.recovered/env=prod/1@{domain}>"]
            assert group_mail.subject == (
                "[Vigo] Convergence of env=prod recovered: 100% is at or above the 90% threshold"
            )
            assert "convergence.threshold/env=prod/1" in group_mail.message.get_content()
            fleet_mail = by_id[f"<convergence.recovered/1@{domain}>"]
            assert fleet_mail.subject == (
                "[Vigo] Fleet convergence recovered: 100% is at or above the 70% threshold"
            )
            for mail in recoveries:
                assert_clean_headers(mail)

            # More checks at or above: no second recovery queued.

            def all_up(record: Any) -> bool:
                return bool(record["percent"] == 100.0 and prod_at(100.0)(record))

            consumed(kafka_bootstrap, t.fleet_convergence, until=checks_seeing(all_up, 2))
            assert alerts_total(worker, "convergence.recovered", "queued") == 2
            worker.stop()
            restarted = _iso(time.time())
            worker.start()
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_seeing(all_up, 2, since=restarted),
                timeout=60,
            )
            assert queued(worker) == 0
            assert len(smtp.messages) == 4
        finally:
            heartbeat.stop()
            worker.stop()
