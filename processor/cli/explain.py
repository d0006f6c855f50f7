"""`vigocli envoys explain ID [--json]` (SPEC 11.1): why an envoy has its status, in
sentences, from `GET /api/envoys/{id}/explain`.

The first sentence gives the status, since when and the reason ("web-01 is relapsed since
2026-11-27 12:05:00Z because its last 2 runs changed resources: ..."); then each run the
rule looked at, where it was read (topic, partition, offset), the rule's text from the
SPEC, the liveness deadlines and the config versions. Every line is escaped
(`topics.escape.printable`, SPEC 11.4): ids, resources and versions are envoy data.

Exit statuses as `envoys show`: 1 for an unknown envoy, 2 when the processor cannot be
reached, 3 when it refused the token."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import click

from processor.cli.api_client import Api, CliError, connection_options, pass_api
from processor.cli.render import when_text
from topics.escape import printable

#: As `envoys show`.
EXIT_NOT_FOUND = 1


def _ids(ids: Sequence[str], count: int) -> str:
    """'a, b and 3 more': the history keeps at most 20 ids per run (SPEC 10.9)."""
    shown = ", ".join(ids)
    more = count - len(ids)
    if more <= 0:
        return shown
    return f"{shown} and {more} more" if shown else f"{count} (ids not kept)"


def _runs_word(n: int) -> str:
    return "its last run" if n == 1 else f"its last {n} runs"


def _streak_reason(doc: Mapping[str, Any]) -> str:
    """The changed resources of the streak, each named once, newest run first."""
    n = doc["consecutive_changed_runs"]
    changed: list[str] = []
    for run in doc["evidence"]:
        changed.extend(c for c in run["changed"] if c not in changed)
    cut = any(run["changed_count"] > len(run["changed"]) for run in doc["evidence"])
    listed = ", ".join(changed) + (" and more" if cut else "") if changed else "(ids not kept)"
    text = f"{_runs_word(n)} changed resources: {listed}"
    if doc.get("streak_truncated"):
        text += f" (the history holds the newest {len(doc['evidence'])} of those {n} runs)"
    return text


def _last_run_reason(status: str, run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "of its last run (no longer in the history)"
    errored = _ids(run["module_errors"], run["module_errors_count"])
    if status == "failed":
        return f"every module of its last run errored: {errored}"
    if status == "degraded":
        return f"its last run was partial: {errored} errored, its other modules succeeded"
    if run.get("intentional"):
        version = run.get("config_version")
        return (
            f"its last run's changes came with a new config version ({version}): "
            f"{_ids(run['changed'], run['changed_count'])}; a rollout, not drift"
        )
    return "its last run changed nothing and failed nothing"


def _liveness_reason(status: str, doc: Mapping[str, Any]) -> str:
    live = doc["liveness"]
    heard = (
        f"its last check-in or run at {when_text(live['last_seen'])}"
        if live.get("last_seen")
        else f"its enrollment at {when_text(live['enrolled_at'])}, and it never checked in"
    )
    if status == "offline":
        return (
            f"nothing was heard from it after {heard}: the deadline of 2 x its "
            f"{live['interval_s']} s check-in interval expired at {when_text(live['offline_at'])}"
        )
    return (
        f"nothing was heard from it after {heard}: lifecycle.deactivate_after ran out at "
        f"{when_text(live['inactive_at'] or doc['since'])}"
    )


def reason(doc: Mapping[str, Any]) -> str:
    """Why, in one clause, by the status's rule."""
    status = doc["status"]
    evidence = doc["evidence"]
    if status in ("drifted", "relapsed", "diverged"):
        return _streak_reason(doc)
    if status in ("converged", "degraded", "failed"):
        return _last_run_reason(status, evidence[0] if evidence else None)
    if status in ("offline", "inactive"):
        return _liveness_reason(status, doc)
    if status == "no_data":
        enrolled = when_text(doc["liveness"]["enrolled_at"])
        return f"it was enrolled at {enrolled} and no run of it has been applied since"
    if status == "revoked":
        return (
            "an enrollment event revoked it; its check-ins and runs are dead-lettered until "
            "it is enrolled again"
        )
    return f"of the rule: {doc['rule']['text']}"


def run_sentence(run: Mapping[str, Any]) -> str:
    """One run of the evidence, and where it was read."""
    parts = [f"Run {run['run_id']} finished {when_text(run['finished_at'])}: {run['outcome']}"]
    if run["changed_count"]:
        parts.append(f"changed {_ids(run['changed'], run['changed_count'])}")
    if run["failed_count"]:
        parts.append(f"failed {_ids(run['failed'], run['failed_count'])}")
    if run["module_errors_count"]:
        parts.append(f"errored modules {_ids(run['module_errors'], run['module_errors_count'])}")
    version = run.get("config_version")
    parts.append(f"config version {version}" if version is not None else "no config version")
    source = run["source"]
    offset = source["offset"]
    where = f"{source['topic']} partition {source['partition']}" + (
        f" offset {offset}" if offset is not None else " (offset not kept by an older release)"
    )
    return "; ".join(parts) + f". Read from {where}."


def liveness_sentence(doc: Mapping[str, Any]) -> str | None:
    """The deadlines still ahead (none for revoked, offline and inactive envoys, whose
    reason names the one that expired)."""
    live = doc["liveness"]
    if doc["status"] in ("revoked", "offline", "inactive") or live["offline_at"] is None:
        return None
    seen = (
        f"Last seen {when_text(live['last_seen'])}"
        if live.get("last_seen")
        else f"Never seen since its enrollment at {when_text(live['enrolled_at'])}"
    )
    text = (
        f"{seen}; without a check-in or run it goes offline at {when_text(live['offline_at'])} "
        f"(2 x {live['interval_s']} s)"
    )
    if live.get("inactive_at"):
        text += f" and inactive at {when_text(live['inactive_at'])}"
    return text + ("; it is stale." if live.get("stale") else ".")


def version_sentence(doc: Mapping[str, Any]) -> str:
    """The envoy's version (the last applied without errors), its last run's if that
    differs, and the fleet's newest."""
    versions = doc["config_version"]
    applied, newest = versions.get("applied"), versions.get("newest_in_fleet")
    last_run = versions.get("last_run")
    text = (
        f"It is on config version {applied}"
        if applied is not None
        else "It has applied no config version"
    )
    if last_run is not None and last_run != applied:
        text += f" (its last run came with {last_run})"
    if newest is None:
        return text + "; the newest version in the fleet is not known."
    if newest == applied:
        return text + ", the newest in the fleet."
    return text + f"; the newest in the fleet is {newest}."


def render_explanation(doc: Mapping[str, Any]) -> str:
    rule = doc["rule"]
    lines = [
        f"{doc['envoy_id']} is {doc['status']} since {when_text(doc['since'])} "
        f"because {reason(doc)}.",
    ]
    lines.extend(f"  {run_sentence(run)}" for run in doc["evidence"])
    lines.append(f"Rule (SPEC section {rule['section']}, {rule['status']}): {rule['text']}.")
    live = liveness_sentence(doc)
    if live is not None:
        lines.append(live)
    if doc["status"] != "revoked":
        lines.append(version_sentence(doc))
    return "\n".join(printable(line) for line in lines)


@click.command("explain")
@click.argument("envoy_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@connection_options
@pass_api
def explain_envoy(api: Api, envoy_id: str, as_json: bool) -> None:
    """Why an envoy has its status: the rule, the runs it looked at and where they were
    read, the liveness deadlines, the config versions."""
    status, doc = api.get(f"/api/envoys/{quote(envoy_id, safe='')}/explain")
    if status == 404:
        raise CliError(f"no envoy {envoy_id!r}", EXIT_NOT_FOUND)
    click.echo(json.dumps(doc, indent=2) if as_json else render_explanation(doc))
