"""SPEC 11.4 (routes, pages) and 10.7 (the token), probed on a real worker with a token:
nothing but the dashboard pages, their static files, `/metrics`, `/healthz`, `/readyz`
and the `/` redirect answers without the token; every `/api/` path is a 401 JSON then,
even one no route serves, and even with a raw Latin-1 byte in the header; none of
Faust's own web apps (table, router, stats, graph views) is ever served, not even when
Faust's `APP_WEB_*` environment variables turn them back on; pages carry the CSP and
`nosniff`, embed no inline script or style, and render in Chromium under that CSP."""

from __future__ import annotations

import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from processor.web.security import canonical
from processor.web.views import ROUTE_PATHS
from tests.harness import Worker, worker_config
from tests.test_dashboard import CHROMIUM, Dom
from tests.webharness import (
    Reply,
    fetch,
    initialized_app,
    new_prefix,
    poll,
    publish_status_fleet,
    running_workers,
    settled,
    threshold_config,
)

CSP = "default-src 'self'; frame-ancestors 'none'"
#: What Faust 0.15 serves by default (faust/web/apps: router, tables, stats, graph,
#: metrics, production index), with the names of this app's tables and a few more.
FAUST_PATHS = [
    "/router/",
    "/router/topics",
    "/router/envoys/",
    "/router/envoys/conv-1/",
    "/table/",
    "/table/envoys/",
    "/table/envoys/conv-1/",
    "/table/fleet-parts/",
    "/table/fleet-state/",
    "/stats/",
    "/assignment/",
    "/graph/",
    "/performance/",
    "/signal/x/",
    "/metrics/",
]
#: Open without the token: path -> the statuses it may answer.
OPEN = {
    "/compliance": {200},
    "/envoys/conv-1": {200},
    "/static/vigo.css": {200},
    "/static/vigo.js": {200},
    "/static/compliance.js": {200},
    "/static/envoy.js": {200},
    "/static/explain.js": {200},
    "/static/resources.js": {200},
    "/metrics": {200},
    "/healthz": {200},
    "/readyz": {200, 503},
}
API_EXTRA = ["/api", "/api/", "/api/nope", "/api/openapi.json", "/api/envoys/", "/api/local/envoys"]


@pytest.fixture(scope="module")
def secured(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, str]]:
    token = "tok-" + secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("auth") / "api-token"
    token_file.write_text(token + "\n")
    web = {"auth_token_file": str(token_file)}
    with running_workers(kafka_bootstrap, smtp=threshold_config(50), web=web) as (worker,):
        publish_status_fleet(kafka_bootstrap, [worker], token=token)
        yield worker, token


def concrete(path: str) -> str:
    """A route's canonical path with its placeholders filled in."""
    return re.sub(r"\{(\w+)\}", lambda m: "vigo.css" if m[1] == "name" else "conv-1", path)


def probe_paths(worker: Worker, scratch: Path) -> tuple[list[str], list[str]]:
    """Every route the worker's router holds (built from its own configuration) and
    Faust's default paths for this app's tables: (router paths, all paths to probe)."""
    app = initialized_app(worker, scratch)
    routes = [r.canonical for r in app.web.web_app.router.resources()]
    tables = [name for name in app.tables]
    faust = [*FAUST_PATHS, *(f"/table/{t}/" for t in tables), *(f"/router/{t}/" for t in tables)]
    faust += [f"/table/{t}/conv-1/" for t in tables]
    return routes, sorted({*map(concrete, routes), *faust, *OPEN, *API_EXTRA})


def assert_security_headers(reply: Reply, path: str) -> None:
    assert reply.headers.get("X-Content-Type-Options") == "nosniff", path
    assert reply.headers.get("Content-Security-Policy") == CSP, path


def test_only_pages_static_files_metrics_and_health_answer_without_the_token(
    secured: tuple[Worker, str], tmp_path: Path
) -> None:
    worker, token = secured
    routes, paths = probe_paths(worker, tmp_path)
    # The router holds our routes only; Faust's `/` index, for which Faust has no
    # setting, is registered after ours at the same path and never reached.
    extra = list(routes)
    for path in ROUTE_PATHS:
        extra.remove(canonical(path))
    assert extra == ["/"], routes
    assert "/api/compliance" in paths and "/table/fleet-parts/" in paths
    for path in paths:
        reply = fetch(worker.url, path)
        assert_security_headers(reply, path)
        if path == "/":
            assert reply.status in (302, 307) and reply.headers["Location"] == "/compliance"
        elif path in OPEN:
            assert reply.status in OPEN[path], (path, reply.status, reply.body[:200])
        elif path == "/api" or path.startswith("/api/"):
            assert reply.status == 401, (path, reply.status)
            assert "token" in reply.json()["error"]
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert reply.status == 404, (path, reply.status, reply.body[:200])
        # Faust's apps are not served with the token either.
        if not (path in OPEN or path == "/" or path.startswith("/api")):
            with_token = fetch(worker.url, path, {"Authorization": f"Bearer {token}"})
            assert with_token.status == 404, (path, with_token.status)
    assert fetch(worker.url, "/static/nope.js").status == 404
    assert fetch(worker.url, "/static/../views.py").status == 404
    dashboard = fetch(worker.url, "/compliance")
    assert b"fleet compliance" in dashboard.body


def test_a_raw_latin1_byte_in_the_token_is_a_401_not_a_500(secured: tuple[Worker, str]) -> None:
    worker, token = secured
    for path in ("/api/compliance", "/api/envoys?status=errors", "/api/envoys/conv-1"):
        for value in (
            b"Bearer \xe9",
            token.encode() + b"\xe9",
            b"Bearer " + token.encode() + b"\xe9",
        ):
            reply = fetch(worker.url, path, {"Authorization": value})
            assert reply.status == 401, (path, value, reply.status, reply.body[:300])
            assert reply.headers["Content-Type"].startswith("application/json")
            assert "token" in reply.json()["error"]
    # The byte elsewhere changes nothing for open routes, or for the right token.
    assert fetch(worker.url, "/healthz", {"Authorization": b"Bearer \xe9"}).status == 200
    good = fetch(
        worker.url, "/api/compliance", {"Authorization": f"Bearer {token}", "X-Odd": b"\xe9"}
    )
    assert good.status == 200


class PageParts(HTMLParser):
    """The scripts, stylesheets, inline styles and links of a page as served."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.script_srcs: list[str] = []
        self.inline_scripts = 0
        self.stylesheets: list[str] = []
        self.inline_styles = 0
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.script_srcs.append(a["src"] or "")
            else:
                self.inline_scripts += 1
        if tag == "style" or "style" in a or any(k.startswith("on") for k in a):
            self.inline_styles += 1
        if tag == "link" and a.get("rel") == "stylesheet":
            self.stylesheets.append(a.get("href") or "")
        if tag == "a":
            self.links.append(a.get("href") or "")


@pytest.mark.parametrize("path", ["/compliance", "/envoys/conv-1", "/compliance?status=drifted"])
def test_pages_carry_the_csp_and_embed_nothing_inline(
    secured: tuple[Worker, str], path: str
) -> None:
    worker, _ = secured
    page = fetch(worker.url, path)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert_security_headers(page, path)
    parts = PageParts(page.body.decode("utf-8"))
    assert parts.inline_scripts == 0 and parts.inline_styles == 0
    assert parts.stylesheets == ["/static/vigo.css"]
    # vigo.js first, then the page's own scripts (one or more files).
    assert parts.script_srcs[0] == "/static/vigo.js" and len(parts.script_srcs) >= 2
    for src in [*parts.stylesheets, *parts.script_srcs]:
        asset = fetch(worker.url, src)  # no token: static files carry no data
        assert asset.status == 200, src
        assert_security_headers(asset, src)
        kind = "text/css" if src.endswith(".css") else "text/javascript"
        assert asset.headers["Content-Type"].startswith(kind)
    assert not [link for link in parts.links if link.startswith("/api")]


def browse(url: str) -> tuple[Dom, str, list[str]]:
    """The rendered DOM, the browser's console log (where a CSP violation shows), and
    every link href of the rendered page."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="vigo-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--virtual-time-budget=8000",
             "--enable-logging=stderr", "--v=0", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return Dom(done.stdout), done.stderr, PageParts(done.stdout).links


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_dashboard_works_under_its_csp_with_a_token_or_a_malformed_one(
    secured: tuple[Worker, str],
) -> None:
    worker, token = secured
    api = fetch(worker.url, "/api/compliance", {"Authorization": f"Bearer {token}"}).json()
    dom, console, links = browse(f"{worker.url}/compliance#token={quote(token)}")
    assert "Content Security Policy" not in console, console[-3000:]
    assert "token-form" not in dom.text_by_id
    assert dom.text_by_id["gauge-percent"].strip() == f"{api['percent']:.2f}%"
    assert dom.counts["active"] == api["active"]
    assert links and not [link for link in links if "/api" in link], links
    # A breakdown link lists that status on the dashboard itself.
    drifted = [link for link in links if "status=drifted" in link]
    assert drifted and drifted[0].startswith("/compliance?")
    listed, _, _ = browse(f"{worker.url}{drifted[0]}#token={quote(token)}")
    assert "drift-1" in listed.text_by_id["attention"]
    assert "conv-1" not in listed.text_by_id["attention"]
    # A malformed fragment stops nothing: the page asks for a token instead.
    for fragment in ("%E0%A4%A", "%E0%A4%A4", "%"):
        broken, console, _ = browse(f"{worker.url}/compliance#token={fragment}")
        assert "was refused" in broken.text_by_id["token-form"], fragment
        assert "Uncaught" not in console, console[-3000:]
    envoy, console, _ = browse(f"{worker.url}/envoys/conv-1#token={quote(token)}")
    assert "Content Security Policy" not in console, console[-3000:]
    assert envoy.text_by_id["envoy-id"] == "conv-1"


def test_faust_apps_stay_off_when_its_environment_turns_them_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Faust's APP_WEB_*_ENABLED variables override its settings; the routes they add
    are still never served."""
    config = worker_config(kafka_bootstrap, new_prefix())
    env = {
        f"APP_WEB_{name}_ENABLED": "1" for name in ("ROUTER", "TABLES", "STATS", "GRAPH", "METRICS")
    }
    worker = Worker(config, tmp_path / "w", env=env)
    try:
        worker.start()
        poll(lambda: settled([worker]), bool, timeout=120)
        app_routes = orjson.dumps([p for p in FAUST_PATHS if fetch(worker.url, p).status != 404])
        assert app_routes == b"[]"
        assert fetch(worker.url, "/").headers.get("Location") == "/compliance"
        assert fetch(worker.url, "/api/compliance").status in (200, 503)  # no token set
    finally:
        worker.stop()
