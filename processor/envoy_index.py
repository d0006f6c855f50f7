"""The envoy agent's per-partition indexes and the web layer's reads: the partition's
envoys by status and by group (the fleet projection's first stage) and its envoy keys in
order by status and group (the list index, `processor.envoy_list_index`), built from the
envoys' heads once per assignment and then moved with every state, and the reads of the
envoys this worker actively owns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

from processor.envoy_list_index import PartitionKeys, SortedKeys, merged_after
from processor.faust_compat import partition_items
from processor.records import (
    EnvoyHead,
    StoredEnvoy,
    decode_envoy_head,
    head_labels,
)
from processor.rollouts import PartitionRollouts, envoys_on_version, move_rollouts
from projections.envoy import EnvoyState
from projections.fleet import FleetCounts
from projections.groups import GroupTally, in_group
from topics.statuses import Status

if TYPE_CHECKING:
    from faust.types import TableT

    from processor.deadlines import Deadlines
    from processor.progress import CatchUp
    from processor.state import HeldTable


log = logging.getLogger(__name__)


class PartitionIndex:
    """Mixed into `EnvoyProcessor`: the attributes below are its fields."""

    table: TableT[Any, Any]
    state: HeldTable
    catch_up: CatchUp
    group_by: tuple[str, ...]
    deadlines: dict[int, Deadlines]
    counts: dict[int, FleetCounts]
    groups: dict[int, GroupTally]
    #: Per partition, its envoy keys by status and group (`envoy_list_index`), built and
    #: dropped with `counts`.
    listing: dict[int, PartitionKeys]
    #: Per partition, its envoys by `config_version` (SPEC 11.2), built and dropped with
    #: `counts`.
    rollouts: dict[int, PartitionRollouts]
    _stored: Callable[..., StoredEnvoy | None]
    _deadlines_of: Callable[[Mapping[bytes, EnvoyHead]], Deadlines]

    def _heads(self, partition: int) -> dict[bytes, EnvoyHead]:
        """The heads of the partition's envoys (the batch's held states over the table's):
        all that the indexes built on assignment need, read without decoding each envoy."""
        return self._heads_in({partition})[partition]

    def _heads_in(self, partitions: set[int]) -> dict[int, dict[bytes, EnvoyHead]]:
        """`_heads` of several partitions in one pass over the table."""
        heads: dict[int, dict[bytes, EnvoyHead]] = {p: {} for p in partitions}
        for key, data in partition_items(self.table, partitions):
            if data is not None:
                head = decode_envoy_head(data)
                if head.partition in heads:
                    heads[head.partition][key] = head
        for key, (held_partition, held) in self.state.held.items():
            if held_partition not in heads:
                continue
            if held is not None:
                heads[held_partition][key] = decode_envoy_head(held)
            else:
                heads[held_partition].pop(key, None)
        return heads

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.deadlines.pop(partition, None)
            self.counts.pop(partition, None)
            self.groups.pop(partition, None)
            self.listing.pop(partition, None)
            self.rollouts.pop(partition, None)

    def counts_for(self, partition: int) -> FleetCounts:
        """The partition's envoys by status: built from the table (and the batch's held
        states) once per assignment, then moved with every status change published."""
        counts = self.counts.get(partition)
        if counts is None:
            self._index_partition(partition)
            counts = self.counts[partition]
        return counts

    def _index_partition(self, partition: int) -> None:
        """Every index of the partition not built yet, from one read of its heads: the
        counts, groups, list index and rollouts, and the liveness deadlines. Both are
        first needed within a second of each other after an assignment, and the read is
        what costs (about 30 ms per 1,000 envoys, on the event loop)."""
        started = time.perf_counter()
        by_key = self._heads(partition)
        if partition not in self.counts:
            heads = by_key.values()
            self.counts[partition] = FleetCounts.of_statuses(h.status for h in heads)
            if self.group_by:
                envoys = ((h.status, head_labels(h)) for h in heads)
                self.groups[partition] = GroupTally.of_envoys(self.group_by, envoys)
            self.listing[partition] = self._keys_of(by_key)
            self.rollouts[partition] = PartitionRollouts.of_heads(self.group_by, by_key)
        if partition not in self.deadlines:
            self.deadlines[partition] = self._deadlines_of(by_key)
        took = time.perf_counter() - started
        # Once per partition and assignment: the event loop waited that long, which an
        # operator sizing partitions for their fleet wants to see.
        log.info(
            "partition %d indexed: %d envoys in %.0f ms",
            partition,
            len(by_key),
            took * 1000,
        )

    def _keys_of(self, heads: dict[bytes, EnvoyHead]) -> PartitionKeys:
        """The list index of a partition from its heads (labels read only with groups)."""
        group_by = self.group_by
        return PartitionKeys.of_envoys(
            group_by,
            ((k, h.status, head_labels(h) if group_by else _NO_LABELS) for k, h in heads.items()),
        )

    def _listed(self, partition: int, key: bytes, state: EnvoyState | None) -> None:
        """Every state put moves the list index with it (None: a purge, the key leaves)."""
        keys = self.listing.get(partition)
        if keys is not None:
            if state is None:
                keys.put(key, None, _NO_LABELS)
            else:
                keys.put(key, state.status, state.labels)

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

    def _move_rollouts(
        self, partition: int, key: bytes, old: EnvoyState | None, new: EnvoyState | None, at_ms: int
    ) -> None:
        """Rollouts (SPEC 11.2) move with the (old, new) state pair like groups; `new` None:
        purged."""
        move_rollouts(self.rollouts, partition, key, old, new, at_ms)

    def owned(self, envoy_id: str) -> EnvoyState | None:
        """The envoy if this worker actively owns its partition (the local table may still
        hold entries of partitions that moved away, or standby copies), as of its last
        batch: a state held until the next checkpoint is read before the table's."""
        record = self.owned_record(envoy_id)
        return record.state if record is not None else None

    def owned_record(self, envoy_id: str) -> StoredEnvoy | None:
        """`owned`, with the input partition the envoy's records are read from."""
        record = self._stored(envoy_id.encode("utf-8"))  # held states first (checkpoints)
        if record is None or record.partition not in self.catch_up.active_partitions():
            return None
        return record

    def owned_envoys(
        self,
        statuses: Container[Status] | None = None,
        after: str | None = None,
        first: int | None = None,
        label: tuple[str, str] | None = None,
        config_version: str | None = None,
    ) -> list[EnvoyState]:
        """The envoys of the partitions this worker actively owns, read in one pass (no
        await), so a batch never interleaves with the read: those with one of `statuses`
        and an id after `after`, only the `first` in id order if given (all, in id order,
        otherwise); with `label` (KEY, VALUE), only the envoys in that group. Read from
        the list index (SPEC 11.4): the next `first` matching keys after `after`, of which
        only those are decoded; the states are those the batch holds, else the table's.

        A partition whose index is not built yet (its counts are built once it is caught
        up after an assignment, its table restored) is read from a copy built for this
        call alone; a `label` whose key is not in `fleet.group_by` is filtered by the
        labels of the keys the statuses' sets give, read from their tails."""
        owned = self.catch_up.active_partitions()
        if config_version is not None:  # SPEC 11.2: from the keys by version
            return envoys_on_version(self, owned, config_version, statuses, after, first, label)
        missing = {p for p in owned if p not in self.listing}
        heads = self._heads_in(missing) if missing else {}
        sets: list[SortedKeys] = []
        by_labels = False
        for partition in sorted(owned):
            keys = self.listing.get(partition)
            if keys is None:
                keys = self._keys_of(heads[partition])
            found, by_labels = keys.matching(statuses, label)
            sets.extend(found)
        after_key = after.encode("utf-8") if after is not None else None
        matches: Iterable[bytes] = merged_after(sets, after_key)
        if label is not None and by_labels:
            matches = (k for k in matches if in_group(self._labels_of(k), *label))
        if first is not None:
            matches = islice(matches, first)
        # The index holds only keys the batch or the table has (`flush` writes the store
        # before its first await): `_stored` finds every one.
        return [record.state for key in matches if (record := self._stored(key)) is not None]

    def _labels_of(self, key: bytes) -> Mapping[str, str]:
        held = self.state.held.get(key)
        data = held[1] if held is not None and held[1] is not None else self.table[key]
        return head_labels(decode_envoy_head(data))


_NO_LABELS: Mapping[str, str] = {}
