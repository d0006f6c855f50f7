"""Prometheus metrics of SPEC section 7: names with the `vigo_` prefix, units in the
name, counters ending in `_total`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from processor.faust_compat import StallAction
from projections.fleet import FleetCounts
from projections.groups import Groups
from topics.events import DeadLetterReason
from topics.statuses import ACTIVE_STATUSES, RunOutcome, Status


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        #: Only the fleet owner's numbers are current; elsewhere the fleet gauges are left
        #: out of the exposition (see `_FleetGauges`). Set by the web layer.
        self.fleet_owner: Callable[[], bool] = lambda: True
        self.fleet_convergence_ratio = Gauge(
            "vigo_fleet_convergence_ratio",
            "Compliant envoys over active envoys (0..1); NaN when no envoy is active. "
            "Exported only by the worker that owns the fleet projection.",
            registry=None,
        )
        self.fleet_envoys = Gauge(
            "vigo_fleet_envoys",
            "Active envoys by convergence status; inactive and revoked envoys (outside "
            'active) as status="inactive" and status="revoked". '
            "Exported only by the worker that owns the fleet projection.",
            ["status"],
            registry=None,
        )
        self._add_group_gauges()
        r.register(_FleetGauges(self))
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
        self._add_threshold_metric(r)
        for status in (*ACTIVE_STATUSES, Status.INACTIVE, Status.REVOKED):
            self.fleet_envoys.labels(status=status.value)
        self.fleet_convergence_ratio.set(float("nan"))

        self._add_delivery_metrics(r)
        self._add_run_metrics(r)
        self._add_deadletter_metrics(r)

    def _add_deadletter_metrics(self, r: CollectorRegistry) -> None:
        """Dead letters by reason (SPEC 10.5), every reason exported from the start."""
        self.deadletters = Counter(
            "vigo_deadletters",
            "Input records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in get_args(DeadLetterReason):
            self.deadletters.labels(reason=reason)

    def _add_group_gauges(self) -> None:
        """Groups by label (SPEC 10.2), exported with the fleet gauges (`_FleetGauges`)."""
        self.group_convergence_ratio = Gauge(
            "vigo_group_convergence_ratio",
            "Compliant over active envoys of one label group (0..1; NaN when none is "
            "active), for each value of each fleet.group_by key (bounded by "
            "fleet.max_group_values, the rest as '(other)'). Fleet owner only.",
            ["key", "value"],
            registry=None,
        )
        self.group_envoys = Gauge(
            "vigo_group_envoys",
            "Active envoys of one label group by convergence status. Fleet owner only.",
            ["key", "value", "status"],
            registry=None,
        )
        self._group_ratios: set[tuple[str, str]] = set()
        self._group_envoys: set[tuple[str, str, str]] = set()

    def _add_threshold_metric(self, r: CollectorRegistry) -> None:
        """The configured threshold (set by the topology), for Grafana's threshold line."""
        self.fleet_convergence_threshold_ratio = Gauge(
            "vigo_fleet_convergence_threshold_ratio",
            "The convergence.threshold alert's threshold (0..1), as configured; absent "
            "when the alert is not configured. Drawn with the fleet ratio in Grafana.",
            registry=None,
        )
        r.register(_Threshold(self))
        self.threshold: float | None = None

    def _add_run_metrics(self, r: CollectorRegistry) -> None:
        """Runs by outcome (SPEC 10.1), every outcome exported from the start."""
        self.runs = Counter(
            "vigo_runs",
            "Runs applied (late ones too), by outcome (clean, changed, intentional, "
            "partial, failed).",
            ["outcome"],
            registry=r,
        )
        for outcome in RunOutcome:
            self.runs.labels(outcome=outcome.value)

    def _add_delivery_metrics(self, r: CollectorRegistry) -> None:
        """Whether records are read in order and sweeps keep up (SPEC 10.9)."""
        self.outputs_dropped = Counter(
            "vigo_outputs_dropped",
            "Output records the broker refused for their size, dropped (SPEC 11.4): by "
            "topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.delivery_gaps = Counter(
            "vigo_delivery_gaps",
            "Holes found in the offsets an agent received on a partition (read again).",
            ["topic"],
            registry=r,
        )
        self.recovery_repairs, self.recovery_stalls = _recovery_counters(r)
        self.sweep_lag = Gauge(
            "vigo_sweep_lag_seconds",
            "How far behind the clock the newest liveness sweep ran (its tick's record time).",
            registry=r,
        )

    def set_fleet(self, counts: FleetCounts) -> None:
        for status, n in counts.by_status.items():
            self.fleet_envoys.labels(status=status.value).set(n)
        # Beside the active statuses, outside `active` (SPEC 10.3).
        self.fleet_envoys.labels(status=Status.INACTIVE.value).set(counts.inactive)
        self.fleet_envoys.labels(status=Status.REVOKED.value).set(counts.revoked)
        percent = counts.percent
        self.fleet_convergence_ratio.set(float("nan") if percent is None else percent / 100)

    def set_groups(self, groups: Groups) -> None:
        """The groups as published; the series of a value that disappeared are removed,
        so the series stay as bounded as the groups (label values go into label values,
        which the exposition format escapes)."""
        ratios: set[tuple[str, str]] = set()
        envoys: set[tuple[str, str, str]] = set()
        for key, values in groups.items():
            for value, counts in values.items():
                ratios.add((key, value))
                numbers = [(s.value, n) for s, n in counts.by_status.items()]
                numbers += [("inactive", counts.inactive), ("revoked", counts.revoked)]
                for status, n in numbers:
                    envoys.add((key, value, status))
                    self.group_envoys.labels(key, value, status).set(n)
                percent = counts.percent
                ratio = float("nan") if percent is None else percent / 100
                self.group_convergence_ratio.labels(key, value).set(ratio)
        for pair in self._group_ratios - ratios:
            self.group_convergence_ratio.remove(*pair)
        for triple in self._group_envoys - envoys:
            self.group_envoys.remove(*triple)
        self._group_ratios, self._group_envoys = ratios, envoys

    def delivery_gap(self, topic: str) -> None:
        self.delivery_gaps.labels(topic=topic).inc()

    def count_dropped_output(self, topic: str, reason: str) -> None:
        self.outputs_dropped.labels(topic=topic, reason=reason).inc()

    def recovery_repaired(self, table: str, keys: int) -> None:
        self.recovery_repairs.labels(table=table).inc(keys)

    def recovery_stalled(self, action: StallAction) -> None:
        self.recovery_stalls.labels(action=action).inc()

    def watch_rocksdb(self, usage: Callable[[], tuple[int, int] | None]) -> None:
        """Export the shared RocksDB budget's use (SPEC 11.5), read at scrape time."""
        self.registry.register(_RocksDBMemory(usage))

    def watch_worker(self, app: Any, fleet_owner: Callable[[], bool]) -> None:
        """Export fleet gauges only where `fleet_owner()` holds, and add a few of Faust's
        own numbers (consumer lag, rebalances, fleet ownership) read at scrape time."""
        self.fleet_owner = fleet_owner
        self.registry.register(_WorkerCollector(app, fleet_owner))


def _recovery_counters(r: CollectorRegistry) -> tuple[Counter, Counter]:
    """What the recovery audit put back and what the recovery watch did: each is a
    faust-streaming recovery gap ended (docs/faust-traps.md), and 0 the normal."""
    repairs = Counter(
        "vigo_recovery_repairs",
        "Keys a memory-store recovery left missing or stale, put back from the changelog "
        "by the recovery audit (a faust-streaming recovery gap; 0 is the normal).",
        ["table"],
        registry=r,
    )
    stalls = Counter(
        "vigo_recovery_stalls",
        "Changelog partitions a recovery waited on with nothing received for 10 s, by "
        "what the recovery watch did: declared_read (fetched past what recovery got; "
        "the recovery audit reads it again) or fetched_again. Each is a "
        "faust-streaming recovery gap; 0 is the normal.",
        ["action"],
        registry=r,
    )
    for action in get_args(StallAction):  # exported at 0 from the start
        stalls.labels(action=action)
    return repairs, stalls


class _FleetGauges:
    """The fleet gauges, left out on workers that do not own the fleet projection: a
    non-owner's values would be stale, and `sum`/`max` over workers must not mix them in."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self.metrics.fleet_convergence_ratio.describe()
        yield from self.metrics.fleet_envoys.describe()
        yield from self.metrics.group_convergence_ratio.describe()
        yield from self.metrics.group_envoys.describe()

    def collect(self) -> Iterator[Metric]:
        if not self.metrics.fleet_owner():
            return
        yield from self.metrics.fleet_convergence_ratio.collect()
        yield from self.metrics.fleet_envoys.collect()
        yield from self.metrics.group_convergence_ratio.collect()
        yield from self.metrics.group_envoys.collect()


class _Threshold:
    """The configured threshold, exported only when there is one (a NaN line would draw
    nothing anyway, and says less than its absence)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self.metrics.fleet_convergence_threshold_ratio.describe()

    def collect(self) -> Iterator[Metric]:
        if self.metrics.threshold is None:
            return
        self.metrics.fleet_convergence_threshold_ratio.set(self.metrics.threshold / 100)
        yield from self.metrics.fleet_convergence_threshold_ratio.collect()


class _RocksDBMemory:
    """`vigo_rocksdb_memory_bytes`: what the worker's RocksDB databases hold of their one
    budget (`processor.rocksdb.memory_mib`): the block cache, memtables included (they are
    charged to it), and the memtables alone. Absent until a RocksDB store is opened."""

    def __init__(self, usage: Callable[[], tuple[int, int] | None]) -> None:
        self.usage = usage

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        usage = self.usage()
        if usage is None:
            return
        family = self._family()
        family.add_metric(["block_cache"], usage[0])
        family.add_metric(["memtables"], usage[1])
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "vigo_rocksdb_memory_bytes",
            "Bytes of the shared RocksDB memory budget in use: the block cache (memtables "
            "charged to it included) and the memtables alone.",
            labels=["part"],
        )


class _WorkerCollector:
    """Faust's consumer position and rebalances, read from its monitor when scraped."""

    def __init__(self, app: Any, fleet_owner: Callable[[], bool]) -> None:
        self.app = app
        self.fleet_owner = fleet_owner

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        lag, rebalances, owner = self._families()
        monitor = self.app.monitor
        read: dict[Any, int] = dict(monitor.tp_read_offsets)
        for tp, end in sorted(dict(monitor.tp_end_offsets).items()):
            if tp in read and end is not None:
                lag.add_metric([tp.topic, str(tp.partition)], max(0, end - read[tp] - 1))
        rebalances.add_metric([], self.app.rebalancing_count)
        owner.add_metric([], 1.0 if self.fleet_owner() else 0.0)
        yield lag
        yield rebalances
        yield owner

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "vigo_consumer_lag_records",
                "Records not yet processed per consumed partition (since the last rebalance).",
                labels=["topic", "partition"],
            ),
            CounterMetricFamily(
                "vigo_rebalances", "Consumer group rebalances seen by this worker."
            ),
            GaugeMetricFamily(
                "vigo_fleet_owner",
                "1 on the worker that owns the fleet projection (and exports the fleet gauges).",
            ),
        )
