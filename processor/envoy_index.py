"""The envoy agent's per-partition indexes and the web layer's reads: the partition's
envoys by status and by group (the fleet projection's first stage), built from the
envoys' heads once per assignment and then moved with every state, and the reads of the
envoys this worker actively owns."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from processor.records import (
    EnvoyHead,
    StoredEnvoy,
    decode_envoy_head,
    decode_stored_envoy,
    encode_stored_envoy,
    head_labels,
)
from projections.envoy import EnvoyState
from projections.fleet import FleetCounts
from projections.groups import GroupTally, in_group
from topics.statuses import Status

if TYPE_CHECKING:
    from faust.types import TableT

    from processor.deadlines import Deadlines
    from processor.progress import CatchUp
    from processor.state import HeldTable


class PartitionIndex:
    """Mixed into `EnvoyProcessor`: the attributes below are its fields."""

    table: TableT[Any, Any]
    state: HeldTable
    catch_up: CatchUp
    group_by: tuple[str, ...]
    deadlines: dict[int, Deadlines]
    counts: dict[int, FleetCounts]
    groups: dict[int, GroupTally]
    _stored: Callable[[bytes], StoredEnvoy | None]

    def _heads(self, partition: int) -> dict[bytes, EnvoyHead]:
        """The heads of the partition's envoys (the batch's held states over the table's):
        all that the indexes built on assignment need, read without decoding each envoy."""
        heads = {}
        for key, data in self.table.items():
            if data is not None:
                head = decode_envoy_head(data)
                if head.partition == partition:
                    heads[key] = head
        for key, (held_partition, record) in self.state.held.items():
            if held_partition != partition:
                continue
            if type(record) is StoredEnvoy:
                heads[key] = decode_envoy_head(encode_stored_envoy(record))
            else:
                heads.pop(key, None)
        return heads

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.deadlines.pop(partition, None)
            self.counts.pop(partition, None)
            self.groups.pop(partition, None)

    def counts_for(self, partition: int) -> FleetCounts:
        """The partition's envoys by status: built from the table (and the batch's held
        states) once per assignment, then moved with every status change published."""
        counts = self.counts.get(partition)
        if counts is None:
            heads = self._heads(partition).values()
            counts = FleetCounts.of_statuses(h.status for h in heads)
            self.counts[partition] = counts
            if self.group_by:
                envoys = ((h.status, head_labels(h)) for h in heads)
                self.groups[partition] = GroupTally.of_envoys(self.group_by, envoys)
        return counts

    def group_tally(self, partition: int) -> GroupTally | None:
        """The partition's envoys by group (None without `fleet.group_by`), built with and
        moved like its counts."""
        self.counts_for(partition)
        return self.groups.get(partition)

    def _move(self, partition: int, old: Status | None, new: Status | None) -> None:
        """Move the partition's counts by a state's status (not by the published change:
        a revocation of an unknown envoy publishes nothing but counts as revoked)."""
        counts = self.counts.get(partition)
        if counts is not None:
            self.counts[partition] = counts.moved(old, new)

    def _move_groups(self, partition: int, old: EnvoyState | None, new: EnvoyState | None) -> None:
        """Groups move with the (old, new) state pair, not with status changes alone: a
        re-enrollment with new labels moves an envoy between groups, status unchanged.
        `new` None: the envoy was purged (SPEC 10.3) and leaves its groups."""
        tally = self.groups.get(partition)
        if tally is None:
            return
        if new is None:
            if old is not None:
                tally.move(old.status, old.labels, None, None)
        else:
            tally.move_state(old, new)

    def owned(self, envoy_id: str) -> EnvoyState | None:
        """The envoy if this worker actively owns its partition: the local table may still
        hold entries of partitions that moved away, or standby copies."""
        data = self.table.get(envoy_id.encode("utf-8"))
        if data is None:
            return None
        record = decode_stored_envoy(data)
        if record.partition not in self.catch_up.active_partitions():
            return None
        return record.state

    def owned_envoys(
        self,
        statuses: Container[Status] | None = None,
        after: str | None = None,
        first: int | None = None,
        label: tuple[str, str] | None = None,
    ) -> list[EnvoyState]:
        """The envoys of the partitions this worker actively owns, read in one pass (no
        await), so a batch never interleaves with the read: those with one of `statuses`
        and an id after `after`, only the `first` in id order if given. Filtered by their
        heads and keys (the envoy ids in UTF-8, which sort as the ids do) before anything
        is decoded whole; with `label` (KEY, VALUE), only the envoys in that group (their
        labels read from the tail alone)."""
        owned = self.catch_up.active_partitions()
        after_key = after.encode("utf-8") if after is not None else None
        keys = []
        for key, data in self.table.items():
            if data is None or (after_key is not None and key <= after_key):
                continue
            head = decode_envoy_head(data)
            if (
                head.partition in owned
                and (statuses is None or head.status in statuses)
                and (label is None or in_group(head_labels(head), *label))
            ):
                keys.append(key)
        if first is not None:
            keys = heapq.nsmallest(first, keys)
        return [decode_stored_envoy(self.table[key]).state for key in keys]
