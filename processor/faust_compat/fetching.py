"""Fetches that never wait long (`FETCH_MAX_WAIT_MS`). Faust creates the worker's aiokafka
consumer with `fetch_max_wait_ms=1500`, and aiokafka keeps one fetch in flight per broker
and leaves a partition out of it while that partition's fetched records are not all
taken. On a backlog the busy partitions are mostly in that state, so a fetch often names
only quiet ones (check-ins, ticks between two seconds), which the broker holds for up to
1.5 s; meanwhile a busy partition worked off cannot be fetched again, and the agent waits.
Why and how: docs/faust-traps.md#long-polls-that-block-fetches
"""

from __future__ import annotations

from typing import Any, Final, cast

import faust

#: How long the broker may hold a fetch with nothing new. Measured (docs/performance.md):
#: 25 ms gave a p99 of 131-135 ms from run to status change at 5,000 runs/s, 50 ms 160-265,
#: 100 ms 190-295; an idle worker then uses 6-7% of a core, against 2% with Faust's 1.5 s.
FETCH_MAX_WAIT_MS: Final = 25


def install_fetch_wait(app: faust.App, wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """The worker consumer Faust creates next (after any other `_new_consumer` wrapper
    installed before) asks the broker to hold its fetches at most `wait_ms`."""
    app_ = cast(Any, app)
    new_consumer = app_._new_consumer

    def consumer_with_short_fetch_wait() -> Any:
        consumer = new_consumer()
        thread = consumer._thread  # Faust's AIOKafkaConsumerThread: the aiokafka client's home
        create_worker_consumer = thread._create_worker_consumer

        def worker_consumer_with_short_wait(transport: Any) -> Any:
            client = create_worker_consumer(transport)
            # Read by the fetcher aiokafka builds when the client starts.
            client._fetch_max_wait_ms = wait_ms
            return client

        thread._create_worker_consumer = worker_consumer_with_short_wait
        return consumer

    app_._new_consumer = consumer_with_short_fetch_wait
