"""The API described (SPEC 11.5): the OpenAPI 3.1 document of every `/api/*` route, served
at `GET /api/openapi.json` behind the token like the rest of the API.

It is built here, next to the views and documents it describes, from the same constants
(the statuses, the limits, the status-filter grammar, the error body), so a change to a
query's rules changes the document with it; `tests/test_openapi.py` fails when a route of
`ROUTES` under `/api` is not described (or the document describes one that is not served),
and `tests/test_api_fuzz.py` fuzzes a live worker against the document.

The document is a worker's own: the `label` of `/api/compliance` takes only the keys of
its `fleet.group_by` (any other key is a 400), so the keys are named in the document, and
without `group_by` the parameter is not offered at all.
"""

from __future__ import annotations

import re
from typing import Any

from processor.web.documents import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STATUS_FILTER_PATTERN,
)
from processor.web.resources import resources_parameters, resources_schemas
from processor.web.rollouts import CONFIG_VERSION_PARAMETER, rollouts_schemas
from projections.status import STATUS_ALIASES
from topics.statuses import ACTIVE_STATUSES, RunOutcome, Status

OPENAPI_PATH = "/api/openapi.json"
#: The cursor's format name: an annotation for readers (and the fuzzer's generator).
CURSOR_FORMAT = "vigo-cursor"
JSON = "application/json"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def obj(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """A closed object: every property required but `optional`, nothing else."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
COUNT: Schema = {"type": "integer", "minimum": 0}
#: Times the worker writes (`topics.timestamps.iso_from_ms`): RFC 3339, UTC, milliseconds.
TIME: Schema = {"type": "string", "format": "date-time"}
#: Times an envoy reported, kept as it sent them.
REPORTED_TIME: Schema = {"type": "string", "description": "RFC 3339, as the envoy sent it"}
PERCENT: Schema = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
STRINGS: Schema = {"type": "array", "items": STRING}


def numbers_schemas() -> dict[str, Schema]:
    """The fleet's numbers, a group's, and the breakdown by status."""
    by_status = obj({status.value: COUNT for status in ACTIVE_STATUSES})
    numbers = {
        "active": COUNT,
        "compliant": COUNT,
        "percent": PERCENT,
        "by_status": ref("ByStatus"),
        "inactive": COUNT,
        "revoked": COUNT,
    }
    judged = {"threshold": PERCENT, "breached": {"type": "boolean"}}
    point = obj({"at": TIME, "percent": PERCENT})
    groups = {
        "type": "object",
        "description": "label key -> label value (`(none)`, `(other)` included) -> numbers",
        "additionalProperties": {"type": "object", "additionalProperties": ref("GroupNumbers")},
    }
    fleet = obj(
        {
            "at": TIME,
            **numbers,
            **judged,
            "history": {"type": "array", "items": point},
            "groups": groups,
        },
        optional=("groups",),
    )
    return {
        "ByStatus": by_status,
        "GroupNumbers": obj(numbers),
        "Compliance": fleet,
        "GroupCompliance": obj({"at": TIME, "label": STRING, **numbers, **judged}),
    }


def envoy_schemas() -> dict[str, Schema]:
    """A row of the lists, one envoy with its drift history, the pages."""
    row = {
        "envoy_id": STRING,
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "since": TIME,
        "last_seen": nullable(TIME),
        "labels": {"type": "object", "additionalProperties": STRING},
    }
    run = obj(
        {
            "run_id": STRING,
            "finished_at": REPORTED_TIME,
            "outcome": {"type": "string", "enum": [o.value for o in RunOutcome]},
            "changed": STRINGS,
            "failed": STRINGS,
            "errored_modules": STRINGS,
            "changed_count": COUNT,
            "failed_count": COUNT,
            "errored_modules_count": COUNT,
        }
    )
    detail = {
        **row,
        "last_reported_at": nullable(REPORTED_TIME),
        "interval_s": {"type": "integer", "minimum": 1},
        "consecutive_changed_runs": COUNT,
        "config_version": nullable(STRING),
        "stale": {"type": "boolean"},
        "history": {"type": "array", "items": ref("Run"), "description": "newest first"},
    }
    rows = {"type": "array", "items": ref("EnvoyRow")}
    return {
        "EnvoyRow": obj(row),
        "Run": run,
        "Envoy": obj(detail),
        "Cursor": {"type": "string", "pattern": CURSOR_PATTERN, "format": CURSOR_FORMAT},
        "EnvoyPage": obj(
            {"envoys": rows, "next_cursor": {"oneOf": [ref("Cursor"), {"type": "null"}]}}
        ),
        "LocalEnvoyPage": obj({"envoys": rows, "more": {"type": "boolean"}}),
        **explain_schemas(),
    }


def explain_schemas() -> dict[str, Schema]:
    """`GET /api/envoys/{id}/explain` (SPEC 11.1, `processor.web.explain`)."""
    status = {"type": "string", "enum": [s.value for s in Status]}
    source = obj({"topic": STRING, "partition": COUNT, "offset": nullable(COUNT)})
    run = obj(
        {
            "run_id": STRING,
            "finished_at": REPORTED_TIME,
            "outcome": {"type": "string", "enum": [o.value for o in RunOutcome]},
            "config_version": nullable(STRING),
            "intentional": {"type": "boolean"},
            "source": source,
            "changed": STRINGS,
            "changed_count": COUNT,
            "failed": STRINGS,
            "failed_count": COUNT,
            "module_errors": {**STRINGS, "description": "the errored modules' names"},
            "module_errors_count": COUNT,
        }
    )
    liveness = obj(
        {
            "enrolled_at": TIME,
            "last_seen": nullable(TIME),
            "last_reported_at": nullable(REPORTED_TIME),
            "counted_from": TIME,
            "interval_s": {"type": "integer", "minimum": 1},
            "offline_at": nullable(TIME),
            "stale_at": nullable(TIME),
            "inactive_at": nullable(TIME),
            "stale": {"type": "boolean"},
        }
    )
    explanation = obj(
        {
            "envoy_id": STRING,
            "status": status,
            "since": TIME,
            "rule": obj({"status": status, "text": STRING, "section": STRING}),
            "evidence": {"type": "array", "items": ref("EvidenceRun"), "maxItems": 10},
            "consecutive_changed_runs": COUNT,
            "streak_truncated": {"type": "boolean"},
            "liveness": liveness,
            "config_version": obj(
                dict.fromkeys(("applied", "last_run", "newest_in_fleet"), nullable(STRING))
            ),
        }
    )
    return {"Explanation": explanation, "EvidenceRun": run}


def other_schemas() -> dict[str, Schema]:
    alert = obj(
        {
            "id": STRING,
            "event": STRING,
            "created_at": REPORTED_TIME,
            "sent_at": nullable(REPORTED_TIME),
            "outcome": {"type": "string", "enum": ["pending", "sent", "rejected"]},
            "attempts": COUNT,
        }
    )
    error = obj(
        {
            "error": {"type": "string", "description": "what went wrong, for a person"},
            "envoy_id": {"type": "string", "description": "the unknown envoy (404)"},
            "label": {"type": "string", "description": "the refused or unknown group"},
        },
        optional=("envoy_id", "label"),
    )
    return {
        "Alerts": obj({"alerts": {"type": "array", "items": ref("Alert"), "maxItems": 100}}),
        "Alert": alert,
        "Error": error,
        "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
    }


RESPONSE_TEXT = {
    "400": "A parameter the API cannot accept",
    "401": "No token, or not the processor's token (when `web.auth_token_file` is set)",
    "404": "Not found",
    "503": "The worker that owns the data could not answer (rebalancing, or unreachable)",
}


def error_response(code: str) -> Schema:
    answer: Schema = {
        "description": RESPONSE_TEXT[code],
        "content": {JSON: {"schema": ref("Error")}},
    }
    if code == "401":
        answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return answer


def operation(
    summary: str, body: str, errors: tuple[str, ...], parameters: list[Schema] | None = None
) -> Schema:
    """A GET answering 200 with `body` (a component) and the JSON error for `errors`."""
    responses = {"200": {"description": summary, "content": {JSON: {"schema": ref(body)}}}}
    responses.update({code: error_response(code) for code in ("401", *errors)})
    op: Schema = {"summary": summary, "operationId": body[0].lower() + body[1:]}
    if parameters:
        op["parameters"] = parameters
    return {"get": {**op, "responses": responses}}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


STATUS_WORDS = ", ".join([*(s.value for s in Status), *STATUS_ALIASES])
LIST_PARAMETERS = [
    query(
        "status",
        {"type": "string", "pattern": f"^{STATUS_FILTER_PATTERN}$"},
        f"Statuses, comma-separated ({STATUS_WORDS}; `errors` = failed and degraded); "
        "empty or absent: every active status",
    ),
    query(
        "label",
        {"type": "string", "pattern": "^[^=]+="},
        "`KEY=VALUE`: only envoys with that label; `KEY=(none)`: only envoys without the key",
    ),
    query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Envoys per page",
    ),
    query(
        "cursor",
        ref("Cursor"),
        "The `next_cursor` of the previous page (opaque; any worker takes it); empty: the first",
    ),
    CONFIG_VERSION_PARAMETER,
]


def label_pattern(group_by: tuple[str, ...]) -> str:
    """`KEY=...` for the keys of `fleet.group_by`, the keys matched literally (a key may
    hold any character but `=`; the few regex metacharacters are escaped)."""
    keys = "|".join(re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", key) for key in group_by)
    return f"^(?:{keys})="


def compliance_parameters(group_by: tuple[str, ...]) -> list[Schema]:
    if not group_by:
        return []
    text = (
        f"`KEY=VALUE`, KEY one of `fleet.group_by` ({', '.join(group_by)}): that group's "
        "numbers (no history); `KEY=(none)`: envoys without the label"
    )
    return [query("label", {"type": "string", "pattern": label_pattern(group_by)}, text)]


def paths(group_by: tuple[str, ...]) -> dict[str, Schema]:
    envoy_id = {
        "name": "envoy_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "The envoy id, percent-encoded (`/` as `%2F`)",
    }
    compliance = operation(
        "Fleet numbers, or one group's with `label`",
        "Compliance",
        ("400", "404", "503"),
        compliance_parameters(group_by),
    )
    if group_by:
        schema = {"oneOf": [ref("Compliance"), ref("GroupCompliance")]}
        compliance["get"]["responses"]["200"]["content"][JSON]["schema"] = schema
    return {
        "/api/compliance": compliance,
        "/api/envoys": operation(
            "Envoys by status, in envoy id order, one page",
            "EnvoyPage",
            ("400", "503"),
            LIST_PARAMETERS,
        ),
        "/api/envoys/{envoy_id}": operation(
            "One envoy and its drift history", "Envoy", ("404", "503"), [envoy_id]
        ),
        "/api/envoys/{envoy_id}/explain": operation(
            "Why one envoy has its status", "Explanation", ("404", "503"), [envoy_id]
        ),
        "/api/local/envoys": operation(
            "Internal: this worker's own matches, for another worker's listing",
            "LocalEnvoyPage",
            ("400",),
            LIST_PARAMETERS,
        ),
        "/api/alerts": operation("The last 100 mails, newest first", "Alerts", ("503",)),
        "/api/resources/top": operation(
            "The resources most often changed, failed or non-idempotent (SPEC 11.3)",
            "ResourcesTop",
            ("400", "404", "503"),
            resources_parameters(compliance_parameters(group_by)),
        ),
        "/api/rollouts": operation(
            "Rollouts by config_version, of the fleet or one group (SPEC 11.2)",
            "Rollouts",
            ("400", "404", "503"),
            compliance_parameters(group_by),
        ),
        OPENAPI_PATH: operation("This document", "OpenAPI", ()),
    }


def openapi_document(group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a worker with these `fleet.group_by` keys."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigo compliance processor API",
            "version": "1",
            "description": "Every worker answers every route (SPEC section 7). Errors are "
            '`{"error": "..."}`; lists page with an opaque `cursor`.',
        },
        "security": [{"bearerToken": []}],
        "paths": paths(group_by),
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The contents of `web.auth_token_file`; without one "
                    "configured the API is open",
                }
            },
            "schemas": {
                **numbers_schemas(),
                **envoy_schemas(),
                **other_schemas(),
                **resources_schemas(),
                **rollouts_schemas(),
            },
        },
    }
