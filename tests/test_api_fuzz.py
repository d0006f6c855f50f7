"""The API fuzzed against its own description (SPEC 11.5): Schemathesis generates requests
from the document a live worker serves at `GET /api/openapi.json` (a worker with a token,
groups by `role` and `rack.zone`, and a seeded fleet with every status and labels), valid
and invalid ones, and checks every answer: no 5xx, every status, header and body as the
document says, the token enforced, and an invalid query parameter a 400 with the JSON
error. What it found once is kept below as plain examples.

Bounded and repeatable: at most `MAX_EXAMPLES` generated cases per operation (plus
Schemathesis' fixed coverage cases: boundaries, and every other HTTP method answered 405),
derandomized, no deadline (the broker and worker share the machine with other tests)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation

from processor.web.documents import encode_cursor
from processor.web.openapi import CURSOR_FORMAT, OPENAPI_PATH, openapi_document
from tests.harness import Worker
from tests.webharness import (
    fetch,
    http_get,
    publish_status_fleet,
    running_workers,
    threshold_config,
)

#: Generated cases per operation; `VIGO_FUZZ_EXAMPLES` raises it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("VIGO_FUZZ_EXAMPLES", "50"))
GROUP_BY = ("role", "rack.zone")
#: What the worker below serves (checked first): the document is built before the worker
#: starts, as Schemathesis' pytest integration parametrizes at collection. (Its lazy
#: `from_fixture` loader, which could read it from the worker, fails under pytest 9.2.)
DOCUMENT = openapi_document(GROUP_BY)

# Valid cursors are what the API writes: the fuzzer makes them as the API does.
schemathesis.openapi.format(CURSOR_FORMAT, st.text(max_size=12).map(encode_cursor))

api = schemathesis.openapi.from_dict(DOCUMENT)
# Parameters the document does not name are ignored, as HTTP APIs do: not fuzzed.
api.config.generation.update(
    modes=list(schemathesis.GenerationMode),
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    allow_extra_parameters=False,
)


@pytest.fixture(scope="module")
def fuzzed(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, str]]:
    token = "tok-" + secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("fuzz") / "api-token"
    token_file.write_text(token + "\n")
    sections: dict[str, Any] = {
        "smtp": threshold_config(50),
        "web": {"auth_token_file": str(token_file)},
        "fleet": {"group_by": list(GROUP_BY)},
    }
    with running_workers(kafka_bootstrap, **sections) as (worker,):
        publish_status_fleet(kafka_bootstrap, [worker], token=token)
        yield worker, token


def invalid_query_is_a_json_400(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """A query parameter outside the document is refused with 400 and `{"error": ...}`."""
    if case.meta is None or not case.meta.is_negative_at(ParameterLocation.QUERY):
        return None
    assert response.status_code == 400, (response.status_code, response.text)
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return True


def test_the_worker_serves_the_document_fuzzed(fuzzed: tuple[Worker, str]) -> None:
    worker, token = fuzzed
    reply = http_get(worker.url + OPENAPI_PATH, token=token)
    assert reply.status == 200 and reply.json() == DOCUMENT


@pytest.mark.parametrize(
    "path",
    [
        "/api/envoys/no%0Asuch",  # `.+` stops at the line break: no route took it once
        "/api/envoys/",  # what a client sends for the envoy id `.`
        "/api/nope",
        "/api/",
    ],
)
def test_a_path_no_api_route_takes_is_a_json_404(fuzzed: tuple[Worker, str], path: str) -> None:
    worker, token = fuzzed
    reply = fetch(worker.url, path, {"Authorization": f"Bearer {token}"})
    assert reply.status == 404, (path, reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/json"), path
    assert reply.json() == {"error": "not found"}
    assert fetch(worker.url, path).status == 401  # and behind the token like the rest


@pytest.mark.parametrize(
    "query",
    [
        "status=%09failed",  # `str.strip` took a tab or a no-break space once
        "status=failed%C2%A0",
        "limit=%205",  # and `int` a space, a sign, an underscore, other scripts' digits
        "limit=%2B5",
        "limit=5_0",
        "limit=%D9%A5",
        "cursor=ZHJpZnQtMQ%3D%3D",  # `drift-1` padded: not a cursor the API writes
        "label=role",
    ],
)
def test_a_list_parameter_outside_the_document_is_a_json_400(
    fuzzed: tuple[Worker, str], query: str
) -> None:
    worker, token = fuzzed
    auth = {"Authorization": f"Bearer {token}"}
    reply = fetch(worker.url, f"/api/envoys?{query}", auth)
    assert reply.status == 400, (query, reply.status, reply.body)
    assert isinstance(reply.json()["error"], str)
    # The same without what is wrong is taken.
    fixed = query.replace("%09", "").replace("%C2%A0", "").replace("%20", "").replace("%2B", "")
    fixed = fixed.replace("5_0", "50").replace("%D9%A5", "5").replace("%3D", "")
    if "=" in fixed.removeprefix("label="):
        assert fetch(worker.url, f"/api/envoys?{fixed}", auth).status == 200, fixed


@api.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_as_described(
    fuzzed: tuple[Worker, str], case: schemathesis.Case[Any]
) -> None:
    worker, token = fuzzed
    case.call_and_validate(
        base_url=worker.url,
        headers={"Authorization": f"Bearer {token}"},
        additional_checks=[invalid_query_is_a_json_400],
    )
