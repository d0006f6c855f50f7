"""The API's documents and queries, kept pure so they are tested without Faust or HTTP:
the JSON bodies the views answer with (fleet and group numbers, envoy rows and details),
the list query with its opaque cursor, the merge of the workers' pages in a
scatter-gather, and the bearer-token check."""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processor.fleet import group_doc, groups_doc
from projections.envoy import EnvoyState, Rules
from projections.fleet import FleetCounts
from projections.groups import in_group, parse_label
from projections.status import STATUS_ALIASES, parse_status_filter
from topics.statuses import ACTIVE_STATUSES, Status
from topics.timestamps import iso_from_ms

if TYPE_CHECKING:
    from processor.aggregator import FleetAggregator
    from processor.fleet import FleetSnapshot

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: What the list endpoint returns without `?status=`: every active envoy.
DEFAULT_STATUSES = frozenset(ACTIVE_STATUSES)
_STATUS_WORD = "|".join(
    sorted([*(s.value for s in Status), *STATUS_ALIASES], key=len, reverse=True)
)
_STATUS_ITEM = f" *(?:(?:{_STATUS_WORD}) *)?"
#: `?status=`: status names or aliases, comma-separated, spaces around them and empty items
#: allowed (`failed, degraded,`); the API's description carries the same pattern.
STATUS_FILTER_PATTERN = f"{_STATUS_ITEM}(?:,{_STATUS_ITEM})*"
_CURSOR_CHARS = "[A-Za-z0-9_-]*"
#: `?cursor=`: what `encode_cursor` writes, base64url without padding.
CURSOR_PATTERN = f"^{_CURSOR_CHARS}$"


def compliance_doc(snapshot: FleetSnapshot, group_by: bool = False) -> dict[str, Any]:
    """The `vigo.fleet.convergence` numbers plus threshold, breach and sparkline history;
    `groups` as published when `fleet.group_by` is set."""
    doc = {
        "at": iso_from_ms(snapshot.at_ms),
        **numbers_doc(snapshot.counts, snapshot.threshold),
        "history": [
            {"at": iso_from_ms(at_ms), "percent": value} for at_ms, value in snapshot.history.points
        ],
    }
    if group_by:
        doc["groups"] = groups_doc(snapshot.groups)
    return doc


def numbers_doc(counts: FleetCounts, threshold: float | None) -> dict[str, Any]:
    """Numbers in the fleet's shape, with a threshold and whether they are below it."""
    percent = counts.percent
    return {
        **group_doc(counts),
        "threshold": threshold,
        "breached": percent is not None and threshold is not None and percent < threshold,
    }


def group_compliance_doc(
    snapshot: FleetSnapshot, aggregator: FleetAggregator, label: str
) -> tuple[int, dict[str, Any]]:
    """`GET /api/compliance?label=KEY=VALUE` (SPEC 10.2): the group's numbers in the fleet's
    shape (no history), its label, its threshold (its own, else the fleet's) and breach;
    400 for a key not in `fleet.group_by`, 404 for a value with no numbers."""
    parsed = parse_label(label)
    if parsed is None:
        return 400, {"error": "label must be KEY=VALUE, e.g. env=prod", "label": label}
    key, value = parsed
    if key not in aggregator.groups.group_by:
        keys = ", ".join(aggregator.groups.group_by) or "none"
        return 400, {"error": f"{key!r} is not a key of fleet.group_by ({keys})", "label": label}
    counts = snapshot.groups.get(key, {}).get(value)
    if counts is None:
        error = f"no envoys in group {label!r} (or beyond fleet.max_group_values: in (other))"
        return 404, {"error": error, "label": label}
    doc = {
        "at": iso_from_ms(snapshot.at_ms),
        "label": label,
        **numbers_doc(counts, aggregator.group_threshold(label)),
    }
    return 200, doc


def envoy_summary(state: EnvoyState) -> dict[str, Any]:
    """One row of the envoy list."""
    return {
        "envoy_id": state.envoy_id,
        "status": state.status.value,
        "since": iso_from_ms(state.status_since_ms),
        "last_seen": iso_from_ms(state.last_seen_ms) if state.last_seen_ms is not None else None,
        "labels": dict(state.labels),
    }


def envoy_detail(state: EnvoyState, rules: Rules) -> dict[str, Any]:
    """One envoy with its drift history, newest run first.

    `last_seen` is the Kafka record time that liveness uses; `last_reported_at` is the
    envoy's own `at` of that check-in or run, kept for display (SPEC section 3). Each run
    lists the ids the history kept (SPEC 10.9 bounds them) and counts them all.
    `interval_s` is the interval liveness judges by now (the envoy's own or the default).
    `config_version` is the version the envoy remembers (SPEC 10.1), null if none."""
    return {
        **envoy_summary(state),
        "last_reported_at": state.last_seen_at,
        "interval_s": state.effective_interval_s(rules),
        "consecutive_changed_runs": state.consecutive_changed,
        "config_version": state.config_version,
        "stale": state.stale,
        "history": [
            {
                "run_id": run.run_id,
                "finished_at": run.finished_at,
                "outcome": run.outcome.value,
                "changed": list(run.changed),
                "failed": list(run.failed),
                "errored_modules": list(run.errored_modules),
                "changed_count": run.changed_count,
                "failed_count": run.failed_count,
                "errored_modules_count": run.errored_modules_count,
            }
            for run in state.history
        ],
    }


class BadQuery(ValueError):
    """A query parameter the API cannot accept: answered with 400 and this message."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    statuses: frozenset[Status]
    after: str | None
    limit: int
    #: `(KEY, VALUE)`: only envoys in that group (`(none)`: without the label).
    label: tuple[str, str] | None = None
    #: SPEC 11.2: only envoys on this version (`(none)`: without one).
    config_version: str | None = None

    def local_params(self) -> dict[str, str]:
        """The same query in normalized form, for the other workers' local endpoint."""
        params = {
            "status": ",".join(sorted(s.value for s in self.statuses)),
            "limit": str(self.limit),
        }
        if self.after is not None:
            params["cursor"] = encode_cursor(self.after)
        if self.label is not None:
            params["label"] = "=".join(self.label)
        if self.config_version is not None:
            params["config_version"] = self.config_version
        return params

    def matches(self, state: EnvoyState) -> bool:
        after, label = self.after, self.label
        return (
            state.status in self.statuses
            and (after is None or state.envoy_id > after)
            and (label is None or in_group(state.labels, *label))
            and (self.config_version is None or _version(state) == self.config_version)
        )


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """The list query, exactly as the API's description has it (`processor.web.openapi`):
    anything else is a `BadQuery`."""
    statuses = parse_statuses(query.get("status", ""))
    limit = parse_limit(query.get("limit", str(DEFAULT_LIMIT)))
    cursor = query.get("cursor") or None
    label = None
    if "label" in query:
        label = parse_label(query["label"])
        if label is None:
            raise BadQuery("label must be KEY=VALUE, e.g. env=prod")
    after = decode_cursor(cursor) if cursor else None
    version = query.get("config_version")
    if version is not None and not 1 <= len(version) <= MAX_VERSION_CHARS:
        raise BadQuery(f"config_version must be 1 to {MAX_VERSION_CHARS} characters")
    return ListQuery(statuses or DEFAULT_STATUSES, after, limit, label, version)


#: As the runs' JSON Schema bounds `config_version`.
MAX_VERSION_CHARS = 128


def _version(state: EnvoyState) -> str:
    return "(none)" if state.config_version is None else state.config_version


def parse_statuses(text: str) -> frozenset[Status]:
    """Names and aliases, comma-separated, with ASCII spaces around them: `\\tfailed` or a
    non-breaking space was taken once (`str.strip`), which the description refuses."""
    try:
        statuses = parse_status_filter(text)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    if re.fullmatch(STATUS_FILTER_PATTERN, text) is None:
        raise BadQuery("status must be statuses separated by commas, e.g. failed,degraded")
    return statuses


def parse_limit(text: str) -> int:
    """ASCII digits only: `int` alone also takes ` 5`, `+5`, `5_0` and other scripts' digits."""
    error = f"limit must be a whole number from 1 to {MAX_LIMIT}"
    if not (text.isascii() and text.isdigit()):
        raise BadQuery(error)
    try:
        limit = int(text)
    except ValueError:  # beyond `int`'s digit limit
        raise BadQuery(error) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(error)
    return limit


def encode_cursor(envoy_id: str) -> str:
    """Opaque to clients: the last envoy id of the page, URL-safe."""
    return base64.urlsafe_b64encode(envoy_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The envoy id in a cursor `encode_cursor` wrote: base64url without padding (a padded
    one was taken once, which the description refuses)."""
    if re.fullmatch(_CURSOR_CHARS, cursor) is None:
        raise BadQuery("cursor is not one this API returned")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadQuery("cursor is not one this API returned") from None


def select_envoys(
    states: Iterable[EnvoyState], query: ListQuery
) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` matches after the cursor in envoy id order, and whether more
    follow."""
    matches = (s for s in states if query.matches(s))
    first = heapq.nsmallest(query.limit + 1, matches, key=lambda s: s.envoy_id)
    return [envoy_summary(s) for s in first[: query.limit]], len(first) > query.limit


def merge_pages(pages: Iterable[tuple[list[dict[str, Any]], bool]], limit: int) -> dict[str, Any]:
    """Each worker's first `limit` matches hold the fleet's first `limit`; the page ends
    the listing only when no worker had more and nothing was cut here."""
    by_id: dict[str, dict[str, Any]] = {}
    more = False
    for items, has_more in pages:
        more = more or has_more
        for item in items:
            by_id.setdefault(item["envoy_id"], item)
    ordered = [by_id[k] for k in sorted(by_id)]
    page = ordered[:limit]
    more = more or len(ordered) > limit
    next_cursor = encode_cursor(page[-1]["envoy_id"]) if more and page else None
    return {"envoys": page, "next_cursor": next_cursor}


def bearer_matches(header: str | None, token: str) -> bool:
    """`Bearer <token>`, compared in constant time (no timing hint about the token).

    A header may hold any byte: aiohttp decodes it as UTF-8 with `surrogateescape`, so a
    raw Latin-1 `\xe9` arrives as a lone surrogate, which plain UTF-8 cannot encode
    (a 500 once). `surrogatepass` encodes any string, and such bytes never match."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    sent = given.strip().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(sent, token.encode("utf-8", "surrogatepass"))
