"""Broker-outage noise: while a broker is away, aiokafka logs the same few ERROR lines
about ten times a second (`Unable connect to node ...`, `Unable to update metadata ...`),
some 11,000 lines in a 90 s outage, burying the worker's own two lines (unreachable,
reachable again). `RepeatedLines` lets one record of each message through per window and
says, on the next one it lets through, how many it held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: One line of each kind per this many seconds.
WINDOW_S = 30.0
#: Kinds of line remembered at most (message templates are few; this only bounds memory).
MAX_KINDS = 1000


class RepeatedLines(logging.Filter):
    """Passes a record unless one with the same logger and message template passed less
    than `window_s` ago; the next one that passes carries the count held back."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= MAX_KINDS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            # The suffix holds no `%`: the message stays a valid %-template for its args.
            record.msg = f"{record.msg} ({last[1]} more like it held back)"
        return True


def quiet_kafka_client_logs(window_s: float = WINDOW_S) -> None:
    """Put one `RepeatedLines` on every aiokafka logger that exists (they are created when
    aiokafka is imported, before the worker starts)."""
    repeated = RepeatedLines(window_s)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatedLines) for f in logger.filters):
            logger.addFilter(repeated)
