"""The API's bearer token (SPEC 10.7) and vigocli's conventions (SPEC 10.8), on two real
workers: every `/api/*` route wants the token (401 JSON otherwise), pages, metrics and
health stay open, a worker forwards with the token, vigocli takes `--token-file` or
`VIGO_TOKEN` before or after the subcommand and exits 3 on a refused token, and the
dashboard in headless Chromium asks for the token and then shows the data."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import PROCESSOR, Worker
from tests.test_dashboard import CHROMIUM, Dom, dump_dom
from tests.test_vigocli import one_line
from tests.webharness import (
    VIGOCLI,
    poll,
    publish_status_fleet,
    running_workers,
    threshold_config,
)

API_PATHS = ["/api/compliance", "/api/envoys?status=errors", "/api/envoys/conv-1", "/api/alerts"]
OPEN_PATHS = ["/metrics", "/healthz", "/compliance", "/envoys/conv-1"]


@pytest.fixture(scope="module")
def secured(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Worker], str, Path]]:
    token = "tok-" + secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("auth") / "api-token"
    token_file.write_text(token + "\n")
    web = {"auth_token_file": str(token_file)}
    with running_workers(kafka_bootstrap, count=2, smtp=threshold_config(50), web=web) as group:
        publish_status_fleet(kafka_bootstrap, group, token=token)
        yield group, token, token_file


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); `token` is sent as it is, even when empty or odd."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if token is not None and token.startswith("Basic "):
        headers = {"Authorization": token}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_every_api_route_wants_the_token_and_the_rest_stays_open(
    secured: tuple[list[Worker], str, Path],
) -> None:
    workers, token, _ = secured
    for worker in workers:
        for path in API_PATHS:
            for wrong in (None, token + "x", token[:-1], "", f"Basic {token}"):
                status, headers, body = get(worker.url + path, wrong)
                assert status == 401, (path, wrong, status)
                assert headers["Content-Type"].startswith("application/json")
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert "token" in json.loads(body)["error"]
                assert token.encode() not in body
            # With the token, from either worker: answered locally or forwarded to the
            # owner (the forwarded request carries the token, or it would be a 401 here).
            status, _, body = poll(
                lambda w=worker, p=path: get(w.url + p, token),  # type: ignore[misc]
                lambda answer: answer[0] != 503,
                timeout=60,
            )
            assert status == 200, (worker.url, path, status, body)
        for path in OPEN_PATHS:
            assert get(worker.url + path)[0] == 200, path
        assert get(worker.url + "/readyz")[0] in (200, 503)  # open: never 401


def vigocli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIGO_URL", "VIGO_TOKEN")}
    return subprocess.run(
        [str(VIGOCLI), *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


def test_vigocli_token_and_url_before_or_after_the_subcommand(
    secured: tuple[list[Worker], str, Path], tmp_path: Path
) -> None:
    workers, token, token_file = secured
    url = workers[1].url
    expected = vigocli("--url", url, "--token-file", str(token_file), "doctor", "--json")
    assert expected.returncode in (0, 1), expected.stderr
    assert json.loads(expected.stdout)["active"] > 0
    for args in (
        ["doctor", "--url", url, "--token-file", str(token_file), "--json"],
        ["--url", "http://127.0.0.1:9", "doctor", "--url", url, "--token-file", str(token_file),
         "--json"],  # after the subcommand wins
        ["--token-file", str(token_file), "doctor", "--json", "--url", url],
    ):  # fmt: skip
        done = vigocli(*args)
        assert done.returncode == expected.returncode, (args, done.stderr)
        assert json.loads(done.stdout)["active"] == json.loads(expected.stdout)["active"]
    by_env = vigocli("envoys", "show", "conv-1", "--url", url, VIGO_TOKEN=token)
    assert by_env.returncode == 0 and "conv-1" in by_env.stdout

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    for args in (
        ["doctor", "--url", url],
        ["doctor", "--url", url, "--token-file", str(wrong)],
        ["envoys", "list", "--url", url, "--token-file", str(wrong)],
    ):
        refused = vigocli(*args)
        assert refused.returncode == 3, (args, refused.stderr)
        line = one_line(refused.stderr)
        assert "401" in line and "--token-file" in line and token not in line
    missing = vigocli("doctor", "--url", url, "--token-file", str(tmp_path / "none"))
    assert missing.returncode == 64 and "--token-file" in missing.stderr
    usage = vigocli("doctor", "--no-such-option")
    assert usage.returncode == 64


def test_the_token_never_shows_in_logs_or_config(
    secured: tuple[list[Worker], str, Path], tmp_path: Path
) -> None:
    workers, token, token_file = secured
    for worker in workers:
        assert token not in worker.log_text()
    config: dict[str, Any] = {"web": {"auth_token_file": str(token_file)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    shown = subprocess.run(
        [str(PROCESSOR), "config", "--config", str(path)], capture_output=True, text=True
    )
    assert shown.returncode == 0 and token not in shown.stdout + shown.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_dashboard_asks_for_the_token_then_shows_the_data(
    secured: tuple[list[Worker], str, Path],
) -> None:
    workers, token, _ = secured
    page = workers[0].url + "/compliance"
    locked = Dom(dump_dom(page))
    assert "token-form" in locked.text_by_id
    assert "needs a token" in locked.text_by_id["token-form"]
    assert "%" not in locked.text_by_id.get("gauge-percent", "")
    api = get(workers[0].url + "/api/compliance", token)
    opened = Dom(dump_dom(f"{page}#token={token}"))
    assert "token-form" not in opened.text_by_id
    percent = json.loads(api[2])["percent"]
    assert opened.text_by_id["gauge-percent"].strip() == f"{percent:.2f}%"
    wrong = Dom(dump_dom(f"{page}#token=nope"))
    assert "was refused" in wrong.text_by_id["token-form"]
