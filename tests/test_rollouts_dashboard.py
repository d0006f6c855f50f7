"""The rollout card on the dashboard (SPEC 11.2), rendered by a real headless Chromium: the
newest version, the share of active envoys on it, converged among them, the stuck count,
a row per version; versions are data (text in the DOM, never markup).

A screenshot of the page is taken every run; with `VIGO_UPDATE_SCREENSHOTS=1` it also
replaces `docs/dashboard-rollouts.png`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from processor.web.views import dashboard_page
from tests.harness import REPO, enrollment, produce, run_event
from tests.test_dashboard import CHROMIUM, Dom, dump_dom
from tests.test_dashboard_groups import screenshot
from tests.webharness import http_get, poll, prefix_of, running_workers
from topics.names import TopicNames

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package chromium; scripts/test adds it)",
)

HOSTILE = '<script>document.title="pwned"</script>'
SCREENSHOT = REPO / "docs" / "dashboard-rollouts.png"


def test_the_rollout_card_shows_the_newest_version_and_the_stuck(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rollouts = {"stuck_after": "1s"}
    with running_workers(kafka_bootstrap, smtp={"events": {}}, rollouts=rollouts) as (worker,):
        t = TopicNames(prefix_of(worker))
        envoys = [f"web-{i}" for i in range(8)]
        produce(
            kafka_bootstrap,
            [(t.enrollments, e.encode(), enrollment(e, interval_s=3600)) for e in envoys],
        )

        def rollout() -> Any:
            return http_get(worker.url + "/api/rollouts").json()

        def apply(version: str, chosen: list[str], result: str = "ok") -> None:
            produce(
                kafka_bootstrap,
                [
                    (t.runs, e.encode(), run_event(e, result, config_version=version))
                    for e in chosen
                ],
            )
            poll(rollout, lambda d: (d["newest"] or {}).get("version") == version)

        apply("v41", envoys)
        apply(HOSTILE, envoys[:1], "changed")
        apply("v42", envoys[5:], "changed")  # 3 of 8, the rest stuck after a second
        doc = poll(rollout, lambda d: d["stuck"] == 5)
        assert doc["stuck"] == 5, doc

        html = dump_dom(worker.url + "/compliance")
        dom = Dom(html)
        assert dom.text_by_id.get("rollout-newest") == "v42", dom.text_by_id.get("rollout-card")
        assert "3 of 8 active envoys 37.5%" in dom.text_by_id["rollout-share"]
        assert "3 of them 100.0%" in dom.text_by_id["rollout-converged"]
        assert dom.text_by_id["rollout-stuck"] == "5 envoys still on an older version"
        assert 'data-newest="v42"' in html and 'data-stuck="5"' in html
        for version in ("v41", "v42"):
            assert f'data-version="{version}"' in html
        # The hostile version is a row of text: no script of it runs or exists.
        assert "&lt;script&gt;document.title" in html
        assert html.count("<script") == dashboard_page("compliance.html").count("<script ")

        shot = tmp_path / "dashboard-rollouts.png"
        screenshot(worker.url + "/compliance", shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("VIGO_UPDATE_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
