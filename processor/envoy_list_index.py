"""The envoy list's index (SPEC 11.4 "Lists"): per owned partition, its envoy keys in
order, one sorted set per status and, with `fleet.group_by`, one per status and group, so
`/api/envoys?status=S&label=K=V&limit=N&cursor=C` reads the next N keys after the cursor
from the sets that match and decodes only those.

The keys are the envoy ids in UTF-8, which sort as the ids do. `PartitionKeys` is built
from the partition's heads with its counts and moved with every state the envoy agent
puts (`EnvoyProcessor._listed`), so it always agrees with the table overlaid by the held
states; it is pure and synchronous, and knows nothing of Faust.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Container, Iterable, Iterator, Mapping
from itertools import islice
from typing import Final, TypeVar

from projections.groups import NONE_VALUE
from topics.statuses import Status

#: Keys per chunk of a `SortedKeys`: a chunk is split at twice this, so an insert or a
#: delete moves at most a few thousand pointers whatever the partition's size.
CHUNK: Final = 1000

#: Distinct (status, group values) tuples shared between envoys, per partition.
MAX_SHARED_PLACES: Final = 4096

_ALL_STATUSES: Final = tuple(Status)
_K = TypeVar("_K")


class SortedKeys:
    """Distinct byte keys in order, kept as a list of sorted chunks (the layout of
    `sortedcontainers.SortedList`, reduced to what the index needs): `add` and `discard`
    in O(log n) plus a chunk's memmove, `after` from any key in O(log n)."""

    __slots__ = ("_chunks", "_len", "_maxes")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        ordered = sorted(set(keys))
        self._chunks = [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        return self.after(None)

    def add(self, key: bytes) -> None:
        maxes, chunks = self._maxes, self._chunks
        if not maxes:
            chunks.append([key])
            maxes.append(key)
            self._len = 1
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            chunks[i].append(key)
            maxes[i] = key
        else:
            chunk = chunks[i]
            j = bisect_left(chunk, key)
            if chunk[j] == key:
                return
            chunk.insert(j, key)
        self._len += 1
        chunk = chunks[i]
        if len(chunk) > 2 * CHUNK:
            chunks.insert(i + 1, chunk[CHUNK:])
            del chunk[CHUNK:]
            maxes.insert(i, chunk[-1])

    def discard(self, key: bytes) -> None:
        maxes, chunks = self._maxes, self._chunks
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return
        chunk = chunks[i]
        j = bisect_left(chunk, key)
        if chunk[j] != key:
            return
        del chunk[j]
        self._len -= 1
        if chunk:
            maxes[i] = chunk[-1]
        else:
            del chunks[i], maxes[i]

    def after(self, key: bytes | None) -> Iterator[bytes]:
        """The keys greater than `key` (all of them for None), in order. Not to be
        advanced across a change of the set (the index is read in one synchronous pass)."""
        chunks = self._chunks
        if not chunks:
            return
        if key is None:
            i, j = 0, 0
        else:
            i = bisect_right(self._maxes, key)
            if i == len(chunks):
                return
            j = bisect_right(chunks[i], key)
        yield from chunks[i][j:] if j else chunks[i]
        for chunk in islice(chunks, i + 1, None):
            yield from chunk


#: An envoy's place in the index: its status and, per `group_by` key, its label's value
#: (None: without the label).
Place = tuple[Status, tuple[str | None, ...]]
_BARE: Final[dict[Status, Place]] = {status: (status, ()) for status in Status}


class PartitionKeys:
    """One partition's envoy keys by status and, per `group_by` key, by status and value."""

    def __init__(self, group_by: tuple[str, ...] = ()) -> None:
        self.group_by = group_by
        self.places: dict[bytes, Place] = {}
        self.by_status: dict[Status, SortedKeys] = {}
        #: (status, index of the key in `group_by`, value or None) -> keys.
        self.by_group: dict[tuple[Status, int, str | None], SortedKeys] = {}
        self._shared: dict[Place, Place] = {}

    @classmethod
    def of_envoys(
        cls, group_by: tuple[str, ...], envoys: Iterable[tuple[bytes, Status, Mapping[str, str]]]
    ) -> PartitionKeys:
        """Built in one go from (key, status, labels) of every envoy of the partition; the
        labels are read only with `group_by`."""
        index = cls(group_by)
        places = index.places
        collected: dict[Status, list[bytes]] = {}
        grouped: dict[tuple[Status, int, str | None], list[bytes]] = {}
        for key, status, labels in envoys:
            values = index._values(labels)
            places[key] = index._place(status, values)
            collected.setdefault(status, []).append(key)
            for i, value in enumerate(values):
                grouped.setdefault((status, i, value), []).append(key)
        index.by_status = {status: SortedKeys(keys) for status, keys in collected.items()}
        index.by_group = {group: SortedKeys(keys) for group, keys in grouped.items()}
        return index

    def __len__(self) -> int:
        return len(self.places)

    def _place(self, status: Status, values: tuple[str | None, ...]) -> Place:
        """Places are shared: one tuple per status without groups, else one per distinct
        place up to `MAX_SHARED_PLACES` (label values unique to each envoy share none)."""
        if not values:
            return _BARE[status]
        place = (status, values)
        shared = self._shared.get(place)
        if shared is not None:
            return shared
        if len(self._shared) < MAX_SHARED_PLACES:
            self._shared[place] = place
        return place

    def _values(self, labels: Mapping[str, str]) -> tuple[str | None, ...]:
        return tuple([labels.get(key) for key in self.group_by]) if self.group_by else ()

    def put(self, key: bytes, status: Status | None, labels: Mapping[str, str]) -> None:
        """The envoy's new place (`status` None: it left the table, a purge)."""
        old = self.places.get(key)
        new = None if status is None else self._place(status, self._values(labels))
        if old == new:
            return
        if old is not None:
            self._sets(old, key, remove=True)
        if new is None:
            del self.places[key]
        else:
            self.places[key] = new
            self._sets(new, key, remove=False)

    def _sets(self, place: Place, key: bytes, *, remove: bool) -> None:
        status, values = place
        _moved(self.by_status, status, key, remove)
        for i, value in enumerate(values):
            _moved(self.by_group, (status, i, value), key, remove)

    def matching(
        self, statuses: Container[Status] | None, label: tuple[str, str] | None
    ) -> tuple[list[SortedKeys], bool]:
        """The disjoint key sets whose union is the partition's envoys with one of
        `statuses` (any for None) in the group `label` (`(KEY, VALUE)`, `(none)`: without
        the label), and whether that union still needs filtering by label (a key not in
        `group_by`: the sets are the statuses' only)."""
        chosen = [s for s in _ALL_STATUSES if statuses is None or s in statuses]
        if label is None or label[0] not in self.group_by:
            sets = [self.by_status[s] for s in chosen if s in self.by_status]
            return sets, label is not None
        i = self.group_by.index(label[0])
        value = None if label[1] == NONE_VALUE else label[1]
        groups = [(s, i, value) for s in chosen]
        return [self.by_group[g] for g in groups if g in self.by_group], False


def _moved(sets: dict[_K, SortedKeys], name: _K, key: bytes, remove: bool) -> None:
    """`key` into or out of the set `name`; an emptied set goes (values come and go)."""
    keys = sets.get(name)
    if remove:
        if keys is not None:
            keys.discard(key)
            if not keys:
                del sets[name]
    else:
        if keys is None:
            keys = sets[name] = SortedKeys()
        keys.add(key)


def merged_after(sets: Iterable[SortedKeys], after: bytes | None) -> Iterator[bytes]:
    """The keys of disjoint sets after `after`, in order (lazily: a page of N reads about
    N keys of each set)."""
    return heapq.merge(*(keys.after(after) for keys in sets))
