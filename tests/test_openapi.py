"""The API described (SPEC 11.5), kept next to the code: the document is valid OpenAPI
3.1, describes every `/api/*` route of `ROUTES` and nothing else, is served behind the
token, and its parameter schemas accept exactly what the views accept (so a client that
follows the document is never refused, and a value outside it always is)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import jsonschema_rs  # Schemathesis' validator: patterns read as ECMA-262 (`$` is the end)
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from processor.config import load_settings
from processor.topology import Vigo, build_app
from processor.web.documents import (
    BadQuery,
    decode_cursor,
    encode_cursor,
    parse_list_query,
)
from processor.web.openapi import OPENAPI_PATH, openapi_document
from processor.web.security import canonical
from processor.web.views import ROUTES, ApiNotFound
from topics.statuses import Status

GROUP_BY = ("role", "rack.zone", "a+b")
TOKEN = "t0ken"


def api_paths() -> set[str]:
    """The API's routes (not the fallback that answers the rest with a JSON 404)."""
    return {
        canonical(path)
        for path, view in ROUTES
        if path.startswith("/api/") and view is not ApiNotFound
    }


def parameter(path: str, name: str, group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """A parameter's schema, its `$ref` resolved."""
    doc = openapi_document(group_by)
    for param in doc["paths"][path]["get"].get("parameters", []):
        if param["name"] == name:
            schema: dict[str, Any] = param["schema"]
            if "$ref" in schema:
                schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            return schema
    raise KeyError(name)


def documented(path: str, name: str, value: object, group_by: tuple[str, ...] = ()) -> bool:
    """Whether `value` is in the parameter's schema, read as JSON Schema (ECMA-262) reads it."""
    return bool(jsonschema_rs.is_valid(parameter(path, name, group_by), value))


def accepted(**query: str) -> bool:
    try:
        parse_list_query(query)
    except BadQuery:
        return False
    return True


@pytest.mark.parametrize("group_by", [(), GROUP_BY])
def test_the_document_is_valid_openapi_3_1(group_by: tuple[str, ...]) -> None:
    doc = openapi_document(group_by)
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    # Served as JSON: it survives the encoder unchanged.
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_every_api_route_is_described_and_nothing_else() -> None:
    described = set(openapi_document(GROUP_BY)["paths"])
    assert OPENAPI_PATH in api_paths()
    assert api_paths() - described == set(), "routes without a description"
    assert described - api_paths() == set(), "described routes no view serves"
    # The fallback is last: a route after it would never be reached.
    assert ROUTES[-1][1] is ApiNotFound


def test_every_operation_is_a_get_behind_the_token_with_json_errors() -> None:
    doc = openapi_document(GROUP_BY)
    assert doc["security"] == [{"bearerToken": []}]
    scheme = doc["components"]["securitySchemes"]["bearerToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for path, item in doc["paths"].items():
        assert set(item) == {"get"}, path
        responses = item["get"]["responses"]
        assert {"200", "401"} <= set(responses), path
        for code, response in responses.items():
            if code != "200":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, code)
        if any(p["in"] == "query" for p in item["get"].get("parameters", [])):
            assert "400" in responses, path


def test_the_list_parameters_are_the_parser_s() -> None:
    for path in ("/api/envoys", "/api/local/envoys"):
        limit = parameter(path, "limit")
        assert (limit["minimum"], limit["maximum"]) == (1, 1000)
        assert not accepted(limit="0") and accepted(limit="1")
        assert accepted(limit="1000") and not accepted(limit="1001")
        assert parse_list_query({}).limit == limit["default"]


STATUS_TEXT = st.lists(
    st.sampled_from(
        [*(s.value for s in Status), "errors", "", " ", ",", "\t", "\n", "x", "\u2003"]
    ),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(STATUS_TEXT)
def test_a_status_filter_is_accepted_exactly_when_documented(text: str) -> None:
    assert accepted(status=text) == documented("/api/envoys", "status", text), repr(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 +-_.e\t\n\u0665", max_size=6))
def test_a_limit_is_accepted_exactly_when_documented(text: str) -> None:
    as_integer = re.fullmatch("[0-9]+", text) is not None
    in_document = as_integer and documented("/api/envoys", "limit", int(text))
    assert accepted(limit=text) == in_document, repr(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=8).map(encode_cursor), st.text(max_size=8)))
def test_a_cursor_is_accepted_exactly_when_documented(cursor: str) -> None:
    decodes = True
    try:
        decode_cursor(cursor)
    except BadQuery:
        decodes = False
    # Within the documented alphabet, a cursor the API did not write may still be refused.
    assert decodes <= documented("/api/envoys", "cursor", cursor), repr(cursor)
    assert accepted(cursor=cursor) == (decodes or cursor == ""), repr(cursor)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab=(none) \n", max_size=8))
def test_a_list_label_is_accepted_exactly_when_documented(label: str) -> None:
    assert accepted(label=label) == documented("/api/envoys", "label", label), repr(label)


def test_a_group_label_names_a_key_of_group_by_literally() -> None:
    # Without `fleet.group_by` every label is refused: the parameter is not offered.
    assert "parameters" not in openapi_document()["paths"]["/api/compliance"]["get"]
    for label, ok in [
        ("role=web", True),
        ("role=", True),
        ("rack.zone=a", True),
        ("rackXzone=a", False),
        ("a+b=1", True),
        ("aab=1", False),
        ("env=prod", False),
        ("role", False),
    ]:
        assert documented("/api/compliance", "label", label, GROUP_BY) is ok, label


@pytest.fixture
def vigo(tmp_path: Path) -> Vigo:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic_prefix": "openapi."},
        "smtp": {"events": {}},
        "processor": {"data_dir": str(tmp_path / "data")},
        "web": {"auth_token_file": str(token_file)},
        "fleet": {"group_by": list(GROUP_BY)},
    }
    (tmp_path / "vigo.yaml").write_text(yaml.safe_dump(config))
    return build_app(load_settings(tmp_path / "vigo.yaml"))


class Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.query: dict[str, str] = {}
        self.headers = headers


def served(vigo: Vigo, headers: dict[str, str]) -> tuple[int, Any]:
    response = asyncio.run(vigo.app.web.views[OPENAPI_PATH].get(Request(headers)))
    return response.status, orjson.loads(response.body)


def test_the_worker_serves_its_own_document_behind_the_token(vigo: Vigo) -> None:
    status, body = served(vigo, {})
    assert status == 401 and "token" in body["error"]
    status, body = served(vigo, {"Authorization": "Bearer nope"})
    assert status == 401
    status, body = served(vigo, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body == openapi_document(GROUP_BY)
