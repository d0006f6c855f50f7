"""Topic names, derived from the configured prefix (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "vigo."


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = DEFAULT_PREFIX

    @property
    def enrollments(self) -> str:
        return f"{self.prefix}envoy.enrollments"

    @property
    def checkins(self) -> str:
        return f"{self.prefix}envoy.checkins"

    @property
    def runs(self) -> str:
        return f"{self.prefix}envoy.runs"

    @property
    def status_changes(self) -> str:
        return f"{self.prefix}envoy.status-changes"

    @property
    def fleet_convergence(self) -> str:
        return f"{self.prefix}fleet.convergence"

    @property
    def fleet_rollouts(self) -> str:
        """Rollouts by `config_version` (SPEC 11.2), keyed `fleet` or `KEY=VALUE`."""
        return f"{self.prefix}fleet.rollouts"

    @property
    def fleet_partials(self) -> str:
        """Internal: per-partition fleet counts, aggregated by the fleet owner."""
        return f"{self.prefix}fleet.partials"

    @property
    def ticks(self) -> str:
        """Internal: liveness ticks, co-partitioned with the inputs, so sweeps run inside
        the envoy agent's stream like any record (Kafka Streams' punctuator)."""
        return f"{self.prefix}envoy.ticks"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def deadletter_replays(self) -> str:
        """Compacted: the dead letters `vigocli deadletters replay` republished (SPEC 10.5)."""
        return f"{self.prefix}deadletter.replays"

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.enrollments, self.checkins, self.runs)
