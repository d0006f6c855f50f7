"""Groups by label on the dashboard (SPEC 10.2), rendered by a real headless Chromium: a
card per `group_by` key with a row per value linking to `/compliance?label=KEY=VALUE`,
which shows that group. Label values are data: text in the DOM, encoded in links.

A screenshot of the page with groups is taken every run; with
`VIGO_UPDATE_SCREENSHOTS=1` it also replaces `docs/dashboard-groups.png`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from processor.web.views import dashboard_page
from tests.harness import REPO, Worker, enrollment, produce, run_event
from tests.test_dashboard import CHROMIUM, Dom, dump_dom, rendered
from tests.webharness import (
    http_get,
    poll,
    prefix_of,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.names import TopicNames

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package chromium; scripts/test adds it)",
)

HOSTILE = '<script>document.title="pwned"</script> "q" \'s\' é'
SCREENSHOT = REPO / "docs" / "dashboard-groups.png"


def encode_uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent."""
    return quote(text, safe="-_.!~*'()")


class GroupRows(HTMLParser):
    """The group cards of the rendered page: (key, value, link) per row, and every
    script element (none may come from data)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, str]] = []
        self.cards: list[str] = []
        self.scripts = 0
        self._row: tuple[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "section" and a.get("data-group-card"):
            self.cards.append(a["data-group-card"] or "")
        if tag == "tr" and a.get("data-group-key") is not None:
            self._row = (a["data-group-key"] or "", a.get("data-group-value") or "")
        if tag == "a" and self._row is not None:
            self.rows.append((*self._row, a.get("href") or ""))
            self._row = None


def screenshot(url: str, path: Path) -> None:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="vigo-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
             "--window-size=1280,1500", f"--screenshot={path}", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def dashboard(kafka_bootstrap: str) -> Iterator[Worker]:
    smtp = threshold_config(50)
    smtp["events"]["convergence.threshold"]["groups"] = {"env=prod": 95}
    fleet = {"group_by": ["env", "role"]}
    with running_workers(kafka_bootstrap, smtp=smtp, fleet=fleet) as (worker,):
        publish_status_fleet(kafka_bootstrap, [worker])
        t = TopicNames(prefix_of(worker))
        records = []
        for i, (env, result) in enumerate(
            [("prod", "ok")] * 5 + [("prod", "changed")] + [("staging", "ok")] * 2
            + [("dev", "changed")] * 2 + [(HOSTILE, "ok")]
        ):  # fmt: skip
            envoy = f"{env[:7]}-{i}"
            records.append(
                (t.enrollments, envoy.encode(), enrollment(envoy, interval_s=3600, env=env))
            )
            records.append((t.runs, envoy.encode(), run_event(envoy, result)))
        produce(kafka_bootstrap, records)
        poll(
            lambda: http_get(worker.url + "/api/compliance").json(),
            lambda d: d["active"] == 23,
        )
        yield worker


def test_a_card_per_key_and_a_row_per_value_linking_to_the_group(
    dashboard: Worker, tmp_path: Path
) -> None:
    api = http_get(dashboard.url + "/api/compliance").json()
    page = GroupRows(dump_dom(dashboard.url + "/compliance"))
    assert page.cards == ["env", "role"]
    expected = [
        (key, value, "/compliance?label=" + encode_uri_component(f"{key}={value}"))
        for key, values in api["groups"].items()
        for value in values
    ]
    assert page.rows == expected
    assert ("env", HOSTILE, "/compliance?label=" + encode_uri_component(f"env={HOSTILE}")) in (
        page.rows
    )
    # The page's own (as many as its file has): the label's <script> is text.
    assert page.scripts == dashboard_page("compliance.html").count("<script ")
    dom = rendered(dashboard.url + "/compliance")
    assert dom.counts["active"] == 23

    shot = tmp_path / "dashboard-groups.png"
    screenshot(dashboard.url + "/compliance", shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("VIGO_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


@pytest.mark.parametrize("value", ["prod", HOSTILE, "(none)"])
def test_the_group_page_shows_that_group(dashboard: Worker, value: str) -> None:
    label = f"env={value}"
    api = http_get(dashboard.url + "/api/compliance?label=" + encode_uri_component(label)).json()
    dom = Dom(dump_dom(dashboard.url + "/compliance?label=" + encode_uri_component(label)))
    assert dom.text_by_id["group-label"] == label
    assert dom.text_by_id["gauge-percent"].strip() == f"{api['percent']:.2f}%"
    assert (
        f"{api['compliant']} of {api['active']} active envoys compliant"
        in (dom.text_by_id["gauge-detail"])
    )
    outside = {"inactive": api["inactive"], "revoked": api["revoked"]}  # SPEC 10.3
    assert dom.counts == {**api["by_status"], "active": api["active"], **outside}
    if value == "prod":  # 5 of 6 against its own 95 %
        assert "below the 95% threshold" in dom.text_by_id["verdict"]
    assert GroupRows(dump_dom(dashboard.url + "/compliance?label=" + quote(label))).rows == []
