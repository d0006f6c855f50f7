"""`vigocli`: the compliance API from a terminal (SPEC section 8).

Talks HTTP to any worker (`--url`, or `VIGO_URL`); the worker answers from the owner of
the data. Exit statuses (SPEC 8 and 10.8): `doctor` 0 at or above the threshold, 1 below
it; `envoys show` 1 for an unknown envoy; 2 when the processor cannot be reached or
answers with an error; 3 when it refused the API token; 64 for usage errors (an unknown
status, a label that is not KEY=VALUE, a bad option). `--url` and `--token-file` go
before or after the subcommand. Failures are one line, no traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote, urlencode

import click

from alerts.mail import body_text
from processor.cli.deadletters import deadletters
from processor.cli.kafka import EXIT_USAGE, UsageExit64Group
from projections.status import parse_status_filter
from topics.statuses import ACTIVE_STATUSES

DEFAULT_URL = "http://localhost:6066"
#: Envoys fetched per request when listing everything.
PAGE_SIZE = 500
EXIT_BELOW = 1
EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 2
#: The API refused the token (SPEC 10.8); usage errors exit with `EXIT_USAGE` (64).
EXIT_TOKEN = 3


class CliError(click.ClickException):
    """One line on stderr, prefixed with the program name, and an exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"vigocli: {self.format_message()}", err=True, file=file)


class Api:
    """A minimal JSON client on the standard library: nothing to install on a jump host."""

    def __init__(self, url: str, timeout: float, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def get(self, path: str, query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body) for 200 and 404; anything else is a `CliError`."""
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _json(response.read(), url)
        except urllib.error.HTTPError as exc:
            body = _json(exc.read(), url, strict=False)
            reason = body.get("error") if isinstance(body, dict) else None
            if exc.code == 404 and isinstance(body, dict) and "error" in body:
                return 404, body
            if exc.code == 401:
                how = "was refused" if self.token is not None else "is needed"
                raise CliError(
                    f"the processor at {self.url} answered 401: its API token {how}; "
                    "give it with --token-file PATH or VIGO_TOKEN",
                    EXIT_TOKEN,
                ) from None
            raise CliError(
                f"the processor at {self.url} answered {exc.code}: {reason or exc.reason}",
                EXIT_USAGE if exc.code == 400 else EXIT_UNREACHABLE,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(f"cannot reach the processor at {self.url}: {reason}") from None


def _json(raw: bytes, url: str, *, strict: bool = True) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        if not strict:
            return None
        raise CliError(f"{url} did not answer with JSON; is --url a Vigo processor?") from None


def _statuses(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked here too, so a typo fails before any request, with the valid names."""
    if value is None:
        return None
    try:
        parse_status_filter(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return ",".join(w.strip() for w in value.split(",") if w.strip())


def _when(iso: str | None) -> str:
    """`2026-11-27T12:05:00.123Z` as `2026-11-27 12:05:00Z`: readable, still UTC."""
    if not iso:
        return "never"
    return iso.replace("T", " ").split(".")[0].rstrip("Z") + "Z"


#: The id lists of a history entry: (title, field); `<field>_count` counts them all.
_ID_LISTS = (("changed", "changed"), ("failed", "failed"), ("errored modules", "errored_modules"))


def _id_list(title: str, ids: Sequence[str], count: int | None) -> str:
    """'changed: a, b (+4998 more)': the history keeps at most 20 ids per list (SPEC 10.9);
    entries from before the counts existed have none."""
    total = len(ids) if count is None else count
    if not total:
        return ""
    more = f" (+{total - len(ids)} more)" if total > len(ids) else ""
    return f"{title}: {', '.join(ids)}{more}" if ids else f"{title}: {total} (ids not kept)"


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _threshold_text(value: float) -> str:
    return f"{value:g}%"


def _label(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`KEY=VALUE`, checked before any request."""
    if value is not None and (value.startswith("=") or "=" not in value):
        raise click.BadParameter("must be KEY=VALUE, e.g. env=prod")
    return value


def _shown(text: str) -> str:
    """Label data on a terminal: control and line-breaking characters shown escaped."""
    return body_text(text)


@dataclass
class Connection:
    """Where to ask and with what token: set by the options before the subcommand and
    overridden by the same options after it (SPEC 10.8)."""

    url: str = DEFAULT_URL
    timeout: float = 10.0
    token_file: Path | None = None

    def api(self) -> Api:
        token = os.environ.get("VIGO_TOKEN") or None
        if self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.BadParameter(
                    f"cannot read {self.token_file}: {exc.strerror}", param_hint="--token-file"
                ) from None
            if not token:
                raise click.BadParameter(f"{self.token_file} is empty", param_hint="--token-file")
        return Api(self.url, self.timeout, token)


def _set_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Connection).url = value


def _set_token_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Connection).token_file = value


_URL_HELP = "Any processor worker's web address (env VIGO_URL; default " + DEFAULT_URL + ")."
_TOKEN_HELP = "A file holding the API's bearer token (env VIGO_TOKEN: the token itself)."
_TOKEN_TYPE = click.Path(dir_okay=False, path_type=Path)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--url` and `--token-file` also after the subcommand (SPEC 10.8), where they win."""
    command = click.option(
        "--token-file", type=_TOKEN_TYPE, expose_value=False, callback=_set_token_file,
        help=_TOKEN_HELP,
    )(command)  # fmt: skip
    return click.option("--url", expose_value=False, callback=_set_url, help=_URL_HELP)(command)


def pass_api(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command's first argument: an `Api` built from the connection options."""

    @functools.wraps(command)
    def with_api(*args: Any, **kwargs: Any) -> Any:
        connection = click.get_current_context().find_object(Connection) or Connection()
        return command(connection.api(), *args, **kwargs)

    return with_api


@click.group(cls=UsageExit64Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="VIGO_URL", default=DEFAULT_URL, help=_URL_HELP)
@click.option("--token-file", type=_TOKEN_TYPE, help=_TOKEN_HELP)
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
        raise CliError(f"no envoys in group {_shown(label or '')!r}", EXIT_NOT_FOUND)
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


def render_doctor_by(doc: Mapping[str, Any], key: str) -> str:
    """The fleet's summary line, then one row per value of `key`, worst first (lowest
    percent; groups with no active envoy last), the fleet's threshold marked."""
    values: Mapping[str, Mapping[str, Any]] = doc["groups"][key]
    threshold = doc.get("threshold")

    def worst_first(item: tuple[str, Mapping[str, Any]]) -> tuple[bool, float, int, str]:
        value, numbers = item
        percent = numbers.get("percent")
        return percent is None, percent or 0.0, -int(numbers.get("active", 0)), value

    rows = []
    for value, numbers in sorted(values.items(), key=worst_first):
        percent = numbers.get("percent")
        below = percent is not None and threshold is not None and percent < threshold
        by_status: Mapping[str, int] = numbers.get("by_status", {})
        others = [f"{s}={n}" for s, n in by_status.items() if n and s != "converged"]
        rows.append(
            (
                _shown(value),
                _percent(percent),
                f"{numbers.get('compliant', 0)}/{numbers.get('active', 0)}",
                "BELOW" if below else "",
                " ".join(others),
            )
        )
    head = render_doctor(doc).split("\n")[:3]
    table = _table((key.upper(), "CONVERGENCE", "COMPLIANT", "", "NOT CONVERGED"), rows)
    return "\n".join([*head, "", f"By {_shown(key)}", *("  " + line for line in table.split("\n"))])


def render_doctor(doc: Mapping[str, Any]) -> str:
    percent = doc.get("percent")
    threshold = doc.get("threshold")
    active, compliant = doc.get("active", 0), doc.get("compliant", 0)
    if percent is None:
        summary = "n/a: no active envoys"
    else:
        summary = f"{_percent(percent)}  ({compliant} of {active} active envoys compliant)"
    if threshold is None:
        verdict = "none configured"
    elif percent is None:
        verdict = f"{_threshold_text(threshold)}  not judged: no active envoys"
    elif doc.get("breached"):
        verdict = f"{_threshold_text(threshold)}  BREACHED: convergence is below the threshold"
    else:
        verdict = f"{_threshold_text(threshold)}  ok: at or above the threshold"
    by_status: Mapping[str, int] = doc.get("by_status", {})
    width = max(len(s.value) for s in ACTIVE_STATUSES)
    digits = max(len(str(n)) for n in [*by_status.values(), 0])
    label = doc.get("label")
    group = [] if label is None else [f"Group              {_shown(str(label))}"]
    lines = [
        *group,
        f"{'Fleet convergence' if label is None else 'Convergence      '}  {summary}",
        f"Threshold          {verdict}",
        f"As of              {_when(doc.get('at'))}",
        "",
        "By status",
    ]
    for status in ACTIVE_STATUSES:
        count = by_status.get(status.value, 0)
        share = f"  {100 * count / active:5.1f}%" if active else ""
        lines.append(f"  {status.value.ljust(width)}  {str(count).rjust(digits)}{share}")
    if "inactive" in doc or "revoked" in doc:  # SPEC 10.3: beside active, not in it
        inactive, revoked = doc.get("inactive", 0), doc.get("revoked", 0)
        lines += ["", f"Outside active     {inactive} inactive, {revoked} revoked"]
    return "\n".join(lines)


@cli.group()
def envoys() -> None:
    """List envoys by status, or show one envoy and its drift history."""


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
@click.option("--limit", type=click.IntRange(min=1), help="At most this many envoys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--page-size", type=click.IntRange(1, 1000), default=PAGE_SIZE, hidden=True)
@connection_options
@pass_api
def list_envoys(
    api: Api,
    status: str | None,
    label: str | None,
    limit: int | None,
    as_json: bool,
    page_size: int,
) -> None:
    """Envoys with the given statuses (and label), in envoy id order (follows every
    page)."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while limit is None or len(found) < limit:
        query = {"limit": str(min(page_size, limit - len(found)) if limit else page_size)}
        if status:
            query["status"] = status
        if label is not None:
            query["label"] = label
        if cursor:
            query["cursor"] = cursor
        _, page = api.get("/api/envoys", query)
        found.extend(page["envoys"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        click.echo(json.dumps({"envoys": found}, indent=2))
        return
    if not found:
        what = f"with status {status}" if status else "active"
        click.echo(f"no envoys {what}" + (f" in {_shown(label)}" if label else ""))
        return
    rows = [
        (
            _shown(e["envoy_id"]),
            e["status"],
            _when(e["since"]),
            _when(e["last_seen"]),
            _shown(_labels(e["labels"])),
        )
        for e in found
    ]
    click.echo(_table(("ENVOY", "STATUS", "SINCE", "LAST SEEN", "LABELS"), rows))


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


def render_envoy(doc: Mapping[str, Any]) -> str:
    reported = doc.get("last_reported_at")
    seen = _when(doc.get("last_seen"))
    if doc.get("last_seen") and reported:
        seen += f"  (envoy clock {_when(reported)})"
    labels = doc.get("labels") or {}
    lines = [
        f"Envoy              {doc['envoy_id']}",
        f"Status             {doc['status']} since {_when(doc['since'])}",
        f"Last seen          {seen}",
        f"Check-in interval  {doc['interval_s']} s",
        f"Changed runs       {doc['consecutive_changed_runs']} consecutive",
        f"Stale              {'yes' if doc.get('stale') else 'no'}",
        f"Labels             {_labels(labels) if labels else 'none'}",
        "",
    ]
    history = doc.get("history") or []
    if not history:
        lines.append("Drift history: no runs recorded")
        return "\n".join(lines)
    lines.append("Drift history (newest first)")
    rows = []
    for run in history:
        details = [
            _id_list(title, run.get(field) or [], run.get(f"{field}_count"))
            for title, field in _ID_LISTS
        ]
        details = [d for d in details if d]
        rows.append((_when(run["finished_at"]), run["outcome"], run["run_id"], "; ".join(details)))
    table = _table(("FINISHED", "OUTCOME", "RUN", "RESOURCES"), rows)
    lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines)


cli.add_command(deadletters)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    cli.main(args=list(argv) if argv is not None else None, prog_name="vigocli")
    sys.exit(0)  # pragma: no cover - click exits itself


if __name__ == "__main__":
    main()
