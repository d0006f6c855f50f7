"""How `vigocli` shows the API's documents on a terminal: the `doctor` summary (for the
fleet, a group, or a table of groups), one envoy with its drift history, and the small
formatters they share (times, labels, tables). Text only: no request, no click; the
commands that print it are in `processor.cli.vigocli`.

Everything the API sends is data from envoys: every table cell and every line passes
`topics.escape.printable` (SPEC 11.4), so an id, label, run id or resource id holding ESC,
BEL, C1 controls or bidi overrides is shown as `\\x1b`, `\\u202e` instead of driving the
operator's terminal (clipboard writes, screen clears, reordered text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from topics.escape import printable
from topics.statuses import ACTIVE_STATUSES


def when_text(iso: str | None) -> str:
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


def labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def table_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; each cell escaped first, so the widths are those shown."""
    header = [printable(str(cell)) for cell in header]
    rows = [[printable(str(cell)) for cell in row] for row in rows]
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


def escaped(text: str) -> str:
    """Data on a terminal: control, format and line-breaking characters shown escaped."""
    return printable(text)


def _text(lines: Sequence[str]) -> str:
    """Lines for the terminal, each escaped (again: escaping twice changes nothing)."""
    return "\n".join(printable(line) for line in lines)


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
                escaped(value),
                _percent(percent),
                f"{numbers.get('compliant', 0)}/{numbers.get('active', 0)}",
                "BELOW" if below else "",
                " ".join(others),
            )
        )
    head = render_doctor(doc).split("\n")[:3]
    table = table_text((key.upper(), "CONVERGENCE", "COMPLIANT", "", "NOT CONVERGED"), rows)
    return _text([*head, "", f"By {escaped(key)}", *("  " + line for line in table.split("\n"))])


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
    group = [] if label is None else [f"Group              {escaped(str(label))}"]
    lines = [
        *group,
        f"{'Fleet convergence' if label is None else 'Convergence      '}  {summary}",
        f"Threshold          {verdict}",
        f"As of              {when_text(doc.get('at'))}",
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
    return _text(lines)


def render_envoy(doc: Mapping[str, Any]) -> str:
    reported = doc.get("last_reported_at")
    seen = when_text(doc.get("last_seen"))
    if doc.get("last_seen") and reported:
        seen += f"  (envoy clock {when_text(reported)})"
    labels = doc.get("labels") or {}
    lines = [
        f"Envoy              {doc['envoy_id']}",
        f"Status             {doc['status']} since {when_text(doc['since'])}",
        f"Last seen          {seen}",
        f"Check-in interval  {doc['interval_s']} s",
        f"Changed runs       {doc['consecutive_changed_runs']} consecutive",
        f"Stale              {'yes' if doc.get('stale') else 'no'}",
        f"Labels             {labels_text(labels) if labels else 'none'}",
        "",
    ]
    history = doc.get("history") or []
    if not history:
        lines.append("Drift history: no runs recorded")
        return _text(lines)
    lines.append("Drift history (newest first)")
    rows = []
    for run in history:
        details = [
            _id_list(title, run.get(field) or [], run.get(f"{field}_count"))
            for title, field in _ID_LISTS
        ]
        details = [d for d in details if d]
        rows.append(
            (when_text(run["finished_at"]), run["outcome"], run["run_id"], "; ".join(details))
        )
    table = table_text(("FINISHED", "OUTCOME", "RUN", "RESOURCES"), rows)
    lines.extend("  " + line for line in table.split("\n"))
    return _text(lines)
