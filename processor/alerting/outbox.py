"""The outbox writer: the detectors' handlers, writing `vigo.alert/1` records.

The handlers are called synchronously from inside the envoy agent's and the fleet
aggregator's streams, before the detector's state that records the alert is written to
its table (a crash in between repeats the alert rather than losing it). The agent that
called them writes its state only once these records are acknowledged
(`processor.outputs`), so an alert is in the outbox before the event that caused it
counts as processed (at-least-once), and the deterministic id makes a replayed alert a
duplicate the sender skips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import faust

from alerts.rules import StaleLike, stale_alerts, threshold_alert
from processor.metrics import Metrics
from processor.outputs import Outputs
from projections.fleet import FleetCounts
from projections.groups import parse_label
from projections.threshold import ThresholdState
from topics.codec import encode_alert
from topics.events import Alert

log = logging.getLogger(__name__)


@dataclass
class Outbox:
    #: The Faust topic of `vigo.alerts` (one partition).
    topic: faust.TopicT
    outputs: Outputs
    metrics: Metrics
    #: Whether `envoy.stale` is configured.
    stale: bool

    def write(self, alert: Alert) -> None:
        self.outputs.send(
            self.topic,
            key=alert.alert_id.encode("utf-8"),
            value=encode_alert(alert.alert_id, alert.event, alert.at, alert.subject, alert.details),
        )
        self.metrics.alerts.labels(event=alert.event, outcome="queued").inc()
        log.info("alert queued: %s", alert.alert_id)

    def on_threshold(
        self,
        label: str | None,
        state: ThresholdState,
        counts: FleetCounts,
        threshold: float,
        now_ms: int,
        *,
        recovery: bool = False,
    ) -> None:
        """A `FleetAggregator` threshold handler: once per downward crossing of the fleet
        (`label` None) or of a group (`label` `KEY=VALUE`); with `recovery`, its recovery
        handler: once per crossing back, ending fall number `state.crossings`."""
        group = parse_label(label) if label is not None else None
        self.write(
            threshold_alert(state.crossings, counts, threshold, now_ms, group, recovery=recovery)
        )

    def on_stale(self, partition: int, envoys: Sequence[StaleLike], now_ms: int) -> None:
        """An `EnvoyProcessor` stale handler: the envoys one sweep found newly stale, one
        alert each (the sender groups them into digests across the fleet)."""
        if not self.stale:
            return
        for alert in stale_alerts(partition, envoys, now_ms):
            self.write(alert)
