"""`vigocli`: the compliance API from a terminal (SPEC section 8).

Talks HTTP to any worker (`--url`, or `VIGO_URL`); the worker answers from the owner of
the data. Exit statuses (SPEC 8 and 10.8): `doctor` 0 at or above the threshold, 1 below
it; `envoys show` and `envoys explain` (`processor.cli.explain`) 1 for an unknown envoy;
2 when the processor cannot be reached or answers with an error; 3 when it refused the
API token; 64 for usage errors (an unknown status, a label that is not KEY=VALUE, a bad
option). `--url` and `--token-file` go
before or after the subcommand. Failures are one line, no traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click

from processor.cli.api_client import (
    DEFAULT_URL,
    EXIT_TOKEN,
    EXIT_UNREACHABLE,
    TOKEN_HELP,
    TOKEN_TYPE,
    URL_HELP,
    Api,
    CliError,
    Connection,
    connection_options,
    pass_api,
)
from processor.cli.deadletters import deadletters
from processor.cli.explain import explain_envoy
from processor.cli.kafka import EXIT_USAGE, UsageExit64Group
from processor.cli.render import (
    escaped,
    labels_text,
    render_doctor,
    render_doctor_by,
    render_envoy,
    when_text,
)
from processor.cli.resources import resources
from processor.cli.rollouts import rollouts
from processor.cli.streamed import StreamedJson, StreamedTable
from projections.status import parse_status_filter

#: The commands, and what they use from `api_client` and `render`, as before.
__all__ = [
    "DEFAULT_URL",
    "EXIT_BELOW",
    "EXIT_NOT_FOUND",
    "EXIT_TOKEN",
    "EXIT_UNREACHABLE",
    "PAGE_SIZE",
    "Api",
    "CliError",
    "Connection",
    "cli",
    "connection_options",
    "doctor",
    "envoys",
    "list_envoys",
    "main",
    "pass_api",
    "render_doctor",
    "render_doctor_by",
    "render_envoy",
    "show_envoy",
]

#: Envoys fetched per request when listing everything.
PAGE_SIZE = 500
EXIT_BELOW = 1
EXIT_NOT_FOUND = 1


def _statuses(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked here too, so a typo fails before any request, with the valid names."""
    if value is None:
        return None
    try:
        parse_status_filter(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return ",".join(w.strip() for w in value.split(",") if w.strip())


def _label(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`KEY=VALUE`, checked before any request."""
    if value is not None and (value.startswith("=") or "=" not in value):
        raise click.BadParameter("must be KEY=VALUE, e.g. env=prod")
    return value


@click.group(cls=UsageExit64Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="VIGO_URL", default=DEFAULT_URL, help=URL_HELP)
@click.option("--token-file", type=TOKEN_TYPE, help=TOKEN_HELP)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for an answer.")
@click.pass_context
def cli(ctx: click.Context, url: str, token_file: Path | None, timeout: float) -> None:
    """Fleet compliance from the Vigo compliance processor. Exit statuses: 2 the processor
    cannot be reached, 3 it refused the token, 64 a usage error."""
    ctx.obj = Connection(url, timeout, token_file)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@click.option(
    "--label",
    callback=_label,
    help="One group, KEY=VALUE (a fleet.group_by key): judged against its own threshold, "
    "else the fleet's.",
)
@click.option(
    "--by", "by_key", help="A table of the groups of this fleet.group_by key, worst first."
)
@connection_options
@pass_api
def doctor(api: Api, as_json: bool, label: str | None, by_key: str | None) -> None:
    """Fleet (or group) convergence against the threshold: exit 0 at or above it, 1 below,
    2 when the processor cannot be reached."""
    if label is not None and by_key is not None:
        raise click.UsageError("--label and --by exclude each other")
    status, doc = api.get("/api/compliance", {"label": label} if label is not None else None)
    if status == 404:
        raise CliError(f"no envoys in group {escaped(label or '')!r}", EXIT_NOT_FOUND)
    if by_key is not None:
        groups = doc.get("groups")
        if not isinstance(groups, Mapping) or by_key not in groups:
            keys = ", ".join(groups) if isinstance(groups, Mapping) and groups else "none"
            raise CliError(f"{by_key!r} is not a key of fleet.group_by (keys: {keys})", EXIT_USAGE)
        doc = {**doc, "groups": {by_key: groups[by_key]}}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    elif by_key is not None:
        click.echo(render_doctor_by(doc, by_key))
    else:
        click.echo(render_doctor(doc))
    if doc.get("breached"):
        click.get_current_context().exit(EXIT_BELOW)


@cli.group()
def envoys() -> None:
    """List envoys by status, show one envoy and its drift history, or explain its status."""


@envoys.command("list")
@click.option(
    "--status",
    callback=_statuses,
    help="A status, `errors` (failed and degraded), or a comma list; default: every active.",
)
@click.option(
    "--label",
    callback=_label,
    help="Only envoys with this label, KEY=VALUE; KEY=(none): without the label.",
)
@click.option("--version", help="Only envoys on this config_version; (none): without one.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many envoys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--page-size", type=click.IntRange(1, 1000), default=PAGE_SIZE, hidden=True)
@connection_options
@pass_api
def list_envoys(
    api: Api,
    status: str | None,
    label: str | None,
    version: str | None,
    limit: int | None,
    as_json: bool,
    page_size: int,
) -> None:
    """Envoys with the given statuses (and label), in envoy id order (follows every
    page, each printed as it arrives: SPEC 11.4)."""
    pages = _pages(api, status, label, limit, page_size, version)
    if as_json:
        out = StreamedJson("envoys")
        for found in pages:
            out.items(found)
        out.close()
        return
    table = StreamedTable(("ENVOY", "STATUS", "SINCE", "LAST SEEN", "LABELS"), (ENVOY_WIDTH,))
    for found in pages:
        table.rows(
            (
                escaped(e["envoy_id"]),
                e["status"],
                when_text(e["since"]),
                when_text(e["last_seen"]),
                escaped(labels_text(e["labels"])),
            )
            for e in found
        )
    if not table.count:
        what = f"with status {status}" if status else "active"
        click.echo(f"no envoys {what}" + (f" in {escaped(label)}" if label else ""))


#: The envoy column's least width: the table is printed page by page, so it cannot be
#: measured first; a longer id widens it from its page on.
ENVOY_WIDTH = 24


def _pages(
    api: Api,
    status: str | None,
    label: str | None,
    limit: int | None,
    page_size: int,
    version: str | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The listing's pages, each requested once the one before is consumed; no more
    than `limit` envoys are asked for."""
    left = limit
    cursor: str | None = None
    while left is None or left > 0:
        query = {"limit": str(page_size if left is None else min(page_size, left))}
        if status:
            query["status"] = status
        if label is not None:
            query["label"] = label
        if version is not None:
            query["config_version"] = version
        if cursor:
            query["cursor"] = cursor
        _, page = api.get("/api/envoys", query)
        found = page["envoys"] if left is None else page["envoys"][:left]
        if left is not None:
            left -= len(found)
        yield found
        cursor = page.get("next_cursor")
        if not cursor:
            return


@envoys.command("show")
@click.argument("envoy_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@connection_options
@pass_api
def show_envoy(api: Api, envoy_id: str, as_json: bool) -> None:
    """One envoy: status and since when, last check-in, labels, drift history."""
    status, doc = api.get(f"/api/envoys/{quote(envoy_id, safe='')}")
    if status == 404:
        raise CliError(f"no envoy {envoy_id!r}", EXIT_NOT_FOUND)
    click.echo(json.dumps(doc, indent=2) if as_json else render_envoy(doc))


envoys.add_command(explain_envoy)
cli.add_command(deadletters)
cli.add_command(resources)
cli.add_command(rollouts)  # SPEC 11.2 (`processor.cli.rollouts`)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    cli.main(args=list(argv) if argv is not None else None, prog_name="vigocli")
    sys.exit(0)  # pragma: no cover - click exits itself


if __name__ == "__main__":
    main()
