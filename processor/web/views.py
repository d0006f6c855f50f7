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
- `/api/envoys` is a scatter-gather over every member's `/api/local/envoys`;
- `/api/alerts` is forwarded to the owner of the alert outbox's one partition.

A forwarded request carries `X-Vigo-Forwarded` and is never forwarded again, so a stale
view of the assignment during a rebalance cannot make requests loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.web import Request, Response, View
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from yarl import URL

from processor.fleet import group_doc, groups_doc
from projections.envoy import EnvoyState, Rules
from projections.fleet import FleetCounts
from projections.groups import in_group, parse_label
from projections.status import parse_status_filter
from topics.statuses import ACTIVE_STATUSES, Status
from topics.timestamps import iso_from_ms

if TYPE_CHECKING:
    from processor.envoys import EnvoyProcessor
    from processor.fleet import FleetAggregator, FleetSnapshot
    from processor.metrics import Metrics

#: Marks a request forwarded by another worker; its value is the sender's URL.
FORWARDED = "X-Vigo-Forwarded"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PEER_TIMEOUT_S = 5.0
#: What the list endpoint returns without `?status=`: every active envoy.
DEFAULT_STATUSES = frozenset(ACTIVE_STATUSES)


# -- documents (pure) --------------------------------------------------------------------


def compliance_doc(snapshot: FleetSnapshot, group_by: bool = False) -> dict[str, Any]:
    """The `vigo.fleet.convergence` numbers plus threshold, breach and sparkline history;
    `groups` as published when `fleet.group_by` is set."""
    doc = {
        "at": iso_from_ms(snapshot.at_ms),
        **numbers_doc(snapshot.counts, snapshot.threshold),
        "history": [
            {"at": iso_from_ms(at_ms), "percent": value} for at_ms, value in snapshot.history.points
        ],
    }
    if group_by:
        doc["groups"] = groups_doc(snapshot.groups)
    return doc


def numbers_doc(counts: FleetCounts, threshold: float | None) -> dict[str, Any]:
    """Numbers in the fleet's shape, with a threshold and whether they are below it."""
    percent = counts.percent
    return {
        **group_doc(counts),
        "threshold": threshold,
        "breached": percent is not None and threshold is not None and percent < threshold,
    }


def group_compliance_doc(
    snapshot: FleetSnapshot, aggregator: FleetAggregator, label: str
) -> tuple[int, dict[str, Any]]:
    """`GET /api/compliance?label=KEY=VALUE` (SPEC 10.2): the group's numbers in the fleet's
    shape (no history), its label, its threshold (its own, else the fleet's) and breach;
    400 for a key not in `fleet.group_by`, 404 for a value with no numbers."""
    parsed = parse_label(label)
    if parsed is None:
        return 400, {"error": "label must be KEY=VALUE, e.g. env=prod", "label": label}
    key, value = parsed
    if key not in aggregator.groups.group_by:
        keys = ", ".join(aggregator.groups.group_by) or "none"
        return 400, {"error": f"{key!r} is not a key of fleet.group_by ({keys})", "label": label}
    counts = snapshot.groups.get(key, {}).get(value)
    if counts is None:
        error = f"no envoys in group {label!r} (or beyond fleet.max_group_values: in (other))"
        return 404, {"error": error, "label": label}
    doc = {
        "at": iso_from_ms(snapshot.at_ms),
        "label": label,
        **numbers_doc(counts, aggregator.group_threshold(label)),
    }
    return 200, doc


def envoy_summary(state: EnvoyState) -> dict[str, Any]:
    """One row of the envoy list."""
    return {
        "envoy_id": state.envoy_id,
        "status": state.status.value,
        "since": iso_from_ms(state.status_since_ms),
        "last_seen": iso_from_ms(state.last_seen_ms) if state.last_seen_ms is not None else None,
        "labels": dict(state.labels),
    }


def envoy_detail(state: EnvoyState, rules: Rules) -> dict[str, Any]:
    """One envoy with its drift history, newest run first.

    `last_seen` is the Kafka record time that liveness uses; `last_reported_at` is the
    envoy's own `at` of that check-in or run, kept for display (SPEC section 3). Each run
    lists the ids the history kept (SPEC 10.9 bounds them) and counts them all.
    `interval_s` is the interval liveness judges by now (the envoy's own or the default).
    `config_version` is the version the envoy remembers (SPEC 10.1), null if none."""
    return {
        **envoy_summary(state),
        "last_reported_at": state.last_seen_at,
        "interval_s": state.effective_interval_s(rules),
        "consecutive_changed_runs": state.consecutive_changed,
        "config_version": state.config_version,
        "stale": state.stale,
        "history": [
            {
                "run_id": run.run_id,
                "finished_at": run.finished_at,
                "outcome": run.outcome.value,
                "changed": list(run.changed),
                "failed": list(run.failed),
                "errored_modules": list(run.errored_modules),
                "changed_count": run.changed_count,
                "failed_count": run.failed_count,
                "errored_modules_count": run.errored_modules_count,
            }
            for run in state.history
        ],
    }


class BadQuery(ValueError):
    """A query parameter the API cannot accept: answered with 400 and this message."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    statuses: frozenset[Status]
    after: str | None
    limit: int
    #: `(KEY, VALUE)`: only envoys in that group (`(none)`: without the label).
    label: tuple[str, str] | None = None

    def local_params(self) -> dict[str, str]:
        """The same query in normalized form, for the other workers' local endpoint."""
        params = {
            "status": ",".join(sorted(s.value for s in self.statuses)),
            "limit": str(self.limit),
        }
        if self.after is not None:
            params["cursor"] = encode_cursor(self.after)
        if self.label is not None:
            params["label"] = "=".join(self.label)
        return params

    def matches(self, state: EnvoyState) -> bool:
        after, label = self.after, self.label
        return (
            state.status in self.statuses
            and (after is None or state.envoy_id > after)
            and (label is None or in_group(state.labels, *label))
        )


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    try:
        statuses = parse_status_filter(query.get("status", ""))
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    cursor = query.get("cursor") or None
    label = None
    if "label" in query:
        label = parse_label(query["label"])
        if label is None:
            raise BadQuery("label must be KEY=VALUE, e.g. env=prod")
    after = decode_cursor(cursor) if cursor else None
    return ListQuery(statuses or DEFAULT_STATUSES, after, limit, label)


def encode_cursor(envoy_id: str) -> str:
    """Opaque to clients: the last envoy id of the page, URL-safe."""
    return base64.urlsafe_b64encode(envoy_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadQuery("cursor is not one this API returned") from None


def select_envoys(
    states: Iterable[EnvoyState], query: ListQuery
) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` matches after the cursor in envoy id order, and whether more
    follow."""
    matches = (s for s in states if query.matches(s))
    first = heapq.nsmallest(query.limit + 1, matches, key=lambda s: s.envoy_id)
    return [envoy_summary(s) for s in first[: query.limit]], len(first) > query.limit


def owned_matches(envoys: EnvoyProcessor, query: ListQuery) -> list[EnvoyState]:
    """This worker's candidates for a page: its first `limit + 1` matches, picked before
    the envoys are decoded (the table keeps them encoded)."""
    return envoys.owned_envoys(query.statuses, query.after, query.limit + 1, query.label)


def merge_pages(pages: Iterable[tuple[list[dict[str, Any]], bool]], limit: int) -> dict[str, Any]:
    """Each worker's first `limit` matches hold the fleet's first `limit`; the page ends
    the listing only when no worker had more and nothing was cut here."""
    by_id: dict[str, dict[str, Any]] = {}
    more = False
    for items, has_more in pages:
        more = more or has_more
        for item in items:
            by_id.setdefault(item["envoy_id"], item)
    ordered = [by_id[k] for k in sorted(by_id)]
    page = ordered[:limit]
    more = more or len(ordered) > limit
    next_cursor = encode_cursor(page[-1]["envoy_id"]) if more and page else None
    return {"envoys": page, "next_cursor": next_cursor}


def envoy_partition(envoy_id: str, partitions: int) -> int:
    """Where Kafka's default partitioner (murmur2, Java client and aiokafka) puts the key."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(envoy_id.encode("utf-8"), ids, ids))


# -- cluster view ------------------------------------------------------------------------


class PeerError(Exception):
    """Another worker could not be asked."""


@dataclass(frozen=True)
class Cluster:
    """Who owns what, from the assignment metadata every member receives, and a client
    to ask the others."""

    app: faust.App
    fleet_topic: str
    envoy_topic: str
    partitions: int
    #: The API's bearer token (SPEC 10.7): forwarded requests carry it.
    token: str | None = None

    @property
    def self_url(self) -> str:
        return str(self.app.conf.canonical_url)

    def _distribution(self) -> Mapping[str, Mapping[str, list[int]]]:
        """Member URL -> its active partitions of every non-changelog topic."""
        metadata: Mapping[str, Mapping[str, list[int]]] = self.app.router.external_topics_metadata()
        return metadata

    def members(self) -> list[str]:
        return sorted(self._distribution())

    def owner_of(self, topic: str, partition: int) -> str | None:
        for url, topics in self._distribution().items():
            if partition in topics.get(topic, ()):
                return url
        return None

    def fleet_owner(self) -> str | None:
        return self.owner_of(self.fleet_topic, 0)

    def envoy_owner(self, envoy_id: str) -> str | None:
        return self.owner_of(self.envoy_topic, envoy_partition(envoy_id, self.partitions))

    def _headers(self) -> dict[str, str]:
        headers = {FORWARDED: self.self_url}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def get(self, base_url: str, path_qs: str) -> tuple[int, bytes]:
        """GET from another worker, marked as forwarded."""
        url = URL(base_url.rstrip("/") + path_qs, encoded=True)
        try:
            async with self.app.http_client.get(
                url,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S),
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise PeerError(f"worker {base_url} did not answer: {reason}") from exc


def bearer_matches(header: str | None, token: str) -> bool:
    """`Bearer <token>`, compared in constant time (no timing hint about the token)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


# -- views -------------------------------------------------------------------------------


def _dashboard_file(name: str) -> str:
    return resources.files("processor.web").joinpath("dashboard", name).read_text(encoding="utf-8")


def dashboard_page(name: str) -> str:
    """A page with the shared stylesheet and script inlined: one request, no CDN."""
    page = _dashboard_file(name)
    return page.replace("/*vigo:css*/", _dashboard_file("vigo.css")).replace(
        "/*vigo:js*/", _dashboard_file("vigo.js")
    )


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
        return self.json(
            {"error": "this API needs the processor's bearer token (Authorization: Bearer ...)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="vigo"'},
        )


class Health(VigoView):
    """Alive: the process answers."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "ok"})


def readiness(ctx: WebContext) -> dict[str, Any]:
    """Ready: assigned, recovered, and caught up with its input partitions."""
    app = ctx.app
    busy = app.rebalancing or app.in_recovery
    caught_up = ctx.envoys.catch_up.all_caught_up()
    return {
        "ready": not busy and caught_up,
        "rebalancing": app.rebalancing,
        "recovering": app.in_recovery,
        "caught_up": caught_up,
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
        unknown = self.error(404, f"unknown envoy {envoy_id!r}", envoy_id=envoy_id)
        if FORWARDED in request.headers:
            return unknown
        cluster = self.ctx.cluster
        owner = cluster.envoy_owner(envoy_id)
        others = [u for u in cluster.members() if u not in (owner, cluster.self_url)]
        # The owner by the default partitioner first; the rest only if it says no.
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


class CompliancePage(VigoView):
    """The dashboard: gauge, breakdown by status, sparkline, envoys needing care."""

    async def get(self, request: Request) -> Response:
        return self.html(self.ctx.pages["compliance.html"])


class EnvoyPage(VigoView):
    """One envoy's status and drift-history timeline."""

    async def get(self, request: Request, envoy_id: str) -> Response:
        return self.html(self.ctx.pages["envoy.html"])


ROUTES: tuple[tuple[str, type[VigoView]], ...] = (
    ("/healthz", Health),
    ("/readyz", Ready),
    ("/metrics", MetricsView),
    ("/api/compliance", Compliance),
    ("/api/local/envoys", LocalEnvoys),
    ("/api/envoys", Envoys),
    ("/api/envoys/{envoy_id:.+}", Envoy),
    ("/api/alerts", Alerts),
    ("/compliance", CompliancePage),
    ("/envoys/{envoy_id:.+}", EnvoyPage),
)


def register_web(ctx: WebContext) -> None:
    for path, view in ROUTES:
        ctx.app.page(path)(view.bind(ctx))
