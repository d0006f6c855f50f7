"""`GET /api/resources/top` (SPEC 11.3): the resources most often changed, failed or
non-idempotent over `resources.window`, fleet-wide or for one counted group.

Answered by the fleet owner, which merges the partitions' summaries
(`processor.resources_fleet`); any other worker checks the query (every worker has the
same configuration) and forwards it there, as `/api/compliance` is forwarded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from faust.web import Request, Response

from processor.resources import FLEET
from processor.web.base import VigoView
from processor.web.documents import BadQuery
from projections.groups import parse_label
from projections.resources import KINDS

TOP_PATH: Final = "/api/resources/top"
DEFAULT_TOP: Final = 20
MAX_TOP: Final = 1000


class NotCounted(LookupError):
    """A group of `fleet.group_by` that is not counted on its own: 404."""


@dataclass(frozen=True, slots=True)
class TopQuery:
    kind: str
    scope: str
    limit: int


def parse_top_query(
    query: Mapping[str, str], group_by: Sequence[str], counted: Sequence[str]
) -> TopQuery:
    """`kind` (default `changed`), `limit` (1 to `MAX_TOP`, default `DEFAULT_TOP`) and
    `label` (`KEY=VALUE`: KEY of `fleet.group_by`, else `BadQuery`; the group counted on
    its own, `resources.groups`, else `NotCounted`)."""
    kind = query.get("kind", "changed")
    if kind not in KINDS:
        raise BadQuery(f"kind must be one of {', '.join(KINDS)}")
    raw_limit = query.get("limit", str(DEFAULT_TOP))
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_TOP:
        raise BadQuery(f"limit must be an integer from 1 to {MAX_TOP}")
    label = query.get("label")
    scope = FLEET
    if label is not None:
        parsed = parse_label(label)
        if parsed is None:
            raise BadQuery("label must be KEY=VALUE, e.g. role=db")
        if parsed[0] not in group_by:
            keys = ", ".join(group_by) or "none"
            raise BadQuery(f"{parsed[0]!r} is not a key of fleet.group_by ({keys})")
        if label not in counted:
            listed = ", ".join(counted) or "none"
            raise NotCounted(
                f"group {label!r} is not counted on its own (resources.groups: {listed})"
            )
        scope = label
    return TopQuery(kind, scope, int(raw_limit))


class ResourcesTop(VigoView):
    """The top drifting resources, answered by the fleet owner."""

    async def get(self, request: Request) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        aggregator = self.ctx.aggregator
        parts = aggregator.resources
        if parts is None:
            return self.error(404, "resources are not counted on this worker")
        label = request.query.get("label")
        named = {} if label is None else {"label": label}
        try:
            query = parse_top_query(
                request.query, aggregator.groups.group_by, parts.settings.groups
            )
        except BadQuery as exc:
            return self.json({"error": str(exc), **named}, status=400)
        except NotCounted as exc:
            return self.json({"error": str(exc), **named}, status=404)
        if aggregator.owns_fleet() and not self.ctx.app.in_recovery:
            return self.json(parts.top_doc(query.kind, query.scope, query.limit))
        return await self.from_fleet_owner(request)


# -- the route described (`processor.web.openapi`) -------------------------------------------


def resources_parameters(compliance_label: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`kind`, `limit`, and `label` like `/api/compliance`'s (only with `fleet.group_by`)."""
    kinds = ["changed", "failed", "non_idempotent"]
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": DEFAULT_TOP}
    parameters: list[dict[str, Any]] = [
        _query("kind", {"type": "string", "enum": kinds, "default": "changed"}, "What runs did"),
        _query("limit", limit, "Resources in the answer, most runs first"),
    ]
    for label in compliance_label:
        text = "a group counted on its own (`resources.groups`); another group is a 404"
        parameters.append({**label, "description": f"`KEY=VALUE`, KEY of `fleet.group_by`: {text}"})
    return parameters


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def resources_schemas() -> dict[str, dict[str, Any]]:
    count = {"type": "integer", "minimum": 0}
    resource = {
        "id": {"type": "string"},
        "module": {"type": "string"},
        "runs": {**count, "description": "runs it was counted in; never below the truth"},
        "envoys": {**count, "description": "distinct envoys (exact up to 16, then estimated)"},
        "error": {**count, "description": "the most `runs` can be over the truth"},
    }
    top = {
        "window_s": {"type": "integer", "minimum": 3600},
        "resources": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/DriftingResource"},
            "maxItems": MAX_TOP,
        },
    }
    return {"ResourcesTop": _closed(top), "DriftingResource": _closed(resource)}


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip
