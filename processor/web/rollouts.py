"""`GET /api/rollouts[?label=KEY=VALUE]` (SPEC 11.2): the rollout of the fleet or of one
label group, answered by the fleet owner (`processor.rollouts_fleet`) and forwarded to it
from any other worker, as `/api/compliance` is. Its OpenAPI description is here too.

The body is exactly the SPEC's: `{"newest": {"version", "first_seen", "envoys",
"converged", "reached_50_at", "reached_90_at"} or null, "versions": [{"version", "envoys",
"first_seen"}...], "stuck": N}`. A label that is not `KEY=VALUE` or whose key is not in
`fleet.group_by` is a 400, a group with no active envoys a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response

from processor.rollouts_fleet import FLEET_SCOPE, rollout_doc
from processor.web.base import VigoView
from projections.groups import parse_label

if TYPE_CHECKING:
    from processor.aggregator import FleetAggregator

Schema = dict[str, Any]


def rollouts_answer(aggregator: FleetAggregator, label: str | None) -> tuple[int, dict[str, Any]]:
    """The document for the fleet or a group, on the fleet owner: as of its last tick, or
    worked out from its tables before the first."""
    rollouts = aggregator.rollouts
    if rollouts is None:
        return 404, {"error": "rollouts are not kept by this worker"}
    scope = FLEET_SCOPE
    if label is not None:
        parsed = parse_label(label)
        if parsed is None:
            return 400, {"error": "label must be KEY=VALUE, e.g. env=prod", "label": label}
        if parsed[0] not in rollouts.group_by:
            keys = ", ".join(rollouts.group_by) or "none"
            error = f"{parsed[0]!r} is not a key of fleet.group_by ({keys})"
            return 400, {"error": error, "label": label}
        scope = label
    views = rollouts.views
    if not views:
        now_ms = int(aggregator.clock() * 1000)
        views = rollouts.compute(aggregator._parts(), aggregator.total_groups(), now_ms)
    view = views.get(scope)
    if view is None:
        error = f"no envoys in group {label!r} (or beyond fleet.max_group_values: in (other))"
        return 404, {"error": error, "label": label}
    return 200, rollout_doc(view, rollouts.marks(scope))


class Rollouts(VigoView):
    """Rollouts by `config_version`, answered by the fleet owner."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        aggregator = self.ctx.aggregator
        if aggregator.current() is not None:
            status, doc = rollouts_answer(aggregator, request.query.get("label"))
            return self.json(doc, status=status)
        return await self.from_fleet_owner(request)


# -- the API description (`processor.web.openapi`) ------------------------------------------


def rollouts_schemas() -> dict[str, Schema]:
    count: Schema = {"type": "integer", "minimum": 0}
    time: Schema = {"type": ["string", "null"], "format": "date-time"}
    string: Schema = {"type": "string"}

    def closed(properties: dict[str, Schema]) -> Schema:
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    newest = closed(
        {
            "version": string,
            "first_seen": time,
            "envoys": count,
            "converged": count,
            "reached_50_at": time,
            "reached_90_at": time,
        }
    )
    version = closed({"version": string, "envoys": count, "first_seen": time})
    return {
        "Rollouts": closed(
            {
                "newest": {
                    "oneOf": [{"$ref": "#/components/schemas/RolloutNewest"}, {"type": "null"}]
                },
                "versions": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/RolloutVersion"},
                    "description": "rollouts.max_versions most common, the newest, "
                    "`(none)` and `(other)`, most envoys first",
                },
                "stuck": count,
            }
        ),
        "RolloutNewest": newest,
        "RolloutVersion": version,
    }


CONFIG_VERSION_PARAMETER: Schema = {
    "name": "config_version",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    "description": "Only envoys on this `config_version` (SPEC 11.2); `(none)`: without one",
}
