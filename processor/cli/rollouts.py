"""`vigocli rollouts [--label KEY=VALUE] [--json]` (SPEC 11.2): the rollout of the fleet or
of one group by `config_version`, from `GET /api/rollouts`: the newest version, how many
envoys are on it and converged, when 50% and 90% were reached, the stuck count, and a
table of the versions.

Exit statuses: 0 when no envoy is stuck, 1 when some are (so a script or a CI step can
wait for a rollout), 2 when the processor cannot be reached, 3 when it refused the token,
64 for a usage error (a label that is not KEY=VALUE, a key not in `fleet.group_by`); an
unknown group is 1 with one line. Versions are envoy data: every line is escaped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from processor.cli.api_client import Api, CliError, connection_options, pass_api
from processor.cli.render import escaped, table_text, when_text

EXIT_STUCK = 1
EXIT_NOT_FOUND = 1


def _label(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (value.startswith("=") or "=" not in value):
        raise click.BadParameter("must be KEY=VALUE, e.g. env=prod")
    return value


def _share(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100 * part / whole:.1f}%"


def render_rollouts(doc: Mapping[str, Any], label: str | None = None) -> str:
    """The summary lines and the table of versions."""
    versions = doc.get("versions") or []
    active = sum(int(v.get("envoys", 0)) for v in versions)
    newest = doc.get("newest")
    where = "fleet" if label is None else escaped(label)
    lines = []
    if newest is None:
        lines.append(f"No envoy of the {where} reports a config_version yet ({active} active).")
    else:
        envoys, converged = int(newest["envoys"]), int(newest["converged"])
        lines += [
            f"Newest version:  {escaped(newest['version'])} "
            f"(first seen {when_text(newest['first_seen'])})",
            f"On it:           {envoys} of {active} active envoys ({_share(envoys, active)}), "
            f"{converged} converged ({_share(converged, active)} of active)",
            f"50% converged:   {_reached(newest['reached_50_at'])}",
            f"90% converged:   {_reached(newest['reached_90_at'])}",
        ]
    lines.append(f"Stuck:           {int(doc.get('stuck', 0))}")
    rows = [
        (
            escaped(str(v["version"])),
            str(v["envoys"]),
            _share(int(v["envoys"]), active),
            when_text(v["first_seen"]) if v.get("first_seen") else "-",
        )
        for v in versions
    ]
    if rows:
        lines += ["", table_text(("VERSION", "ENVOYS", "SHARE", "FIRST SEEN"), rows)]
    return "\n".join(lines)


def _reached(at: str | None) -> str:
    return "not yet" if at is None else when_text(at)


@click.command("rollouts")
@click.option(
    "--label",
    callback=_label,
    help="One group, KEY=VALUE (a fleet.group_by key); KEY=(none): without the label.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@connection_options
@pass_api
def rollouts(api: Api, label: str | None, as_json: bool) -> None:
    """Rollouts by config_version: the newest version, envoys on it and converged, stuck
    envoys. Exit 1 when envoys are stuck, 0 otherwise."""
    status, doc = api.get("/api/rollouts", {"label": label} if label is not None else None)
    if status == 404:
        raise CliError(f"no envoys in group {escaped(label or '')!r}", EXIT_NOT_FOUND)
    click.echo(json.dumps(doc, indent=2) if as_json else render_rollouts(doc, label))
    if int(doc.get("stuck", 0)) > 0:
        click.get_current_context().exit(EXIT_STUCK)
