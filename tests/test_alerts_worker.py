"""Alerts end to end: a real worker subprocess on the real broker, mailing a real aiosmtpd
server on loopback. Check-in interval 2 s (the threshold checker runs every 2 s) and
`stale_after` 3 s keep the scenarios short."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import takewhile
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from alerts.mail import message_id, message_id_domain
from alerts.rules import digest_alert_id, stale_alert_id, threshold_alert_id
from alerts.window import Progress, Window, closed, mails, member_of, step
from processor.records import OUTBOX_TICK_KEY
from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    free_port,
    get_json,
    produce,
    read_raw,
    run_event,
    worker_config,
)
from tests.smtpserver import Received, SmtpServer, login_authenticator, make_certs
from topics.codec import decode_alert, encode_alert
from topics.names import TopicNames
from topics.timestamps import iso_from_ms

FROM = "vigo@example.org"
TO = ["ops@example.org", "oncall@example.org"]


def alert_config(
    bootstrap: str, prefix: str, smtp_port: int, events: dict[str, Any], **options: Any
) -> dict[str, Any]:
    smtp = {
        "host": "127.0.0.1",
        "port": smtp_port,
        "from": FROM,
        "to": TO,
        "timeout_s": 5,
        "events": events,
        **options.pop("smtp", {}),
    }
    return worker_config(bootstrap, prefix, smtp=smtp, **options)


def produce_at(
    bootstrap: str, records: Iterable[tuple[str, bytes, bytes]], timestamp_ms: int
) -> None:
    """Records with one explicit Kafka timestamp (liveness runs on record timestamps):
    envoys that fall silent together go stale in the same sweep."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, value in records:
                await producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def metrics(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def alerts_total(worker: Worker, event: str, outcome: str) -> float:
    key = ("vigo_alerts_total", (("event", event), ("outcome", outcome)))
    return metrics(worker).get(key, 0.0)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


#: `checkin.interval` of these tests: also the threshold checker's period.
INTERVAL_MS = 2000


def _ms(at: str) -> int:
    return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)


def checks_at(
    percent: float, active: int, count: int, since: str = ""
) -> Callable[[list[Any]], bool]:
    """`until` for `vigo.fleet.convergence`: at least `count` threshold checks have seen
    the fleet at `percent` of `active` envoys (see `checks_seeing`)."""
    return checks_seeing(lambda r: (r["percent"], r["active"]) == (percent, active), count, since)


def checks_seeing(
    numbers: Callable[[Any], bool], count: int, since: str = ""
) -> Callable[[list[Any]], bool]:
    """`until` for `vigo.fleet.convergence`: at least `count` threshold checks (the fleet's
    and the groups', which run together) have seen numbers for which `numbers(record)`
    holds, judged by the records' own times (not the test's clock).

    The aggregator publishes and checks on the same ticks, publishes on every change and
    checks once an interval, so for a record at time c some check ran at a tick in
    (c - interval, c], with the numbers of the records up to c. Matching records (all of
    them since the numbers got there, and after `since`) spanning `count` disjoint such
    windows prove as many checks of those numbers."""

    def done(records: list[Any]) -> bool:
        recent = [r for r in records if r["at"] >= since]
        at_percent = list(takewhile(numbers, recent[::-1]))
        if not at_percent:
            return False
        previous, seen = _ms(at_percent[-1]["at"]), 0
        for record in reversed(at_percent):
            if _ms(record["at"]) - previous >= INTERVAL_MS:
                previous, seen = _ms(record["at"]), seen + 1
        return seen >= count

    return done


def consumed(
    bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout: float = 60
) -> list[Any]:
    """`consume` until `until(records)` holds, and fail if it never does."""
    records = consume(bootstrap, topic, until=until, timeout=timeout)
    assert until(records), f"timed out waiting on {topic}: {records[-5:]}"
    return records


def marker_alert(topics: TopicNames, n: int) -> tuple[str, bytes, bytes]:
    """An alert written straight to the outbox, after the ones under test: the sender
    mails the outbox in order, one at a time, so once this one is mailed every earlier
    record has been dealt with (a resend or a retry would have come before it)."""
    alert_id = marker_alert_id(n)
    at = iso_from_ms(int(time.time() * 1000))
    value = encode_alert(alert_id, "convergence.threshold", at, "fleet", {"percent": 1.0})
    return (topics.alerts, alert_id.encode(), value)


def wait_for_mail(smtp: SmtpServer, wanted: str, timeout: float = 60) -> list[Received]:
    """Every mail received, once the one with Message-ID `wanted` is among them."""
    wait_until(lambda: wanted in ids(smtp.messages), timeout, f"the mail {wanted}")
    return smtp.messages


def went_offline(envoys: Iterable[str]) -> Callable[[list[Any]], bool]:
    """`until` for `vigo.envoy.status_changes`: every one of `envoys` last went offline,
    that is a sweep after the one that found it stale has handled it."""
    wanted = set(envoys)

    def done(records: list[Any]) -> bool:
        last = {r["envoy_id"]: r["to"] for r in records if r["envoy_id"] in wanted}
        return len(last) == len(wanted) and set(last.values()) == {"offline"}

    return done


def outbox_mails(
    bootstrap: str, topic: str, digest_over: int, width_ms: int
) -> dict[str, dict[str, Any]]:
    """The mails the outbox as it stands gives once every window has closed, by the
    window rules over its record timestamps: alert id -> details."""
    progress, windows = Progress(), dict[int, Window]()
    out: dict[str, dict[str, Any]] = {}
    records = read_raw(bootstrap, topic)
    for offset, record in enumerate(records):
        alert = None if record.key == OUTBOX_TICK_KEY else decode_alert(record.value)
        member = member_of(alert) if alert is not None else None
        if member is not None and member.alert_id in out:
            member = None
        done = step(progress, windows, offset, record.timestamp, member, width_ms)
        if done.added is not None:
            windows[done.added.start_ms] = done.added
            progress = done.progress
        for window in done.closing:
            out.update((a.alert_id, dict(a.details)) for a in mails(window, digest_over))
            del windows[window.start_ms]
            progress = closed(progress, window)
        if alert is not None and member is None and alert.event != "envoy.stale":
            out[alert.alert_id] = dict(alert.details)
    for window in sorted(windows.values(), key=lambda w: w.start_ms):
        out.update((a.alert_id, dict(a.details)) for a in mails(window, digest_over))
    return out


def ids(messages: list[Received]) -> list[str]:
    return [m.message_id for m in messages]


def assert_clean_headers(mail: Received) -> None:
    """Exactly the headers the renderer writes; the envelope is the configured one."""
    assert mail.mail_from == FROM
    assert mail.rcpt_tos == tuple(TO)
    assert mail.message["Bcc"] is None and mail.message["X-Evil"] is None
    assert {k.lower() for k in mail.message} == {
        "from", "to", "subject", "date", "message-id", "auto-submitted", "x-vigo-event",
        "content-type", "content-transfer-encoding", "mime-version",
    }  # fmt: skip


class Heartbeat(threading.Thread):
    """Envoys checking in every second, so that nobody goes offline (2 x 2 s) while the
    test moves the fleet with runs."""

    def __init__(self, bootstrap: str, topic: str, envoys: list[str]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.envoys = bootstrap, topic, envoys
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            produce(self.bootstrap, [(self.topic, e.encode(), checkin(e)) for e in self.envoys])
            self.halt.wait(1.0)

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(30)


def test_threshold_mails_once_per_fall_below(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    fleet = [f"web-{i:02d}" for i in range(10)]
    drifting = fleet[:5]

    def percent_is(value: float) -> Any:
        return lambda rs: bool(rs) and rs[-1]["active"] == 10 and rs[-1]["percent"] == value

    def runs(envoys: list[str], result: str) -> None:
        produce(kafka_bootstrap, [(t.runs, e.encode(), run_event(e, result)) for e in envoys])

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            {"convergence.threshold": {"threshold": 60}},
        )
        worker = Worker(config, tmp_path).start()  # creates the topics
        heartbeat = Heartbeat(kafka_bootstrap, t.checkins, fleet)
        try:
            heartbeat.start()
            runs(fleet, "ok")
            consume(kafka_bootstrap, t.fleet_convergence, until=percent_is(100), timeout=60)
            runs(drifting, "changed")  # 50 % < 60 %: the first fall
            (first,) = smtp.wait_for(1)
            assert first.message_id == message_id(threshold_alert_id(1), domain)
            assert first.subject == "[Vigo] Fleet convergence 50% is below the 60% threshold"
            assert re.search(r"drifted\s+5", first.message.get_content())

            runs(fleet[5:6], "changed")  # lower still, 40 %: still the same fall
            consumed(kafka_bootstrap, t.fleet_convergence, until=checks_at(40, 10, 2), timeout=60)

            runs([*drifting, fleet[5]], "ok")  # recovered: no mail for that
            # A check must see it at or above, or the next fall is not a new one.
            consumed(kafka_bootstrap, t.fleet_convergence, until=checks_at(100, 10, 1), timeout=60)
            runs(drifting, "changed")  # the second fall
            # The outbox is mailed in order: a mail for the checks at 40 % or at 100 %
            # would have come before the second fall's, which is the second mail.
            messages = smtp.wait_for(2)
            assert ids(messages) == [message_id(threshold_alert_id(n), domain) for n in (1, 2)]
            assert messages[1].subject == first.subject  # 50 % again, not 40 %

            worker.stop()  # a restart while below fires nothing new
            restarted = _iso(time.time() * 1000)
            worker.start()
            after = consume(
                kafka_bootstrap,
                t.fleet_convergence,
                until=lambda rs: any(r["at"] >= restarted and r["percent"] == 50 for r in rs),
                timeout=60,
            )
            assert any(r["at"] >= restarted and r["percent"] == 50 for r in after), "not live"
            # An at-least-once producer may write an alert twice: the copy of one sent
            # before the restart is recognised (the sent ids are a changelog-backed table).
            first_record = consume(kafka_bootstrap, t.alerts, timeout=10)[0]
            assert first_record["alert_id"] == threshold_alert_id(1)
            produce(
                kafka_bootstrap,
                [(t.alerts, first_record["alert_id"].encode(), orjson.dumps(first_record))],
            )
            wait_until(
                lambda: alerts_total(worker, "convergence.threshold", "duplicate") == 1,
                30,
                "the copy to be skipped",
            )
            # Checks of the restarted worker while below: they queue nothing (the counter
            # moves in the check itself, before the tick's record is published).
            consumed(
                kafka_bootstrap,
                t.fleet_convergence,
                until=checks_at(50, 10, 2, since=restarted),
                timeout=60,
            )
            assert alerts_total(worker, "convergence.threshold", "queued") == 0
            assert len(smtp.messages) == 2
        finally:
            heartbeat.stop()
            worker.stop()


def test_a_config_rollout_mails_no_threshold_alert(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """SPEC 10.1: every envoy reports changes once under a new `config_version`; the fleet
    stays converged and the checker, which would mail for as much corrective drift, does
    not."""
    t = TopicNames(topic_prefix)
    fleet = [f"roll-{i}" for i in range(4)]

    def percent_is(value: float) -> Any:
        return lambda rs: bool(rs) and rs[-1]["active"] == 4 and rs[-1]["percent"] == value

    def runs(envoys: list[str], result: str, version: str) -> None:
        produce(
            kafka_bootstrap,
            [(t.runs, e.encode(), run_event(e, result, config_version=version)) for e in envoys],
        )

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap, topic_prefix, smtp.port, {"convergence.threshold": {"threshold": 60}}
        )
        worker = Worker(config, tmp_path).start()  # creates the topics
        try:
            produce(
                kafka_bootstrap,
                [(t.enrollments, e.encode(), enrollment(e, interval_s=3600)) for e in fleet],
            )
            runs(fleet, "ok", "v1")
            consume(kafka_bootstrap, t.fleet_convergence, until=percent_is(100), timeout=60)
            runs(fleet, "changed", "v2")  # the rollout

            def runs_total(outcome: str) -> float:
                return metrics(worker).get(("vigo_runs_total", (("outcome", outcome),)), 0.0)

            applied = ("clean", "changed", "intentional")
            wait_until(lambda: sum(map(runs_total, applied)) == 8, 30, "the rollout")
            assert runs_total("intentional") == 4
            # The same changes again under v2 are drift: the checker does mail for them.
            # That mail is the marker: one for the rollout would have come before it, and
            # the fleet numbers published before the drift must all be 100 %.
            drift_at = _iso(time.time() * 1000)
            runs(fleet[:2], "changed", "v2")
            (mail,) = smtp.wait_for(1)
            domain = message_id_domain(topic_prefix)
            assert mail.message_id == message_id(threshold_alert_id(1), domain)
            assert mail.subject == "[Vigo] Fleet convergence 50% is below the 60% threshold"
            published = consume(kafka_bootstrap, t.fleet_convergence)
            before = [r["percent"] for r in published if r["at"] < drift_at]
            assert 100 in before and set(before[before.index(100) :]) == {100}, before
            assert alerts_total(worker, "convergence.threshold", "queued") == 1
        finally:
            worker.stop()


def test_stale_envoys_mail_once_per_episode_and_storms_as_a_digest(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Also the header-injection attempt that can reach a real worker: the JSON Schema
    forbids C0 controls (CR, LF) in envoy_id, so the id carries NEL and U+2028 instead (the
    schema lets them through, and `str.splitlines` breaks on them), and a label carries
    CR LF (labels are free text)."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    odd = "odd\u0085Bcc: evil@x\u2028X-Evil: 1"
    storm = [f"db-{i}" for i in range(8)]

    def silent(envoys: list[str], labels: dict[str, str] | None = None) -> None:
        now_ms = int(time.time() * 1000)
        records = [
            (t.enrollments, e.encode(), enrollment(e, "enrolled", None, **(labels or {})))
            for e in envoys
        ]
        records += [(t.checkins, e.encode(), checkin(e)) for e in envoys]
        produce_at(kafka_bootstrap, records, now_ms)

    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            # Alerts of one window are mailed together when the window closes.
            {"envoy.stale": {"digest_over": 3, "digest_window": "3s"}},
            partitions=1,
            checkin={"interval": "2s", "stale_after": "3s"},
        )
        worker = Worker(config, tmp_path).start()
        try:
            silent(["lonely", odd], {"team": "ops\r\nBcc: evil@x"})
            messages = smtp.wait_for(2)
            assert sorted(ids(messages)) == sorted(
                message_id(stale_alert_id(e, 1), domain) for e in ("lonely", odd)
            )
            for mail in messages:
                assert_clean_headers(mail)
            by_id = {m.message_id: m for m in messages}
            lonely = by_id[message_id(stale_alert_id("lonely", 1), domain)]
            # Line breaks in a label or an id are shown escaped (SPEC 11.4), never a header.
            assert lonely.subject == r"[Vigo] Envoy lonely is stale (team=ops\x0d\x0aBcc: evil@x)"
            odd_mail = by_id[message_id(stale_alert_id(odd, 1), domain)]
            assert odd_mail.subject.startswith(
                r"[Vigo] Envoy odd\x85Bcc: evil@x\u2028X-Evil: 1 is stale"
            )

            # Still stale, and swept again (they go offline): no new mail for that; the
            # next mail, for the next episode, is the marker that none came in between.
            consumed(kafka_bootstrap, t.status_changes, until=went_offline(["lonely", odd]))
            silent(["lonely"])  # a check-in ends the episode; silence starts the next one
            messages = smtp.wait_for(3)
            assert ids(messages)[2:] == [message_id(stale_alert_id("lonely", 2), domain)]

            silent(storm)  # more than digest_over in one window: one digest
            messages = smtp.wait_for(4)
            digest = messages[3]
            expected = outbox_mails(kafka_bootstrap, t.alerts, 3, 3000)
            (digest_id,) = [i for i in expected if i.startswith("envoy.stale.digest/")]
            assert digest.message_id == message_id(digest_id, domain)
            assert expected[digest_id]["count"] == 8
            assert digest.subject == "[Vigo] 8 envoys went stale"
            assert all(e in digest.message.get_content() for e in storm)
            # Every envoy swept again since it went stale (offline): the outbox holds no
            # alert beyond these four, and the marker, mailed after anything before it,
            # shows that nothing else was mailed.
            consumed(kafka_bootstrap, t.status_changes, until=went_offline(["lonely", *storm]))
            expected = outbox_mails(kafka_bootstrap, t.alerts, 3, 3000)
            assert len(expected) == 4
            produce(kafka_bootstrap, [marker_alert(t, 1)])
            mailed = wait_for_mail(smtp, message_id(marker_alert_id(1), domain))
            assert sorted(ids(mailed)) == sorted(
                message_id(i, domain) for i in [*expected, marker_alert_id(1)]
            )
            assert alerts_total(worker, "envoy.stale", "sent") == 4
        finally:
            worker.stop()


def test_smtp_down_then_up_loses_nothing_starttls_with_login(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The server is down while the alerts are written, while the worker shuts down (it
    must not hang on the mail it is retrying: that record goes back to the outbox) and
    while it starts again; then it comes up and every alert arrives, once.

    The worker talks STARTTLS with a login (password from a file) to a server whose
    certificate comes from a test CA (`smtp.ca_file`)."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    certs = make_certs(tmp_path / "certs")
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret\n")
    port = free_port()
    config = alert_config(
        kafka_bootstrap,
        topic_prefix,
        port,
        # The three envoys only check in: no_data, 0 % converged, one threshold alert.
        {
            "envoy.stale": {"digest_over": 10, "digest_window": "5s"},
            "convergence.threshold": {"threshold": 60},
        },
        checkin={"interval": "2s", "stale_after": "3s"},
        smtp={
            "starttls": True,
            "username": "vigo",
            "password_file": str(password_file),
            "ca_file": str(certs.ca),
        },
    )
    envoys = ["edge-1", "edge-2", "edge-3"]
    expected = sorted(
        [
            message_id(threshold_alert_id(1), domain),
            *(message_id(stale_alert_id(e, 1), domain) for e in envoys),
        ]
    )
    server = SmtpServer(
        port,
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=login_authenticator("vigo", "s3cret"),
        auth_require_tls=True,
        auth_required=True,
    )

    def retried() -> float:
        return sum(
            alerts_total(worker, event, "retried")
            for event in ("envoy.stale", "convergence.threshold")
        )

    def pending() -> float | None:
        return metrics(worker).get(("vigo_alert_outbox_pending", ()))

    worker = Worker(config, tmp_path).start()
    try:
        now_ms = int(time.time() * 1000)
        produce_at(kafka_bootstrap, [(t.checkins, e.encode(), checkin(e)) for e in envoys], now_ms)
        # Pending: the records behind the one in progress and the stale alerts held in
        # open windows (a tick record may add one).
        wait_until(lambda: (pending() or 0) >= 4, 30, "four alerts pending")
        wait_until(lambda: retried() >= 3, 30, "failed attempts while the server is down")

        worker.stop()
        assert worker.proc is not None and worker.proc.returncode != -signal.SIGKILL
        assert "requeued" in worker.log_text()  # the mail it was retrying went back
        worker.start()
        wait_until(lambda: (pending() or 0) >= 4, 30, "the same four alerts pending")
        wait_until(lambda: retried() >= 2, 30, "failed attempts after the restart")

        server.start()
        messages = server.wait_for(4, timeout=90)
        assert sorted(ids(messages)) == expected
        assert all(m.tls and m.login == "vigo" for m in messages)
        wait_until(lambda: pending() == 0, 30, "the outbox to drain")
        sent = sum(
            alerts_total(worker, e, "sent") for e in ("envoy.stale", "convergence.threshold")
        )
        assert sent == 4
        # Nothing is mailed twice: a resend would come before the marker.
        produce(kafka_bootstrap, [marker_alert(t, 1)])
        mailed = wait_for_mail(server, message_id(marker_alert_id(1), domain))
    finally:
        worker.stop()
        server.stop()
    assert sorted(ids(mailed)) == sorted([*expected, message_id(marker_alert_id(1), domain)])


def test_sigkill_while_a_mail_is_in_flight_resends_it_with_the_same_message_id(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    envoys = ["app-1", "app-2", "app-3"]
    expected = {message_id(stale_alert_id(e, 1), domain) for e in envoys}
    with SmtpServer() as smtp:
        smtp.recorder.hold_s = 30  # the first mail arrives, its "250 OK" does not
        smtp.recorder.hold_count = 1
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            {"envoy.stale": {"digest_over": 10, "digest_window": "2s"}},
            checkin={"interval": "2s", "stale_after": "3s"},
            processor={"session_timeout_s": 6},
            smtp={"timeout_s": 60},
        )
        worker = Worker(config, tmp_path).start()
        try:
            produce_at(
                kafka_bootstrap,
                [(t.checkins, e.encode(), checkin(e)) for e in envoys],
                int(time.time() * 1000),
            )
            assert smtp.recorder.holding.wait(60), "no mail arrived"
            worker.kill()
            (in_flight,) = smtp.messages
            worker.start()
            smtp.wait_for(4, timeout=90)
            # Anything mailed again would come before the marker.
            marker = message_id(marker_alert_id(1), domain)
            produce(kafka_bootstrap, [marker_alert(t, 1)])
            messages = [m for m in wait_for_mail(smtp, marker) if m.message_id != marker]
        finally:
            worker.stop()
    counts = Counter(ids(messages))
    assert set(counts) == expected  # nothing lost
    assert counts[in_flight.message_id] == 2  # the unconfirmed one is resent ...
    assert sum(counts.values()) == 4  # ... and nothing else
    resent = [m for m in messages if m.message_id == in_flight.message_id]
    assert resent[0].message.as_bytes() == resent[1].message.as_bytes()  # the very same mail


def marker_alert_id(n: int) -> str:
    return f"convergence.threshold/{990 + n}"


def _iso(epoch_ms: float) -> str:
    return iso_from_ms(int(epoch_ms))


def test_a_rejected_mail_is_parked_and_later_alerts_go_on_api_alerts_from_any_worker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A 554 at the end of DATA, three times: the alert is parked (metric `rejected`,
    /api/alerts says so with 3 attempts) and the next alert is delivered, not held.
    /api/alerts asked of either of two workers gives the outbox owner's answer."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    refused, later = "convergence.threshold/901", "convergence.threshold/902"

    def alert(alert_id: str) -> tuple[str, bytes, bytes]:
        at = iso_from_ms(int(time.time() * 1000))
        value = encode_alert(alert_id, "convergence.threshold", at, "fleet", {"percent": 1.0})
        return (t.alerts, alert_id.encode(), value)

    with SmtpServer() as smtp:
        smtp.recorder.reject_ids = {message_id(refused, domain)}
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            {"convergence.threshold": {"threshold": 60}},
            processor={"session_timeout_s": 6},
        )
        workers = [Worker(config, tmp_path, name=f"w{i}") for i in (1, 2)]
        try:
            for worker in workers:
                worker.start()
            produce(kafka_bootstrap, [alert(refused), alert(later)])
            (delivered,) = smtp.wait_for(1, timeout=60)
            assert delivered.message_id == message_id(later, domain)
            assert smtp.recorder.rejected == [message_id(refused, domain)] * 3

            def rejected_total() -> float:
                return sum(alerts_total(w, "convergence.threshold", "rejected") for w in workers)

            wait_until(lambda: rejected_total() == 1, 30, "the rejected metric")
            owner = next(
                w for w in workers if alerts_total(w, "convergence.threshold", "rejected") == 1
            )
            assert "parked" in owner.log_text() and refused in owner.log_text()
            answers = [get_json(w.url + "/api/alerts")["alerts"] for w in workers]
            assert answers[0] == answers[1]
            by_id = {a["id"]: a for a in answers[0]}
            assert [a["id"] for a in answers[0]] == [later, refused]  # newest first
            assert by_id[refused]["outcome"] == "rejected"
            assert by_id[refused]["attempts"] == 3
            assert by_id[refused]["sent_at"] is None
            assert by_id[refused]["event"] == "convergence.threshold"
            assert by_id[later]["outcome"] == "sent" and by_id[later]["attempts"] == 1
            assert by_id[later]["sent_at"] is not None
            # Parked: not tried again before the marker, mailed after anything before it.
            produce(kafka_bootstrap, [marker_alert(t, 1)])
            mailed = wait_for_mail(smtp, message_id(marker_alert_id(1), domain))
            assert ids(mailed) == [message_id(i, domain) for i in (later, marker_alert_id(1))]
            assert len(smtp.recorder.rejected) == 3
        finally:
            for worker in workers:
                worker.stop()


def test_two_hundred_envoys_going_stale_over_twenty_seconds_are_one_digest(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Envoys on four partitions fall silent in five waves 4 s apart; their stale alerts,
    written by different sweeps over about 20 s, fall in one 30 s window (the waves start
    just before a window boundary) and go out as one digest of 200."""
    t = TopicNames(topic_prefix)
    domain = message_id_domain(topic_prefix)
    width_s = 30
    fleet = [f"edge-{i:03d}" for i in range(200)]
    with SmtpServer() as smtp:
        config = alert_config(
            kafka_bootstrap,
            topic_prefix,
            smtp.port,
            {"envoy.stale": {"digest_window": f"{width_s}s"}},
            partitions=4,
            checkin={"interval": "2s", "stale_after": "3s"},
        )
        worker = Worker(config, tmp_path).start()
        try:
            # The first stale alerts come about 3-5 s after the first wave, the last about
            # 16 + 5 s after it: start the waves 1 s before a boundary.
            # Part of the scenario: the waves start at a chosen point of the wall-clock
            # windows, so the test waits for it.
            time.sleep((width_s - 1 - time.time() % width_s) % width_s)
            for wave in range(5):
                envoys = fleet[wave * 40 : (wave + 1) * 40]
                records = [(t.enrollments, e.encode(), enrollment(e)) for e in envoys]
                records += [(t.checkins, e.encode(), checkin(e)) for e in envoys]
                produce_at(kafka_bootstrap, records, int(time.time() * 1000))
                if wave < 4:
                    time.sleep(4)  # part of the scenario: the waves are 4 s apart
            (digest,) = smtp.wait_for(1, timeout=90)
            # Every envoy swept again since it went stale (offline): the outbox as read
            # now holds every stale alert there will be.
            consumed(kafka_bootstrap, t.status_changes, until=went_offline(fleet), timeout=60)
            expected = outbox_mails(kafka_bootstrap, t.alerts, 10, width_s * 1000)
            (digest_id,) = expected
            assert digest.message_id == message_id(digest_id, domain)
            start_ms = int(digest_id.rsplit("/", 1)[1])
            assert digest_id == digest_alert_id(start_ms) and start_ms % (width_s * 1000) == 0
            assert expected[digest_id]["count"] == 200
            assert digest.subject == "[Vigo] 200 envoys went stale"
            text = digest.message.get_content()
            assert all(e in text for e in fleet)
            stale = [r for r in read_raw(kafka_bootstrap, t.alerts) if r.key != OUTBOX_TICK_KEY]
            assert len(stale) == 200
            assert len({r.partition for r in stale}) == 1  # one outbox partition ...
            assert len({decode_alert(r.value).details["partition"] for r in stale}) == 4
            assert len(smtp.messages) == 1
            assert alerts_total(worker, "envoy.stale", "sent") == 1
            (entry,) = get_json(worker.url + "/api/alerts")["alerts"]
            assert (entry["id"], entry["outcome"]) == (digest_id, "sent")
        finally:
            worker.stop()


def test_a_worker_refuses_an_outbox_with_more_than_one_partition(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """One sender must see every alert (the fleet-wide digest): an outbox made with more
    partitions (by hand, or by an old tool) stops the worker with one line saying how to
    migrate, and no traceback."""
    t = TopicNames(topic_prefix)

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t.alerts, 3, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    config = alert_config(kafka_bootstrap, topic_prefix, free_port(), {"envoy.stale": {}})
    worker = Worker(config, tmp_path).start(wait=False)
    assert worker.proc is not None
    assert worker.proc.wait(60) == 1
    lines = worker.log_text().strip().splitlines()
    assert lines == [
        f"vigo-processor: topic {t.alerts} has 3 partitions, the alert outbox needs 1: to "
        "migrate, drain it (vigo_alert_outbox_pending 0 on every worker), stop the workers, "
        "delete the topic, start"
    ]
