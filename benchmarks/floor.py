"""The floor: what the worker's own per-event work costs with no framework, no Kafka and
no store, in this process, on the benchmark's records (`bench_throughput.py` prints it
beside the systems it times).

Three passes over the same records, each timed as CPU time (`time.process_time`):

- `decode`: `decode_input` alone (SPEC section 2's validation; the worker's fast path);
- `rules`: that, and `apply_event` on decoded states kept in a dict (the baseline's work
  without its consumer);
- `worker work`: that, with each envoy's state read from its stored record and the new
  state encoded back (`decode_stored_envoy` / `encode_stored_envoy`, the record every
  store and changelog holds, SPEC 11.5), and each status change encoded as the worker
  publishes it. The bytes stay in a dict: no RocksDB, no producer, no offsets, no
  indexes (counts, groups, listings, rollouts, deadlines) and no resource counters, so
  this is a lower bound of what the worker must spend per event in any framework.

If the third pass alone costs more CPU per event than a peer spends in total, consumer
and producer included, no change to the framework around the rules can put the worker
ahead of that peer: only doing less per event can.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from processor.envoys import status_change_value
from processor.records import StoredEnvoy, decode_stored_envoy, encode_stored_envoy
from projections.envoy import EnvoyState, Position, Rules, apply_event
from topics.decode import decode_input
from topics.events import DeadLetter, InputEvent, RecordMeta

#: The record timestamp the passes give every record, and the worker's clock: the
#: benchmark's runs finish around 2027 (benchcommon.T0_MS); neither is judged late.
RECORD_MS = 1_800_000_000_000
NOW_MS = RECORD_MS + 3_600_000
RUNS_INDEX = 2  # the runs topic's place in `TopicNames.inputs`
TOPIC = "bench.envoy.runs"

PASSES = ("decode", "rules", "worker work")


def _decoded(records: Sequence[tuple[bytes, bytes]]) -> list[InputEvent | DeadLetter]:
    out: list[InputEvent | DeadLetter] = []
    for offset, (key, value) in enumerate(records):
        meta = RecordMeta(TOPIC, 0, offset, RECORD_MS)
        out.append(decode_input(key, value, meta, now_ms=NOW_MS))
    return out


def _rules(records: Sequence[tuple[bytes, bytes]], rules: Rules) -> int:
    states: dict[bytes, EnvoyState | None] = {}
    for offset, (key, value) in enumerate(records):
        meta = RecordMeta(TOPIC, 0, offset, RECORD_MS)
        event = decode_input(key, value, meta, now_ms=NOW_MS)
        if isinstance(event, DeadLetter):
            continue
        position = Position(RUNS_INDEX, offset)
        states[key] = apply_event(states.get(key), event, RECORD_MS, rules, position).state
    return len(states)


class WorkerWork:
    """The worker's own work for one record (see the module's docstring), on stored
    records kept in `stored`. `apply` encodes each new state at once, as the worker does
    (its held states stay encoded: the memory goal); `hold` keeps it decoded until
    `flush`, as a design with a decoded cache per checkpoint would, so an envoy that comes
    again before the flush is neither decoded nor encoded again."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.stored: dict[bytes, bytes] = {}
        self.held: dict[bytes, StoredEnvoy] = {}

    def apply(
        self, key: bytes, value: bytes, partition: int, offset: int, record_ms: int
    ) -> tuple[bytes | None, bytes | None]:
        """The new record to write (None: nothing changed) and the status change to
        publish (None: none)."""
        new, change = self._step(key, value, partition, offset, record_ms)
        if new is None:
            return None, None
        record = self.stored[key] = encode_stored_envoy(StoredEnvoy(partition, new))
        return record, change

    def hold(
        self, key: bytes, value: bytes, partition: int, offset: int, record_ms: int
    ) -> bytes | None:
        """The status change to publish (None: none); the new state held decoded."""
        new, change = self._step(key, value, partition, offset, record_ms)
        if new is not None:
            self.held[key] = StoredEnvoy(partition, new)
        return change

    def flush(self) -> list[tuple[int, bytes, bytes]]:
        """The held states encoded and stored: (partition, key, record) each."""
        out = []
        for key, held in self.held.items():
            record = self.stored[key] = encode_stored_envoy(held)
            out.append((held.partition, key, record))
        self.held.clear()
        return out

    def _step(
        self, key: bytes, value: bytes, partition: int, offset: int, record_ms: int
    ) -> tuple[EnvoyState | None, bytes | None]:
        meta = RecordMeta(TOPIC, partition, offset, record_ms)
        event = decode_input(key, value, meta, now_ms=NOW_MS)
        if isinstance(event, DeadLetter):
            return None, None
        held = self.held.get(key)
        if held is not None:
            state: EnvoyState | None = held.state
        else:
            data = self.stored.get(key)
            state = decode_stored_envoy(data).state if data is not None else None
        position = Position(RUNS_INDEX, offset)
        applied = apply_event(state, event, record_ms, self.rules, position)
        new = applied.state
        if new is None or new is state:
            return None, None
        change = applied.change
        return new, None if change is None else status_change_value(change)


def _worker_work(records: Sequence[tuple[bytes, bytes]], rules: Rules) -> None:
    apply = WorkerWork(rules).apply
    for offset, (key, value) in enumerate(records):
        apply(key, value, 0, offset, RECORD_MS)


def floor_costs(records: Sequence[tuple[bytes, bytes]]) -> dict[str, float]:
    """CPU µs per record of each pass (see the module's docstring), in this process."""
    rules = Rules(default_interval_s=300)
    costs: dict[str, float] = {}
    for name in PASSES:
        started = time.process_time()
        if name == "decode":
            _decoded(records)
        elif name == "rules":
            _rules(records, rules)
        else:
            _worker_work(records, rules)
        costs[name] = 1e6 * (time.process_time() - started) / len(records)
    return costs
