"""The worker against a broker that requires SASL/SCRAM-SHA-512 over TLS (SPEC 10.7).

The broker's certificate is made by openssl at test time (a CA of its own, the broker's
certificate for 127.0.0.1), the user by Kafka's own storage tool from the same jars
(`kafkabroker.SaslSsl`). The worker reads its password from a file and verifies the
broker against the CA. The secret must appear in no log line, no error output and not in
`vigo-processor config`."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafkabroker
import pytest
import yaml

from tests.harness import PROCESSOR, Worker, consume, enrollment, produce, run_event
from tests.webharness import http_get, poll
from topics.names import TopicNames

PREFIX = "sasl."
USER = "vigo-worker"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    password = "pw-" + secrets.token_urlsafe(18)
    secure = kafkabroker.SaslSsl({USER: password})
    broker = kafkabroker.start_broker(data_dir=tmp_path_factory.mktemp("sasl-kafka"), secure=secure)
    try:
        yield broker, password
    finally:
        broker.stop()


def secure_config(broker: Any, password_file: Path) -> dict[str, Any]:
    secure = broker.secure
    assert secure is not None and secure.ca_file is not None
    return {
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{secure.port}",
            "topic_prefix": PREFIX,
            "partitions": 2,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password_file": str(password_file),
            "ssl_cafile": str(secure.ca_file),
        },
        "checkin": {"interval": "1h"},
        "smtp": {"events": {}},
    }


def test_the_worker_works_over_sasl_ssl_and_never_shows_the_password(
    secure_broker: tuple[Any, str], tmp_path: Path
) -> None:
    broker, password = secure_broker
    password_file = tmp_path / "kafka-password"
    password_file.write_text(password + "\n")
    config = secure_config(broker, password_file)
    names = TopicNames(PREFIX)
    worker = Worker(config, tmp_path).start(timeout=120)
    try:
        # The test's own tools use the plaintext listener; the worker only the secure one.
        produce(
            broker.bootstrap,
            [
                (names.enrollments, b"tls-01", enrollment("tls-01", role="tls")),
                (names.runs, b"tls-01", run_event("tls-01", "ok")),
            ],
        )
        # The enrollment and the run are on two topics, read in no promised order: wait
        # for the state both give (enrolled with its label, converged), not a sequence.
        detail = poll(
            lambda: http_get(worker.url + "/api/envoys/tls-01"),
            lambda r: r.status == 200 and _enrolled_and_converged(r.json()),
            timeout=60,
        )
        assert detail.status == 200 and _enrolled_and_converged(detail.json()), detail.body
        changes = consume(
            broker.bootstrap,
            names.status_changes,
            until=lambda records: bool(records) and records[-1]["to"] == "converged",
            timeout=60,
        )
        assert changes and {c["envoy_id"] for c in changes} == {"tls-01"}
        assert changes[-1]["to"] == "converged"
    finally:
        worker.stop()
    path = tmp_path / "effective.yaml"
    path.write_text(yaml.safe_dump(config))
    shown = subprocess.run(
        [str(PROCESSOR), "config", "--config", str(path)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert '"security_protocol": "SASL_SSL"' in shown.stdout
    log = worker.log_text()
    assert "[^Worker]: Ready" in log  # the log was written, so its check below means something
    for text in (log, shown.stdout, shown.stderr):
        assert password not in text


def _enrolled_and_converged(detail: dict[str, Any]) -> bool:
    return bool(detail["status"] == "converged" and detail["labels"] == {"role": "tls"})


def failed_start(config: dict[str, Any], tmp_path: Path) -> str:
    """The one line a worker that cannot connect prints, checked to be one line."""
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = subprocess.run(
        [str(PROCESSOR), "worker", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 90
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vigo-processor: ")
    return result.stdout + lines[0]


def test_a_wrong_password_fails_at_start_with_one_line_and_no_secret(
    secure_broker: tuple[Any, str], tmp_path: Path
) -> None:
    broker, password = secure_broker
    wrong = password[::-1]
    password_file = tmp_path / "kafka-password"
    password_file.write_text(wrong)
    said = failed_start(secure_config(broker, password_file), tmp_path)
    assert "authentication failed" in said and "kafka.sasl_password_file" in said
    assert wrong not in said and password not in said


def test_an_untrusted_broker_certificate_fails_at_start_naming_the_ca_key(
    secure_broker: tuple[Any, str], tmp_path: Path
) -> None:
    broker, password = secure_broker
    password_file = tmp_path / "kafka-password"
    password_file.write_text(password)
    config = secure_config(broker, password_file)
    del config["kafka"]["ssl_cafile"]  # the system's trust store does not know our CA
    said = failed_start(config, tmp_path)
    assert "certificate" in said and "kafka.ssl_cafile" in said
    assert password not in said
