"""The one way an agent writes its tables: held, then flushed after the outputs.

Every agent (envoys, aggregator, alert sender) puts its new table entries into a
`HeldTable`; reads see them first. `flush` is the one place state leaves the process: it
waits until the broker acknowledged every output record sent so far (status changes,
dead letters, fleet numbers, alerts: `processor.outputs`), then writes each table's held
entries into its store and its changelog (`faust_compat.TableWriter`, one producer batch
per partition) and waits for those acknowledgements too. So a crash at any point leaves
either the old state, whose batch is read again and sends the same records again
(consumers drop duplicates by `(envoy_id, version)` or alert id), or the new state whose
outputs are already in their topics; never a state that records an output nobody sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from processor.faust_compat import TableWriter
from processor.outputs import Outputs


def _unchanged(value: Any) -> Any:
    return value


@dataclass
class HeldTable:
    """One table's writes since the last flush, each with the partition of its changelog
    record. A held None, or a value that `encode`s to None, deletes the key (a tombstone);
    `get` and `items` know only the first kind (the envoy agent reads its own held values)."""

    writer: TableWriter
    #: Turns a held value into what the store and the changelog get (None: delete).
    encode: Callable[[Any], Any] = _unchanged
    held: dict[Any, tuple[int, Any]] = field(default_factory=dict)

    def put(self, partition: int, key: Any, value: Any) -> None:
        self.held[key] = (partition, value)

    def get(self, key: Any, default: Any = None) -> Any:
        """The held value of `key`, else the stored one (a held delete reads as None)."""
        held = self.held.get(key)
        if held is not None:
            return default if held[1] is None else held[1]
        return self.writer.table.get(key, default)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """The table's entries as `get` sees them: stored ones overlaid by held ones."""
        for key, value in list(self.writer.table.items()):
            if key not in self.held:
                yield key, value
        for key, (_, value) in list(self.held.items()):
            if value is not None:
                yield key, value

    def take(self) -> list[tuple[int, Any, Any]]:
        """The held writes as (partition, key, encoded value), forgotten here."""
        held, self.held = self.held, {}
        encode = self.encode
        return [(partition, key, encode(value)) for key, (partition, value) in held.items()]


async def flush(outputs: Outputs, *tables: HeldTable) -> None:
    """Outputs acknowledged, then the tables' held writes written and acknowledged (see the
    module text). Cancelled while waiting for the outputs, the writes stay held."""
    await outputs.acknowledged()
    for table in tables:
        entries = table.take()
        if entries:
            await table.writer.write(entries)
