"""What every response of the web server carries, and what no route may skip (SPEC 10.7,
11.4): the pages' Content-Security-Policy and `nosniff`, the bearer token in front of
every `/api/*` path (registered or not), and none of Faust's own web apps.

Faust's built-in blueprints (its `/router`, `/table`, `/graph`, `/performance` and
statistics views) are turned off by their public settings in `processor.app`. Two things
those settings do not cover: Faust's `APP_WEB_*_ENABLED` environment variables override
them, and its `production_index` (`GET /` answering `{"status": "OK"}`, on whenever its
statistics are off) has no setting at all. So the middleware here, which goes in through
Faust's public `web_application_options`, answers 404 for any route that is not one of
ours (`served`), whoever registered it; our `/` (a redirect to the dashboard) is
registered before Faust applies its blueprints at start, and aiohttp resolves routes in
registration order, so Faust's index at `/` is never reached either."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from processor.web.documents import bearer_matches

#: SPEC 11.4: no script, style, frame or fetch from anywhere but this worker, and no
#: framing by another site. Sent on every response (harmless on JSON and text).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
UNAUTHORIZED_ERROR = "this API needs the processor's bearer token (Authorization: Bearer ...)"
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="vigo"'}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def unauthorized() -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": UNAUTHORIZED_ERROR}),
        status=401,
        content_type="application/json",
        headers=UNAUTHORIZED_HEADERS,
    )


def canonical(path: str) -> str:
    """aiohttp's canonical form of a route path: `/envoys/{envoy_id:.+}` is
    `/envoys/{envoy_id}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def security_middleware(token: str | None, served: Iterable[str]) -> Any:
    """An aiohttp middleware: 401 for any `/api/*` path without the token (when one is
    set), before routing, so an unknown API path tells nothing either; 404 for a route
    that is not one of `served` (our route paths); the security headers on every
    answer, errors included."""
    ours = frozenset(canonical(path) for path in served)

    @web.middleware
    async def secure(request: web.Request, handler: Handler) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            if refuses(request):
                response = unauthorized()
            elif not_ours(request):
                response = web.json_response({"error": "not found"}, status=404)
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    def refuses(request: web.Request) -> bool:
        if token is None or not is_api_path(request.path):
            return False
        return not bearer_matches(request.headers.get("Authorization"), token)

    def not_ours(request: web.Request) -> bool:
        match = request.match_info
        resource = match.route.resource if match.http_exception is None else None
        return resource is not None and resource.canonical not in ours

    return secure
