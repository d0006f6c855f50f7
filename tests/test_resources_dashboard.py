"""Resources that drift on the dashboard (SPEC 11.3), rendered by a real headless Chromium:
the compliance page's table shows what `/api/resources/top` answers, for the fleet and for
a group counted on its own; resource ids are data (text in the DOM, never markup).

A screenshot of the page is taken every run; with `VIGO_UPDATE_SCREENSHOTS=1` it also
replaces `docs/dashboard-resources.png`."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.web.views import dashboard_page
from tests.eventgen import iso
from tests.harness import REPO, Worker, enrollment, produce
from tests.test_dashboard import CHROMIUM, dump_dom
from tests.test_dashboard_groups import screenshot
from tests.webharness import http_get, poll, prefix_of, running_workers, threshold_config
from topics.names import TopicNames

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package chromium; scripts/test adds it)",
)

#: Runs of the db group's top resources once every run is counted: ntp, resolv, openssl.
DB_RUNS = ["12", "6", "3"]
HOSTILE = 'file[<script>document.title="pwned"</script> é]'
SCREENSHOT = REPO / "docs" / "dashboard-resources.png"
#: (envoy, role, [(resource id, module, result)]) of every run, 4 rounds.
FLEET = [
    (f"{role}-{i}", role)
    for role, count in (("web", 6), ("db", 3), ("cache", 2))
    for i in range(count)
]


def resources_of(envoy: str, round_no: int) -> list[dict[str, str]]:
    """ntp.conf fights the configuration on every web and db host; nginx fails on two web
    hosts; openssl is upgraded once; the db hosts correct their resolv.conf every other
    run; one host reports a hostile id."""
    found = [{"id": "file[/etc/motd]", "module": "files", "result": "ok"}]
    if not envoy.startswith("cache"):
        found.append({"id": "file[/etc/ntp.conf]", "module": "files", "result": "changed"})
    if envoy in ("web-0", "web-1"):
        found.append({"id": "service[nginx]", "module": "services", "result": "failed"})
    if round_no == 0:
        found.append({"id": "package[openssl]", "module": "packages", "result": "changed"})
    if envoy.startswith("db") and round_no % 2:
        found.append({"id": "file[/etc/resolv.conf]", "module": "files", "result": "changed"})
    if envoy == "cache-1":
        found.append({"id": HOSTILE, "module": "files", "result": "changed"})
    return found


def run_doc(envoy: str, round_no: int, base_ms: int) -> bytes:
    finished = iso(base_ms + round_no * 1000)
    return orjson.dumps(
        {
            "schema": "vigo.run/1",
            "envoy_id": envoy,
            "run_id": str(uuid.uuid4()),
            "started_at": finished,
            "finished_at": finished,
            "config_version": "v42",
            "resources": resources_of(envoy, round_no),
        }
    )


class ResourceRows(HTMLParser):
    """The rendered resources table: the text of each row's cells, the text of an
    `empty` cell (no rows, or an error), and every script element (none from data)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.empty: list[str] = []
        self.scripts = 0
        self._in_table = False
        self._cell: list[str] | None = None
        self._target: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self._in_table = a.get("id") == "resources"
        if self._in_table and tag == "tr" and "data-resource" in a:
            self.rows.append([])
        if self._in_table and tag == "td":
            self._cell = []
            self._target = self.empty if a.get("class") == "empty" else self.rows[-1]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self._target.append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def api_rows(worker: Worker, label: str | None = None) -> list[list[str]]:
    query = "?kind=changed&limit=10" + (f"&label={label}" if label else "")
    doc: dict[str, Any] = http_get(worker.url + "/api/resources/top" + query).json()
    return [
        [r["id"], r["module"], str(r["runs"]), f"±{r['error']}" if r["error"] else "exact",
         str(r["envoys"])]
        for r in doc["resources"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dashboard(kafka_bootstrap: str) -> Iterator[Worker]:
    with running_workers(
        kafka_bootstrap,
        smtp=threshold_config(80),
        fleet={"group_by": ["role"]},
        resources={"groups": ["role=db"]},
    ) as (worker,):
        t = TopicNames(prefix_of(worker))
        records: list[tuple[str, bytes | None, bytes | None]] = [
            (t.enrollments, e.encode(), enrollment(e, interval_s=3600, role=role))
            for e, role in FLEET
        ]
        produce(kafka_bootstrap, records)
        # Topics are not ordered against each other: a run read before its envoy's
        # enrollment enrolls it without labels, and is rightly not counted for role=db.
        enrolled = poll(
            lambda: [http_get(f"{worker.url}/api/envoys/{e}").status for e, _ in FLEET],
            lambda codes: all(code == 200 for code in codes),
        )
        assert all(code == 200 for code in enrolled), enrolled
        base_ms = int(time.time() * 1000)
        runs = [
            (t.runs, e.encode(), run_doc(e, round_no, base_ms))
            for round_no in range(4)
            for e, _ in FLEET
        ]
        produce(kafka_bootstrap, runs)
        rows = poll(lambda: api_rows(worker), lambda r: bool(r) and r[0][2] == "36")
        assert rows[0][:3] == ["file[/etc/ntp.conf]", "files", "36"], rows
        poll(lambda: api_rows(worker), lambda r: len(r) == 4 and r[3][2] == "4")
        # The group's summaries travel apart from the fleet's: wait for them too.
        poll(lambda: api_rows(worker, "role=db"), lambda r: [x[2] for x in r] == DB_RUNS)
        yield worker


def test_the_table_shows_the_api_and_ids_stay_text(dashboard: Worker, tmp_path: Path) -> None:
    page = ResourceRows(dump_dom(dashboard.url + "/compliance"))
    assert page.rows == api_rows(dashboard)
    assert [row[0] for row in page.rows] == [
        "file[/etc/ntp.conf]",
        "package[openssl]",
        "file[/etc/resolv.conf]",
        HOSTILE,
    ]
    # The page's own (as many as its file has): the id's <script> is text.
    assert page.scripts == dashboard_page("compliance.html").count("<script ")

    shot = tmp_path / "dashboard-resources.png"
    screenshot(dashboard.url + "/compliance", shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("VIGO_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_a_group_page_shows_the_group_or_says_it_is_not_counted(dashboard: Worker) -> None:
    page = ResourceRows(dump_dom(dashboard.url + "/compliance?label=role%3Ddb"))
    assert page.rows == api_rows(dashboard, "role=db")
    assert [row[:3] for row in page.rows] == [
        ["file[/etc/ntp.conf]", "files", "12"],
        ["file[/etc/resolv.conf]", "files", "6"],
        ["package[openssl]", "packages", "3"],
    ]
    page = ResourceRows(dump_dom(dashboard.url + "/compliance?label=role%3Dweb"))
    assert page.rows == []
    assert page.empty == ["group 'role=web' is not counted on its own (resources.groups: role=db)"]
