"""HTTP surfaces on every worker (SPEC section 7): health, readiness, metrics, the JSON
API and the dashboard.

Each worker holds only its own partitions of the envoy table, and only the fleet owner
has the fleet numbers, so a request reaching a worker that does not own the data is
answered from the owner:

- `/api/compliance` is forwarded to the fleet owner (the member assigned the one
  partition of the fleet-partials topic);
- `/api/envoys/{id}` is answered locally when the envoy's partition is owned here, else
  forwarded to the owner of the key's partition as Kafka's default (murmur2) partitioner
  places it; should the producers partition differently, the other workers are asked;
  `/api/envoys/{id}/explain` the same way (`processor.web.explain`);
- `/api/envoys` is a scatter-gather over every member's `/api/local/envoys`;
- `/api/alerts` is forwarded to the owner of the alert outbox's one partition.

A forwarded request carries `X-Vigo-Forwarded` and is never forwarded again, so a stale
view of the assignment during a rebalance cannot make requests loop.

This module holds the views and their wiring (their base, `VigoView`, and the context
they read are in `processor.web.base`); the documents they answer with are built in
`processor.web.documents`, and `processor.web.cluster` knows the owners and asks them.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from faust.web import Request, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from processor.web.base import VigoView
from processor.web.base import WebContext as WebContext  # topology builds it from here
from processor.web.cluster import FORWARDED, PeerError
from processor.web.documents import (
    BadQuery,
    ListQuery,
    compliance_doc,
    envoy_detail,
    group_compliance_doc,
    merge_pages,
    parse_list_query,
    select_envoys,
)
from processor.web.explain import EnvoyExplain
from processor.web.openapi import OPENAPI_PATH, openapi_document
from processor.web.resources import TOP_PATH, ResourcesTop
from processor.web.rollouts import Rollouts
from processor.web.security import SECURITY_HEADERS
from projections.envoy import EnvoyState

if TYPE_CHECKING:
    from processor.envoys import EnvoyProcessor


def owned_matches(envoys: EnvoyProcessor, query: ListQuery) -> list[EnvoyState]:
    """This worker's candidates for a page: its first `limit + 1` matches, picked before
    the envoys are decoded (the table keeps them encoded)."""
    return envoys.owned_envoys(
        query.statuses, query.after, query.limit + 1, query.label, query.config_version
    )


def _dashboard_file(name: str) -> str:
    return resources.files("processor.web").joinpath("dashboard", name).read_text(encoding="utf-8")


def dashboard_page(name: str) -> str:
    """A page as it is served: its stylesheet and scripts are static files under
    `/static/` (no inline script or style, which the pages' CSP would block)."""
    return _dashboard_file(name)


#: The dashboard's static files (`GET /static/{name}`), by name: their content type.
ASSET_TYPES = {
    "vigo.css": "text/css; charset=utf-8",
    "vigo.js": "text/javascript; charset=utf-8",
    "compliance.js": "text/javascript; charset=utf-8",
    "envoy.js": "text/javascript; charset=utf-8",
    "explain.js": "text/javascript; charset=utf-8",
    "resources.js": "text/javascript; charset=utf-8",
    "rollouts.js": "text/javascript; charset=utf-8",
}


@cache
def dashboard_asset(name: str) -> bytes:
    return _dashboard_file(name).encode("utf-8")


class Health(VigoView):
    """Alive: the process answers."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "ok"})


def readiness(ctx: WebContext) -> dict[str, Any]:
    """Ready: assigned, recovered, caught up with its input partitions, and the broker
    answered the last call made to it (SPEC 11.4: 503 during a broker outage)."""
    app = ctx.app
    busy = app.rebalancing or app.in_recovery
    caught_up = ctx.envoys.catch_up.all_caught_up()
    broker = ctx.envoys.catch_up.broker.reachable
    return {
        "ready": not busy and caught_up and broker,
        "rebalancing": app.rebalancing,
        "recovering": app.in_recovery,
        "caught_up": caught_up,
        "broker": broker,
        "workers": len(ctx.cluster.members()),
        "fleet_owner": ctx.aggregator.owns_fleet(),
    }


class Ready(VigoView):
    async def get(self, request: Request) -> Response:
        body = readiness(self.ctx)
        return self.json(body, status=200 if body["ready"] else 503)


class MetricsView(VigoView):
    """Prometheus text format. aiohttp refuses a content type that names a charset
    next to text, so the header is given as bytes with its full value."""

    async def get(self, request: Request) -> Response:
        return self.bytes(
            generate_latest(self.ctx.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
        )


class Compliance(VigoView):
    """Fleet numbers, answered by the fleet owner."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        aggregator = self.ctx.aggregator
        snapshot = aggregator.current()
        if snapshot is not None:
            label = request.query.get("label")
            if label is None:
                return self.json(compliance_doc(snapshot, bool(aggregator.groups.group_by)))
            status, doc = group_compliance_doc(snapshot, aggregator, label)
            return self.json(doc, status=status)
        return await self.from_fleet_owner(request)


class LocalEnvoys(VigoView):
    """Internal: this worker's own matches for a scatter-gather listing."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        try:
            query = parse_list_query(request.query)
        except BadQuery as exc:
            return self.error(400, str(exc))
        items, more = select_envoys(owned_matches(self.ctx.envoys, query), query)
        return self.json({"envoys": items, "more": more})


class Envoys(VigoView):
    """Envoys by status, from every worker, in envoy id order, paginated."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        try:
            query = parse_list_query(request.query)
        except BadQuery as exc:
            return self.error(400, str(exc))
        cluster = self.ctx.cluster
        pages = [select_envoys(owned_matches(self.ctx.envoys, query), query)]
        peers = [url for url in cluster.members() if url != cluster.self_url]
        path_qs = "/api/local/envoys?" + urlencode(query.local_params())
        answers = await asyncio.gather(
            *(cluster.get(url, path_qs) for url in peers), return_exceptions=True
        )
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                return self.error(503, str(answer))
            status, body = answer
            if status != 200:
                return self.error(503, f"worker {url} answered {status}")
            doc = orjson.loads(body)
            pages.append((doc["envoys"], bool(doc["more"])))
        return self.json(merge_pages(pages, query.limit))


class Envoy(VigoView):
    """One envoy, answered by the worker that owns its partition."""

    async def get(self, request: Request, envoy_id: str) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        state = self.ctx.envoys.owned(envoy_id)
        if state is not None:
            return self.json(envoy_detail(state, self.ctx.envoys.rules))
        return await self.from_envoy_owner(request, envoy_id)


class Alerts(VigoView):
    """The last mails of the alert sender, answered by the worker that owns the outbox."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        if self.ctx.alerts is None:
            return self.json({"alerts": []})  # no event sends mail
        doc = self.ctx.alerts()
        if doc is not None:
            return self.json(doc)
        if FORWARDED in request.headers:
            return self.error(503, "the alert outbox is moving between workers; retry")
        cluster = self.ctx.cluster
        owner = cluster.owner_of(self.ctx.alerts_topic, 0)
        if owner is None or owner == cluster.self_url:
            return self.error(503, "the alert outbox is not assigned yet; retry")
        try:
            status, body = await cluster.get(owner, request.rel_url.raw_path_qs)
        except PeerError as exc:
            return self.error(503, str(exc))
        return self.relay(status, body)


class OpenAPI(VigoView):
    """The API described (SPEC 11.5): `processor.web.openapi`, for this worker's groups."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        return self.json(openapi_document(tuple(self.ctx.aggregator.groups.group_by)))


class ApiNotFound(VigoView):
    """An `/api/*` path no route takes is a JSON 404 like every API error, not aiohttp's
    text one: `/api/envoys/a%0Ab` (`.+` stops at the line break), `/api/envoys/` (a
    client resolves the envoy id `.` away)."""

    async def get(self, request: Request, path: str) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        return self.error(404, "not found")


class CompliancePage(VigoView):
    """The dashboard: gauge, breakdown by status, sparkline, envoys needing care."""

    async def get(self, request: Request) -> Response:
        return self.html(self.ctx.pages["compliance.html"], headers=dict(SECURITY_HEADERS))


class EnvoyPage(VigoView):
    """One envoy's status and drift-history timeline."""

    async def get(self, request: Request, envoy_id: str) -> Response:
        return self.html(self.ctx.pages["envoy.html"], headers=dict(SECURITY_HEADERS))


class StaticAsset(VigoView):
    """The pages' stylesheet and scripts: no data, no token (SPEC 10.7)."""

    async def get(self, request: Request, name: str) -> Response:
        content_type = ASSET_TYPES.get(name)
        if content_type is None:
            return self.error(404, "no such file")
        return self.bytes(
            dashboard_asset(name),
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )


class Root(VigoView):
    """`GET /` goes to the dashboard (SPEC 11.5), in place of Faust's index."""

    async def get(self, request: Request) -> Response:
        return self.text("", status=302, headers={"Location": "/compliance"})


#: Every route of the web server. A route registered anywhere else is refused (404) by
#: `processor.web.security`'s middleware, which is how Faust's own apps stay off.
ROUTES: tuple[tuple[str, type[VigoView]], ...] = (
    ("/", Root),
    ("/healthz", Health),
    ("/readyz", Ready),
    ("/metrics", MetricsView),
    ("/api/compliance", Compliance),
    ("/api/local/envoys", LocalEnvoys),
    ("/api/envoys", Envoys),
    # Before the envoy's own route, whose `.+` would take `.../explain` as part of the id.
    ("/api/envoys/{envoy_id:.+}/explain", EnvoyExplain),
    ("/api/envoys/{envoy_id:.+}", Envoy),
    ("/api/alerts", Alerts),
    ("/api/rollouts", Rollouts),
    (TOP_PATH, ResourcesTop),
    (OPENAPI_PATH, OpenAPI),
    ("/compliance", CompliancePage),
    ("/envoys/{envoy_id:.+}", EnvoyPage),
    ("/static/{name}", StaticAsset),
    # Last: aiohttp resolves in registration order, so it takes what no route above takes,
    # line breaks included (`.` stops at one; no envoy id holds a control character).
    ("/api/{path:[\\s\\S]*}", ApiNotFound),
)

#: Every path this worker serves; the security middleware refuses any other route.
ROUTE_PATHS = tuple(path for path, _ in ROUTES)


def register_web(ctx: WebContext) -> None:
    for path, view in ROUTES:
        ctx.app.page(path)(view.bind(ctx))
