"""The web views are module-level classes bound to a `WebContext`: they can be driven
without a server or a broker, on an app built from a real configuration but not started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from processor.config import load_settings
from processor.topology import Vigo, build_app
from processor.web.views import ROUTES, WebContext


class Query:
    """What a view reads of a request: its query and headers."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query = query
        self.headers: dict[str, str] = {"X-Vigo-Forwarded": "test"}


@pytest.fixture
def vigo(tmp_path: Path) -> Vigo:
    config = tmp_path / "vigo.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic_prefix": "views."},
                "smtp": {"events": {}},
                "processor": {"data_dir": str(tmp_path / "data")},
            }
        )
    )
    return build_app(load_settings(config))


def call(vigo: Vigo, path: str, request: Query, **kwargs: str) -> tuple[int, Any]:
    """The view instance Faust registered for `path`, called as the server would."""
    view = vigo.app.web.views[path]
    response = asyncio.run(view.get(request, **kwargs))
    body = response.body
    is_json = response.content_type == "application/json"
    return response.status, orjson.loads(body) if is_json else body


def test_every_route_is_registered_with_a_bound_view(vigo: Vigo) -> None:
    views = vigo.app.web.views
    assert set(views) == {path for path, _ in ROUTES}
    for path, cls in ROUTES:
        view = views[path]
        assert isinstance(view, cls) and isinstance(view.ctx, WebContext)


def test_health_and_not_ready_before_any_assignment(vigo: Vigo) -> None:
    assert call(vigo, "/healthz", Query({})) == (200, {"status": "ok"})
    status, body = call(vigo, "/readyz", Query({}))
    assert status == 503 and body["ready"] is False and body["caught_up"] is False


def test_list_rejects_a_bad_query_with_400_and_the_reason(vigo: Vigo) -> None:
    status, body = call(vigo, "/api/local/envoys", Query({"status": "sleepy"}))
    assert status == 400 and "unknown status 'sleepy'" in body["error"]
    status, body = call(vigo, "/api/local/envoys", Query({"limit": "0"}))
    assert status == 400 and "limit" in body["error"]


def test_unknown_envoy_is_a_json_404_when_forwarded(vigo: Vigo) -> None:
    status, body = call(vigo, "/api/envoys/{envoy_id:.+}", Query({}), envoy_id="web-01")
    assert status == 404 and body["envoy_id"] == "web-01"


def test_dashboard_page_is_self_contained(vigo: Vigo) -> None:
    status, body = call(vigo, "/envoys/{envoy_id:.+}", Query({}), envoy_id="web-01")
    html = body.decode("utf-8")
    assert status == 200 and "/*vigo:css*/" not in html and "<script" in html
