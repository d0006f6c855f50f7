"""What every view is built on: the `WebContext` the views read, and `VigoView`, a Faust view
bound to it, with the token check every `/api/*` view asks first and the way a request
about one envoy reaches the worker that owns it.

Kept apart from `processor.web.views` (the routes) so that views living in their own
modules (`processor.web.explain`) subclass it without an import cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View

from processor.web.cluster import FORWARDED, Cluster, PeerError
from processor.web.documents import bearer_matches
from processor.web.security import UNAUTHORIZED_ERROR, UNAUTHORIZED_HEADERS

if TYPE_CHECKING:
    from processor.aggregator import FleetAggregator
    from processor.envoys import EnvoyProcessor
    from processor.metrics import Metrics


@dataclass(frozen=True)
class WebContext:
    """What the views read: the app's state, the envoy and fleet projections, metrics and
    the cluster view. Built once per app; a test can build one without HTTP."""

    app: faust.App
    envoys: EnvoyProcessor
    aggregator: FleetAggregator
    metrics: Metrics
    cluster: Cluster
    pages: Mapping[str, str]
    #: The alert journal where this worker owns the outbox (else None); None without
    #: alerting (`GET /api/alerts`).
    alerts: Callable[[], dict[str, Any] | None] | None = None
    alerts_topic: str = ""


class VigoView(View):
    """A Faust view bound to a `WebContext` (`bind`), so the classes stay module-level."""

    ctx: WebContext

    @classmethod
    def bind(cls, ctx: WebContext) -> type[VigoView]:
        return type(cls.__name__, (cls,), {"ctx": ctx})

    def relay(self, status: int, body: bytes) -> Response:
        return self.bytes(body, content_type="application/json", status=status)

    def refused(self, request: Request) -> Response | None:
        """401 unless the request carries the API's bearer token (when one is set):
        every `/api/*` view asks this first (SPEC 10.7)."""
        token = self.ctx.cluster.token
        if token is None or bearer_matches(request.headers.get("Authorization"), token):
            return None
        return self.json({"error": UNAUTHORIZED_ERROR}, status=401, headers=UNAUTHORIZED_HEADERS)

    async def from_fleet_owner(self, request: Request) -> Response:
        """The same request answered by the worker that owns the fleet projection (this
        one does not, or not yet): 503 while it moves or cannot be asked."""
        if FORWARDED in request.headers:
            return self.error(503, "the fleet projection is moving between workers; retry")
        cluster = self.ctx.cluster
        owner = cluster.fleet_owner()
        if owner is None or owner == cluster.self_url:
            return self.error(503, "the fleet projection is not ready yet; retry")
        try:
            status, body = await cluster.get(owner, request.rel_url.raw_path_qs)
        except PeerError as exc:
            return self.error(503, str(exc))
        return self.relay(status, body)

    async def from_envoy_owner(self, request: Request, envoy_id: str) -> Response:
        """The same request answered by the worker that owns the envoy (this one does
        not): the owner by the default partitioner first, the others only if it says no;
        404 when none knows the envoy, 503 when one could not be asked."""
        unknown = self.error(404, f"unknown envoy {envoy_id!r}", envoy_id=envoy_id)
        if FORWARDED in request.headers:
            return unknown
        cluster = self.ctx.cluster
        owner = cluster.envoy_owner(envoy_id)
        others = [u for u in cluster.members() if u not in (owner, cluster.self_url)]
        asked = [owner] if owner is not None and owner != cluster.self_url else []
        for group in (asked, others):
            answers = await asyncio.gather(
                *(cluster.get(url, request.rel_url.raw_path_qs) for url in group),
                return_exceptions=True,
            )
            for answer in answers:
                if not isinstance(answer, BaseException) and answer[0] == 200:
                    return self.relay(*answer)
            failed = [a for a in answers if isinstance(a, BaseException) or a[0] != 404]
            if failed:
                first = failed[0]
                reason = str(first) if isinstance(first, BaseException) else first[0]
                return self.error(503, f"not every worker could be asked: {reason}")
        return unknown
