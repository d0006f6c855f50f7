"""Prometheus metrics of SPEC section 7: names with the `vigo_` prefix, units in the
name, counters ending in `_total`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from projections.fleet import FleetCounts
from projections.status import ACTIVE_STATUSES


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fleet_convergence_ratio = Gauge(
            "vigo_fleet_convergence_ratio",
            "Compliant envoys over active envoys (0..1); NaN when no envoy is active.",
            registry=r,
        )
        self.fleet_envoys = Gauge(
            "vigo_fleet_envoys", "Active envoys by convergence status.", ["status"], registry=r
        )
        self.events = Counter(
            "vigo_events",
            "Input records by topic and outcome (applied, duplicate, deadletter).",
            ["topic", "outcome"],
            registry=r,
        )
        self.status_transitions = Counter(
            "vigo_status_transitions",
            "Envoy status changes published, by from and to status.",
            ["from", "to"],
            registry=r,
        )
        self.alerts = Counter(
            "vigo_alerts",
            "Alerts by event and outcome (queued, sent, retried, duplicate, failed).",
            ["event", "outcome"],
            registry=r,
        )
        self.event_processing = Histogram(
            "vigo_event_processing_seconds",
            "Time to apply one batch of input records, divided per record.",
            buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.1),
            registry=r,
        )
        self.alert_outbox_pending = Gauge(
            "vigo_alert_outbox_pending",
            "Alerts written to the outbox and not yet accepted by the SMTP server.",
            registry=r,
        )
        for status in ACTIVE_STATUSES:
            self.fleet_envoys.labels(status=status.value)
        self.fleet_convergence_ratio.set(float("nan"))

    def set_fleet(self, counts: FleetCounts) -> None:
        for status, n in counts.by_status.items():
            self.fleet_envoys.labels(status=status.value).set(n)
        percent = counts.percent
        self.fleet_convergence_ratio.set(float("nan") if percent is None else percent / 100)
