"""Tokens and secrets (SPEC 10.7, 11.4): `vigocli` never carries its token through a
redirect (two real HTTP servers on loopback), credentials inside URLs are masked by
`vigo-processor config` and in Kafka error lines, SASL without a password fails at start,
and an absurdly nested JSON variable is one line naming it, not a traceback."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from processor.cli.vigocli import cli
from processor.config import ConfigError, load_settings
from tests.harness import free_port
from tests.test_config import run_config
from tests.webharness import VIGOCLI

TOKEN = "tok-5ecret-never-forwarded"


@dataclass
class Seen:
    """What one server received: (path, Authorization header) per request."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)


def serve(seen: Seen, redirect_to: str | None) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.requests.append((self.path, self.headers.get("Authorization")))
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"percent": 100.0, "active": 1, "compliant": 1, "by_status": {}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def redirecting() -> Iterator[tuple[str, str, Seen]]:
    """A server that answers 302 to a second one (another port: another origin), and
    what the second one received."""
    target_seen, redirect_seen = Seen(), Seen()
    target, target_url = serve(target_seen, None)
    redirect, redirect_url = serve(redirect_seen, target_url)
    try:
        yield redirect_url, target_url, target_seen
    finally:
        for server in (redirect, target):
            server.shutdown()
            server.server_close()


def test_the_token_never_follows_a_redirect(
    redirecting: tuple[str, str, Seen], tmp_path: Path
) -> None:
    url, target_url, target_seen = redirecting
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for env, extra in (({"VIGO_TOKEN": TOKEN}, []), ({"VIGO_TOKEN": None}, ["--token-file"])):
        args = ["--url", url, *extra, *([str(token_file)] if extra else []), "doctor"]
        done = CliRunner().invoke(cli, args, env={**env, "VIGO_URL": None})
        assert done.exit_code == 2, done.output
        assert done.stdout == ""
        assert done.stderr == (
            f"vigocli: {url}/api/compliance redirected to {target_url}/api/compliance; "
            "point --url at the final address\n"
        )
        assert TOKEN not in done.output
    assert target_seen.requests == []  # nothing at all reached the other origin


def test_without_a_redirect_the_token_is_sent(redirecting: tuple[str, str, Seen]) -> None:
    _, target_url, target_seen = redirecting
    done = CliRunner().invoke(cli, ["--url", target_url, "doctor"], env={"VIGO_TOKEN": TOKEN})
    assert done.exit_code == 0, done.output
    assert target_seen.requests == [("/api/compliance", f"Bearer {TOKEN}")]


def test_config_masks_credentials_inside_urls(tmp_path: Path) -> None:
    config = {
        "kafka": {"bootstrap_servers": "vigo:kafka-pa55@127.0.0.1:1,127.0.0.1:2"},
        "web": {"public_url": "https://ops:web-pa55@vigo.example/"},
    }
    done = run_config(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert "pa55" not in done.stdout + done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["kafka"]["bootstrap_servers"] == "***@127.0.0.1:1,127.0.0.1:2"
    assert doc["web"]["public_url"] == "https://***@vigo.example/"
    # Addresses are no URLs: left alone.
    assert doc["smtp"]["from"] == "vigo@localhost"
    env = run_config(tmp_path, VIGO_WEB__PUBLIC_URL="http://u:env-pa55@h:8080/x")
    assert orjson.loads(env.stdout)["web"]["public_url"] == "http://***@h:8080/x"


def test_kafka_error_lines_mask_credentials(tmp_path: Path) -> None:
    config = tmp_path / "vigo.yaml"
    config.write_text(f"kafka:\n  bootstrap_servers: vigo:kafka-pa55@127.0.0.1:{free_port()}\n")
    done = subprocess.run(
        [str(VIGOCLI), "deadletters", "list", "--config", str(config), "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "pa55" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_a_password_fails_at_start(tmp_path: Path, protocol: str) -> None:
    kafka = {"security_protocol": protocol, "sasl_username": "vigo"}
    done = run_config(tmp_path, {"kafka": kafka})
    assert done.returncode != 0
    assert done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("vigo-processor: config kafka.sasl_password_file:")
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"^config kafka.sasl_password_file: .* is empty$"):
        load_settings(None, {"VIGO_KAFKA__SECURITY_PROTOCOL": protocol,
                             "VIGO_KAFKA__SASL_USERNAME": "vigo",
                             "VIGO_KAFKA__SASL_PASSWORD_FILE": str(empty)})  # fmt: skip
    with pytest.raises(ConfigError, match=r"^config kafka.sasl_username: "):
        load_settings(None, {"VIGO_KAFKA__SECURITY_PROTOCOL": protocol})
    given = tmp_path / "kafka.pw"
    given.write_text("pw\n")
    load_settings(None, {"VIGO_KAFKA__SECURITY_PROTOCOL": protocol,
                         "VIGO_KAFKA__SASL_USERNAME": "vigo",
                         "VIGO_KAFKA__SASL_PASSWORD_FILE": str(given)})  # fmt: skip


def test_deeply_nested_json_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"VIGO_FLEET__GROUP_BY": deep})
    assert str(caught.value) == (
        "config fleet.group_by: VIGO_FLEET__GROUP_BY: JSON nested deeper than 32 levels"
    )
    # As run (an environment string is at most 128 KiB: the opening brackets suffice).
    done = run_config(tmp_path, VIGO_FLEET__GROUP_BY="[" * 100_000)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "vigo-processor: config fleet.group_by: VIGO_FLEET__GROUP_BY: "
        "JSON nested deeper than 32 levels"
    ]
    # 32 levels is still read (and judged by the model as usual).
    nested = '{"envoy.stale": {}}'
    assert load_settings(None, {"VIGO_SMTP__EVENTS": nested}).smtp.events.envoy_stale
    brackets = '"[[[[{{{{"'  # brackets inside strings do not count
    assert load_settings(None, {"VIGO_SMTP__TO": f"[{brackets}]"}).smtp.to == ["[[[[{{{{"]


def test_deeply_nested_yaml_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("fleet:\n  group_by: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ConfigError, match=r"^config file .*: nested too deeply$"):
        load_settings(path, {})
