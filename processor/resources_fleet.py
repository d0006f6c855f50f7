"""Resources that drift (SPEC 11.3), stage 2: on the fleet owner, the partitions'
summaries (`processor.resources`) arrive on the partials topic and are kept, as sent, in
the one-partition table `resources-parts`; `/api/resources/top` merges the live hours of
one kind and scope (`projections.resources.merge`), cached until a summary changes.
`install_resources` wires both stages into the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Gauge

from processor.declarations import declare_table
from processor.faust_compat import BatchProducer, TableWriter
from processor.outputs import Outputs
from processor.resources import (
    FLEET,
    KEY_PREFIX,
    ResourceCounter,
    ResourceSettings,
    decode_bucket,
    parse_key,
    resource_settings,
)
from processor.state import HeldTable
from projections.resources import HOUR_MS, SpaceSaving, merge, oldest_live_bucket
from topics.names import TopicNames

if TYPE_CHECKING:
    import faust
    from faust.types import TP
    from prometheus_client import CollectorRegistry

    from processor.config import Settings
    from processor.declarations import Topics

#: The table's one partition, like the partials topic it is written from.
PARTS_PARTITION: Final = 0
#: A merged answer is never sent anywhere: its bytes are bounded by its capacity alone.
_MERGED_BYTES: Final = 1 << 62
MAX_LIMIT: Final = 1000


@dataclass
class ResourceParts:
    """The fleet owner's side: the partitions' latest summaries, merged on request."""

    held: HeldTable
    settings: ResourceSettings
    partitions: int
    clock: Callable[[], float]
    _version: int = 0
    #: (kind, scope) -> (version, oldest live hour, the merged summary).
    _merged: dict[tuple[str, str], tuple[int, int, SpaceSaving]] = field(default_factory=dict)

    def take(self, key: bytes | None, value: bytes | None) -> bool:
        """A record of the partials topic: True when it was a summary (kept, to be
        written with the aggregator's tables), False for everything else."""
        if key is None or not key.startswith(KEY_PREFIX):
            return False
        self.held.put(PARTS_PARTITION, key, value or None)
        self._version += 1
        self._merged.clear()
        return True

    def merged(self, kind: str, scope: str = FLEET) -> SpaceSaving:
        """Every partition's live hours of `kind` in `scope`, merged."""
        now_ms = int(self.clock() * 1000)
        oldest = oldest_live_bucket(now_ms, self.settings.window_ms)
        cached = self._merged.get((kind, scope))
        if cached is not None and cached[0] == self._version and cached[1] == oldest:
            return cached[2]
        summaries = []
        for key, data in self.held.items():
            parsed = parse_key(key) if isinstance(key, bytes) else None
            if parsed is None or parsed[1:] != (kind, scope) or parsed[0] >= self.partitions:
                continue
            bucket = decode_bucket(data, self.settings.capacity) if data else None
            if bucket is not None and oldest <= bucket.start_ms <= now_ms + HOUR_MS:
                summaries.append(bucket.summary)
        result = merge(summaries, self.settings.capacity, _MERGED_BYTES)
        self._merged[(kind, scope)] = (self._version, oldest, result)
        return result

    def top_doc(self, kind: str, scope: str, limit: int) -> dict[str, Any]:
        """`{"window_s", "resources": [{"id", "module", "runs", "envoys", "error"}...]}`."""
        top = self.merged(kind, scope).top(min(limit, MAX_LIMIT))
        return {
            "window_s": self.settings.window_ms // 1000,
            "resources": [
                {
                    "id": t.id,
                    "module": t.module,
                    "runs": t.runs,
                    "envoys": t.envoys,
                    "error": t.error,
                }
                for t in top
            ],
        }


def install_resources(
    app: faust.App,
    settings: Settings,
    registry: CollectorRegistry,
    topics: Topics,
    outputs: Outputs,
    batches: BatchProducer,
    clock: Callable[[], float],
) -> tuple[ResourceCounter, ResourceParts]:
    """Both stages: the counter for the envoy agent (its table flushed before the envoy
    states at each checkpoint), the parts for the aggregator (flushed with its tables)."""
    config = resource_settings(settings)
    table = declare_table(app, settings, "resources", settings.kafka.partitions, bytes, bytes)
    counter = ResourceCounter(
        app=app,
        table=table,
        held=HeldTable(TableWriter(table, batches, outputs.deliver)),
        partials_topic=topics.partials,
        settings=config,
        clock=clock,
        counters_gauge=Gauge(
            "vigo_resource_counters",
            "Space-Saving counters this worker holds for its partitions' drifting "
            "resources (SPEC 11.3), by kind; bounded by resources.capacity per summary.",
            ["kind"],
            registry=registry,
        ),
    )
    counter.held.encode = counter.encode
    parts_table = declare_table(app, settings, "resources-parts", 1, bytes, bytes)
    parts = ResourceParts(
        HeldTable(TableWriter(parts_table, batches, outputs.deliver)),
        config,
        settings.kafka.partitions,
        clock,
    )
    inputs = frozenset(TopicNames(settings.kafka.topic_prefix).inputs)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        counter.forget_partitions({tp.partition for tp in revoked if tp.topic in inputs})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        counter.assigned({tp.partition for tp in assigned if tp.topic in inputs})

    return counter, parts
