"""The dashboard rendered by a real headless browser: the DOM after its scripts ran shows
the API's numbers (gauge percent, breakdown by status, drift history)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from tests.harness import Worker, enrollment, produce, run_event
from tests.webharness import (
    http_get,
    poll,
    prefix_of,
    publish_status_fleet,
    running_workers,
    threshold_config,
)
from topics.names import TopicNames

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package chromium; scripts/test adds it)",
)


class Dom(HTMLParser):
    """Just enough of the rendered DOM: text by element id, breakdown counts by status,
    and the drift-history items."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text_by_id: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.runs: list[tuple[str, str]] = []
        #: The class of each drift-history item, in the order of `runs`.
        self.run_classes: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self._row_status: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            self._row_status = a.get("data-status")
        if tag == "td" and a.get("class") == "count" and self._row_status:
            self.counts[self._row_status] = int(a["data-count"] or 0)
        if tag == "li" and a.get("data-run"):
            self.runs.append((a["data-run"] or "", a.get("data-outcome") or ""))
            self.run_classes.append(a.get("class") or "")
        element_id = a.get("id")
        if element_id:
            self.text_by_id.setdefault(element_id, "")
        self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text_by_id[element_id] += data


def rendered(url: str) -> Dom:
    """The DOM once the page's fetches completed (virtual time runs them to the end)."""
    return Dom(dump_dom(url))


def dump_dom(url: str) -> str:
    """The page's serialized DOM after its scripts ran."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="vigo-chromium-") as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=8000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def dashboard(kafka_bootstrap: str) -> Iterator[tuple[Worker, dict[str, str]]]:
    with running_workers(kafka_bootstrap, smtp=threshold_config(50)) as (worker,):
        yield worker, publish_status_fleet(kafka_bootstrap, [worker])


def numbers(doc: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(doc[k] for k in ("active", "compliant", "percent", "by_status", "revoked"))


def settled_page(worker: Worker, render: Callable[[], T]) -> tuple[dict[str, Any], T]:
    """The page with the API's numbers as they were while it rendered: the fleet may still
    move (a sweep, a late partial), so render until the numbers before and after agree."""
    for _ in range(10):
        before = http_get(worker.url + "/api/compliance").json()
        page = render()
        after = http_get(worker.url + "/api/compliance").json()
        if numbers(before) == numbers(after):
            return after, page
        time.sleep(1)
    raise AssertionError(f"the fleet numbers never settled: {before} then {after}")


def test_compliance_page_shows_the_api_numbers(
    dashboard: tuple[Worker, dict[str, str]],
) -> None:
    worker, _ = dashboard
    api, dom = settled_page(worker, lambda: rendered(worker.url + "/compliance"))
    assert dom.text_by_id["gauge-percent"].strip() == f"{api['percent']:.2f}%"
    assert (
        f"{api['compliant']} of {api['active']} active envoys compliant"
        in (dom.text_by_id["gauge-detail"])
    )
    assert dom.counts == {
        **api["by_status"],
        "active": api["active"],
        # SPEC 10.3: beside active, not in it.
        "inactive": api["inactive"],
        "revoked": api["revoked"],
    }
    assert "below the 50% threshold" in dom.text_by_id["verdict"]
    # Needs attention: the failed, degraded, diverged, relapsed and offline envoys.
    attention = dom.text_by_id["attention"]
    for envoy in ("fail-1", "degrade-1", "diverge-1", "relapse-1", "offline-1"):
        assert envoy in attention
    assert "conv-1" not in attention


def test_envoy_page_shows_the_drift_history(dashboard: tuple[Worker, dict[str, str]]) -> None:
    worker, _ = dashboard
    for envoy in ("diverge-1", "rack 7/db-é"):
        path = "/envoys/" + quote(envoy, safe="")
        api = http_get(worker.url + "/api" + path).json()
        dom = rendered(worker.url + path)
        assert dom.text_by_id["envoy-id"] == envoy
        assert api["status"] in dom.text_by_id["envoy-status"]
        assert dom.runs == [(r["run_id"], r["outcome"]) for r in api["history"]]
        assert dom.text_by_id["consecutive"] == str(api["consecutive_changed_runs"])
    missing = rendered(worker.url + "/envoys/no-such-envoy")
    assert "No envoy named" in missing.text_by_id["facts"]


def test_envoy_page_marks_intentional_runs(
    dashboard: tuple[Worker, dict[str, str]], kafka_bootstrap: str
) -> None:
    """SPEC 10.1: a rollout's run is shown as `intentional`, with a class of its own."""
    worker, _ = dashboard
    t = TopicNames(prefix_of(worker))
    envoy = "rollout-<1>"
    produce(
        kafka_bootstrap,
        [
            (t.enrollments, envoy.encode(), enrollment(envoy, interval_s=3600)),
            (t.runs, envoy.encode(), run_event(envoy, "ok", config_version="v1")),
            (t.runs, envoy.encode(), run_event(envoy, "changed", config_version="v2<")),
        ],
    )
    path = "/envoys/" + quote(envoy, safe="")
    api = poll(
        lambda: http_get(worker.url + "/api" + path),
        lambda r: r.status == 200 and len(r.json()["history"]) == 2,
    ).json()
    assert [r["outcome"] for r in api["history"]] == ["intentional", "clean"]
    assert api["status"] == "converged"
    dom = rendered(worker.url + path)
    assert dom.text_by_id["envoy-id"] == envoy
    assert dom.runs == [(r["run_id"], r["outcome"]) for r in api["history"]]
    assert dom.run_classes == ["intentional", ""]
    assert api["config_version"] == "v2<"
    assert dom.text_by_id["config-version"] == "v2<"


class Links(HTMLParser):
    """Every link href of a rendered page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


@pytest.mark.parametrize(
    "fragment", ["", "#token=some-token", "#token=%E0%A4%A", "#token=%E0%A4%A4"]
)
def test_a_token_or_a_malformed_fragment_still_shows_the_numbers(
    dashboard: tuple[Worker, dict[str, str]], fragment: str
) -> None:
    """Without a token on the worker, any token is ignored; a malformed one (the page's
    decodeURIComponent throws) stops nothing. No link leads to the API (a 401 in the
    browser when a token is set): the breakdown links list a status on the dashboard."""
    worker, _ = dashboard
    api, html = settled_page(worker, lambda: dump_dom(worker.url + "/compliance" + fragment))
    dom = Dom(html)
    assert dom.text_by_id["gauge-percent"].strip() == f"{api['percent']:.2f}%"
    assert dom.counts["active"] == api["active"]
    assert "token-form" not in dom.text_by_id
    links = Links(html).hrefs
    assert links and not [href for href in links if "/api" in href], links
    assert "/compliance?status=failed" in links


def test_a_breakdown_link_lists_that_status(dashboard: tuple[Worker, dict[str, str]]) -> None:
    worker, expected = dashboard
    for status in ("failed", "converged", "revoked"):
        dom = rendered(f"{worker.url}/compliance?status={status}")
        listed = dom.text_by_id["attention"]
        assert status in dom.text_by_id["attention-title"]
        for envoy, its in expected.items():
            assert (envoy in listed) == (its == status), (status, envoy)
