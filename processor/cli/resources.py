"""`vigocli resources top [--failed|--non-idempotent] [--label K=V] [--limit N] [--json]`
(SPEC 11.3): the resources most often changed (or failed, or changed run after run at one
`config_version`) over `resources.window`, from `GET /api/resources/top`.

`RUNS` never under-counts and over-counts by at most `±ERROR` (Space-Saving summaries);
`ENVOYS` is exact up to 16. Every cell is escaped (`topics.escape.printable`, SPEC 11.4):
resource ids and modules are envoy data.

Exit statuses: 0; 1 for a group not counted on its own; 2 when the processor cannot be
reached or answers with an error; 3 when it refused the token; 64 for usage errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from processor.cli.api_client import Api, CliError, connection_options, pass_api
from processor.cli.render import table_text

#: As `doctor --label` for a group with no numbers.
EXIT_NOT_FOUND = 1
KIND_TITLES = {
    "changed": "changed (corrected drift)",
    "failed": "failed",
    "non_idempotent": "non-idempotent (changed in 3+ consecutive runs at one version)",
}


def _label(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (value.startswith("=") or "=" not in value):
        raise click.BadParameter("must be KEY=VALUE, e.g. role=db")
    return value


def render_top(doc: Mapping[str, Any], kind: str, label: str | None) -> str:
    """A title line, then RESOURCE, MODULE, RUNS, ±ERROR, ENVOYS, most runs first."""
    hours = int(doc.get("window_s", 0)) // 3600
    scope = f" in {label}" if label is not None else ""
    title = f"resources {KIND_TITLES[kind]}{scope}, last {hours}h"
    rows = [
        (r["id"], r["module"], str(r["runs"]), f"±{r['error']}", str(r["envoys"]))
        for r in doc.get("resources", [])
    ]
    if not rows:
        return table_text([title], []) + "\n(none)"
    return (
        table_text([title], [])
        + "\n"
        + table_text(("RESOURCE", "MODULE", "RUNS", "±ERROR", "ENVOYS"), rows)
    )


@click.group()
def resources() -> None:
    """The resources that keep drifting or failing, fleet-wide or per group."""


@resources.command("top")
@click.option("--failed", is_flag=True, help="Resources that failed, not those changed.")
@click.option(
    "--non-idempotent",
    "non_idempotent",
    is_flag=True,
    help="Resources changed in 3 or more consecutive runs of an envoy at one config_version.",
)
@click.option("--label", callback=_label, help="One group, KEY=VALUE (see resources.groups).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@connection_options
@pass_api
def top(
    api: Api, failed: bool, non_idempotent: bool, label: str | None, limit: int, as_json: bool
) -> None:
    """The top resources over resources.window: runs (over-counted by at most ±ERROR, never
    under) and distinct envoys."""
    if failed and non_idempotent:
        raise click.UsageError("--failed and --non-idempotent exclude each other")
    kind = "failed" if failed else "non_idempotent" if non_idempotent else "changed"
    query = {"kind": kind, "limit": str(limit)}
    if label is not None:
        query["label"] = label
    status, doc = api.get("/api/resources/top", query)
    if status == 404:
        raise CliError(str(doc.get("error", "not found")), EXIT_NOT_FOUND)
    click.echo(json.dumps(doc, indent=2) if as_json else render_top(doc, kind, label))
