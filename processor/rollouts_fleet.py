"""Rollouts by `config_version` (SPEC 11.2), stage 2, on the fleet owner: on each of the
aggregator's ticks, the partials' rollouts are merged (fleet-wide, and per group value the
fleet names), the newest version and the stuck count worked out against the durable
first-seen times, and then, as the rest of the aggregator's outputs:

- `vigo.fleet.rollouts` gets a record per scope (`fleet`, `KEY=VALUE`) whose numbers
  changed, at most once per check-in interval;
- the marks (50% and 90% reached, stuck mail sent) and the first-seen times go to table
  `fleet-state`, after the outputs (`processor.state`), so they survive restarts and
  moves of the fleet owner;
- the `rollout.stuck` alert goes to the outbox, once per newest version and scope;
- the gauges `vigo_rollout_*` follow the fleet's numbers.

`install_rollouts` wires both stages into the app (`processor.topology`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric

from alerts.rollouts import stuck_alert
from processor.records import FleetPart
from processor.records_rollouts import FirstSeen
from processor.rollouts import RolloutSettings
from processor.state import HeldTable
from projections.groups import NONE_VALUE, OTHER_VALUE, Groups
from projections.rollouts import (
    NONE_VERSION,
    RolloutMarks,
    RolloutView,
    advance,
    fold_groups,
    kept_first_seen,
    merge_group_versions,
    merge_versions,
    rollout_view,
    stuck_fires,
)
from topics.codec import encode_rollout
from topics.events import Alert
from topics.timestamps import iso_from_ms

if TYPE_CHECKING:
    import faust

    from processor.declarations import Topics
    from processor.metrics import Metrics
    from processor.outputs import Outputs

STATE_PARTITION: Final = 0
FIRST_SEEN_KEY: Final = "rollout-first-seen"
FLEET_SCOPE: Final = "fleet"


def marks_key(scope: str) -> str:
    """The `fleet-state` key of a scope's marks: `rollout` (the fleet), `rollout/K=V`."""
    return "rollout" if scope == FLEET_SCOPE else f"rollout/{scope}"


def rollout_doc(view: RolloutView, marks: RolloutMarks) -> dict[str, Any]:
    """`GET /api/rollouts` (SPEC 11.2): `newest`, `versions`, `stuck`."""
    newest = None
    if view.newest is not None:
        counts = view.newest_counts
        same = marks.version == view.newest
        newest = {
            "version": view.newest,
            "first_seen": _iso(counts.first_seen_ms),
            "envoys": counts.envoys,
            "converged": counts.converged,
            "reached_50_at": _iso(marks.reached_50_ms) if same else None,
            "reached_90_at": _iso(marks.reached_90_ms) if same else None,
        }
    versions = [
        {"version": v, "envoys": c.envoys, "first_seen": _iso(c.first_seen_ms)}
        for v, c in view.versions.items()
    ]
    return {"newest": newest, "versions": versions, "stuck": view.stuck}


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_from_ms(ms)


@dataclass
class RolloutFleet:
    """Stage 2 (see the module text); `on_tick` runs inside the aggregator's stream."""

    settings: RolloutSettings
    group_by: tuple[str, ...]
    state: HeldTable
    outputs: Outputs
    topic: faust.TopicT
    interval_ms: int
    #: The outbox writer, when `smtp.events.rollout.stuck` is configured.
    alert: Callable[[Alert], None] | None = None
    #: scope -> its view, as of the last tick.
    views: dict[str, RolloutView] = field(default_factory=dict)
    _published: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)

    def compute(
        self, parts: list[FleetPart], groups: Groups, now_ms: int
    ) -> dict[str, RolloutView]:
        """Every scope's view, from the partials and the durable first-seen times."""
        cap, after = self.settings.max_versions, self.settings.stuck_after_ms
        fleet = merge_versions(part.rollouts.fleet for part in parts)
        known = self.first_seen()
        views = {FLEET_SCOPE: rollout_view(fleet, known, now_ms, after, cap)}
        if self.group_by:
            merged = merge_group_versions(part.rollouts.groups for part in parts)
            named = {key: list(values) for key, values in groups.items()}
            for key, values in fold_groups(merged, named).items():
                for value, versions in values.items():
                    views[f"{key}={value}"] = rollout_view(versions, known, now_ms, after, cap)
        return views

    def first_seen(self) -> Mapping[str, int]:
        held = self.state.get(FIRST_SEEN_KEY)
        return held.times if isinstance(held, FirstSeen) else {}

    def marks(self, scope: str) -> RolloutMarks:
        held = self.state.get(marks_key(scope))
        return held if isinstance(held, RolloutMarks) else RolloutMarks()

    def on_tick(self, parts: list[FleetPart], groups: Groups, now_ms: int) -> None:
        """Views, first-seen times, marks, the stuck alert and the records, in that order."""
        views = self.compute(parts, groups, now_ms)
        fleet = merge_versions(part.rollouts.fleet for part in parts)
        known = self.first_seen()
        cap = self.settings.max_versions
        kept = kept_first_seen(known, fleet, views[FLEET_SCOPE].versions, cap)
        if kept != known:
            self.state.put(STATE_PARTITION, FIRST_SEEN_KEY, FirstSeen(kept))
        for scope, view in views.items():
            marks = self.marks(scope)
            new = advance(marks, view, now_ms)
            max_stuck = self.settings.max_stuck
            if (
                self.alert is not None
                and max_stuck is not None
                and stuck_fires(new, view, max_stuck)
            ):
                group = None if scope == FLEET_SCOPE else _split(scope)
                stuck = _stuck_samples(parts, view, group, self.group_by, groups)
                self.alert(stuck_alert(view, stuck, max_stuck, now_ms, group))
                new = RolloutMarks(new.version, new.reached_50_ms, new.reached_90_ms, True)
            if new != marks:
                self.state.put(STATE_PARTITION, marks_key(scope), new)
            self._publish(scope, view, new, now_ms)
        self.views = views

    def _publish(self, scope: str, view: RolloutView, marks: RolloutMarks, now_ms: int) -> None:
        """On change, at most once an interval per scope."""
        doc = rollout_doc(view, marks)
        last = self._published.get(scope)
        if last is not None and (last[0] == doc or now_ms - last[1] < self.interval_ms):
            return
        label = None if scope == FLEET_SCOPE else scope
        self.outputs.send(
            self.topic,
            key=scope.encode("utf-8"),
            value=encode_rollout(iso_from_ms(now_ms), label, view.active, doc),
        )
        self._published[scope] = (doc, now_ms)

    def forget(self) -> None:
        """The fleet moved away: a new owner publishes afresh."""
        self.views = {}
        self._published.clear()


def _split(scope: str) -> tuple[str, str]:
    key, _, value = scope.partition("=")
    return key, value


def _stuck_samples(
    parts: list[FleetPart],
    view: RolloutView,
    group: tuple[str, str] | None,
    group_by: tuple[str, ...],
    groups: Groups,
) -> list[tuple[str, str]]:
    """(envoy id, version) of sampled envoys stuck in the scope: on a version other than
    the newest and `(none)`, in the group when there is one."""
    index = group_by.index(group[0]) if group is not None and group[0] in group_by else None
    named = set(groups.get(group[0], {})) if group is not None else set()
    found = []
    for part in parts:
        for version, sampled in part.rollouts.samples.items():
            if version in (view.newest, NONE_VERSION):
                continue
            for envoy_id, values in sampled:
                if group is not None:
                    if index is None or index >= len(values):
                        continue
                    value = NONE_VALUE if values[index] is None else values[index]
                    if value not in named and value != NONE_VALUE:
                        value = OTHER_VALUE
                    if value != group[1]:
                        continue
                found.append((envoy_id, version))
    return found


class RolloutGauges:
    """`vigo_rollout_envoys{version}`, `vigo_rollout_newest_converged_ratio` and
    `vigo_rollout_stuck_envoys`, the fleet's, exported by the fleet owner only."""

    def __init__(self, fleet: RolloutFleet, owner: Callable[[], bool]) -> None:
        self.fleet, self.owner = fleet, owner

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        if not self.owner():
            return iter(())
        return iter(self._families(self.fleet.views))

    @staticmethod
    def _families(views: Mapping[str, RolloutView]) -> list[Metric]:
        envoys = GaugeMetricFamily(
            "vigo_rollout_envoys",
            "Active envoys per config_version (the rollouts.max_versions most common and the "
            "newest; '(none)', '(other)'). Fleet owner only.",
            labels=["version"],
        )
        ratio = GaugeMetricFamily(
            "vigo_rollout_newest_converged_ratio",
            "Active envoys on the newest config_version and converged, over active envoys "
            "(0..1; NaN with no version). Fleet owner only.",
        )
        stuck = GaugeMetricFamily(
            "vigo_rollout_stuck_envoys",
            "Active, online envoys still on an older config_version rollouts.stuck_after "
            "after the newest was first seen. Fleet owner only.",
        )
        view = views.get(FLEET_SCOPE)
        if view is not None:
            for version, counts in view.versions.items():
                envoys.add_metric([version], counts.envoys)
            value = view.converged_ratio
            ratio.add_metric([], float("nan") if value is None else value)
            stuck.add_metric([], view.stuck)
        return [envoys, ratio, stuck]


def rollout_settings(settings: Any) -> RolloutSettings:
    stuck = settings.smtp.events.rollout_stuck
    return RolloutSettings(
        settings.rollouts.max_versions,
        settings.rollouts.stuck_after * 1000,
        None if stuck is None else stuck.max_stuck,
    )


def install_rollouts(vigo: Any, topics: Topics, outputs: Outputs, metrics: Metrics) -> None:
    """Stage 1's bounds on the partials, stage 2 on the aggregator, the gauges (`vigo`: the
    app's `processor.topology.Vigo`)."""
    settings = rollout_settings(vigo.settings)
    vigo.fleet.rollouts.settings = settings
    fleet = RolloutFleet(
        settings,
        tuple(vigo.settings.fleet.group_by),
        vigo.aggregator.state,
        outputs,
        topics.rollouts,
        vigo.settings.checkin.interval_s * 1000,
    )
    vigo.aggregator.rollouts = fleet
    metrics.registry.register(RolloutGauges(fleet, vigo.aggregator.owns_fleet))
