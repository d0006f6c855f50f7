"""The envoy agent's liveness sweeps: on each tick record, the envoys of the tick's
partition whose deadline passed go stale, offline, inactive or are purged (SPEC 4, 10.3),
as of the tick's own record time. Deadlines sit in a heap per partition (`Deadlines`),
built from the envoys' heads on the first tick after an assignment, so a sweep touches
only what expired."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from processor.deadlines import Deadlines
from processor.records import TICK_KEY, EnvoyHead, StoredEnvoy
from projections.envoy import EnvoyState, Rules, StatusChange, next_deadline_ms, sweep_envoy
from topics.statuses import Status

if TYPE_CHECKING:
    import faust
    from faust.types import Message

    from processor.faust_compat import DeliveryGuard
    from processor.metrics import Metrics
    from processor.progress import CatchUp
    from processor.state import HeldTable

#: Envoys swept per tick and partition: a network partition is worked off over several
#: ticks instead of stalling the agent.
SWEEP_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class StaleEnvoy:
    envoy_id: str
    episode: int
    last_seen_ms: int
    labels: dict[str, str]


StaleHandler = Callable[[int, list[StaleEnvoy], int], None]


@dataclass(frozen=True, slots=True)
class Purged:
    """A held delete (SPEC 10.3): the envoy's key is removed from the table and gets a
    tombstone in its changelog partition."""

    partition: int


#: (key, status before, new state or delete, change to publish)
SweptRecord = tuple[bytes, Status, StoredEnvoy | Purged, StatusChange | None]


class LivenessSweeps:
    """Mixed into `EnvoyProcessor`: the attributes below are its fields and methods."""

    rules: Rules
    guard: DeliveryGuard
    catch_up: CatchUp
    metrics: Metrics
    clock: Callable[[], float]
    stale_handlers: list[StaleHandler]
    group_by: tuple[str, ...]
    deadlines: dict[int, Deadlines]
    state: HeldTable
    _stored: Callable[..., StoredEnvoy | None]
    _hold: Callable[[int, bytes, StoredEnvoy | Purged], None]
    _index_partition: Callable[[int], None]
    _publish: Callable[[bytes, int, StatusChange], None]
    _move: Callable[[int, Status | None, Status | None], None]
    _move_groups: Callable[[int, EnvoyState | None, EnvoyState | None], None]
    _listed: Callable[[int, bytes, EnvoyState | None], None]
    _move_rollouts: Callable[[int, bytes, EnvoyState | None, EnvoyState | None, int], None]

    async def send_ticks(self, ticks: faust.TopicT) -> None:
        """A tick into each owned, caught-up input partition; its record time is the
        sweep's "now" (the injectable clock)."""
        await self.catch_up.refresh()
        for partition in self.catch_up.active_partitions():
            if self.catch_up.partition_caught_up(partition):
                await ticks.send(
                    key=TICK_KEY, value=b"", partition=partition, timestamp=self.clock()
                )

    def _schedule(self, partition: int, key: bytes, state: EnvoyState) -> None:
        deadlines = self.deadlines.get(partition)
        if deadlines is not None:
            deadlines.schedule(key, next_deadline_ms(state, self.rules))

    def _deadlines_for(self, partition: int) -> Deadlines:
        """Built from the table (and the batch's held states) on the first tick after the
        partition was assigned, with the partition's other indexes
        (`PartitionIndex._index_partition`)."""
        deadlines = self.deadlines.get(partition)
        if deadlines is None:
            self._index_partition(partition)
            deadlines = self.deadlines[partition]
        return deadlines

    def _deadlines_of(self, heads: Mapping[bytes, EnvoyHead]) -> Deadlines:
        rules = self.rules
        return Deadlines.of((k, next_deadline_ms(h.liveness(), rules)) for k, h in heads.items())

    def _on_tick(self, tick: Message) -> None:
        """Sweep the partition's expired deadlines as of the tick's own record time, so a
        replayed tick sweeps exactly as the first reading did."""
        partition = tick.partition
        if partition not in self.catch_up.active_partitions():
            return
        if not self.catch_up.partition_caught_up(partition) or self.guard.settling(partition):
            return
        now_ms = int(tick.timestamp * 1000)
        self.metrics.sweep_lag.set(max(0.0, self.clock() - now_ms / 1000))
        stale, swept_records = self._sweep(partition, now_ms)
        # Alerts are sent before the states that record them are written (`commit`).
        if stale:
            for handler in self.stale_handlers:
                handler(partition, stale, now_ms)
        for key, old_status, stored, change in swept_records:
            # Outputs first: the change (`to: purged` too) goes out before the state (or
            # the delete) that records it is written (`commit`).
            self._hold(partition, key, stored)
            self._listed(partition, key, stored.state if type(stored) is StoredEnvoy else None)
            if change is not None:
                self._publish(key, partition, change)
            new_status = stored.state.status if type(stored) is StoredEnvoy else None
            if new_status is not old_status:
                self._move(partition, old_status, new_status)

    def _sweep(self, partition: int, now_ms: int) -> tuple[list[StaleEnvoy], list[SweptRecord]]:
        """The envoys of `partition` whose deadline passed: their new states (or deletes)
        and changes, and those that just went stale. Touches only what expired (the
        deadline heap)."""
        deadlines = self._deadlines_for(partition)
        stale: list[StaleEnvoy] = []
        swept_records: list[SweptRecord] = []
        for key in list(deadlines.due(now_ms, SWEEP_LIMIT)):
            record = self._stored(key, partition)
            if record is None or record.partition != partition:
                continue
            state = record.state
            deadline = next_deadline_ms(state, self.rules)
            if deadline is None:
                continue
            if deadline > now_ms:
                deadlines.schedule(key, deadline)
                continue
            swept = sweep_envoy(state, now_ms, self.rules)
            if swept.purged:
                swept_records.append((key, state.status, Purged(partition), swept.change))
                if self.group_by:
                    self._move_groups(partition, state, None)
                self._move_rollouts(partition, key, state, None, now_ms)
                continue
            if swept.state != state:
                stored = StoredEnvoy(partition, swept.state)
                swept_records.append((key, state.status, stored, swept.change))
                if self.group_by:
                    self._move_groups(partition, state, swept.state)
                self._move_rollouts(partition, key, state, swept.state, now_ms)
            if swept.became_stale:
                stale.append(
                    StaleEnvoy(
                        envoy_id=state.envoy_id,
                        episode=swept.state.stale_episodes,
                        last_seen_ms=state.last_alive_ms,
                        labels=dict(state.labels),
                    )
                )
            # A deadline that passed too (inactive, then purge, after a long stop) is for the
            # next tick: this sweep must not pop the envoy again before its state is held.
            after = next_deadline_ms(swept.state, self.rules)
            deadlines.schedule(key, None if after is None else max(after, now_ms + 1))
        return stale, swept_records
