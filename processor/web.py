"""HTTP surfaces on every worker: health, readiness, metrics, the JSON API, the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from processor.app import Vigo


def register_web(vigo: Vigo) -> None:
    app = vigo.app

    @app.page("/healthz")
    class Health(View):
        """Alive: the process answers."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        """Ready: assigned, recovered, and caught up with its input partitions."""

        async def get(self, request: Request) -> Response:
            busy = app.rebalancing or app.in_recovery
            caught_up = vigo.envoys.catch_up.all_caught_up()
            body: dict[str, Any] = {
                "ready": not busy and caught_up,
                "rebalancing": app.rebalancing,
                "recovering": app.in_recovery,
                "caught_up": caught_up,
            }
            return self.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                generate_latest(vigo.metrics.registry), content_type=CONTENT_TYPE_LATEST
            )
