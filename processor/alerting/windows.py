"""The sender's digest windows (SPEC 10.4): stale alerts held in the `alerts-windows`
table (one partition) until the outbox's time passes a window's end.

The rules are pure, in `alerts.window`; this class keeps their state in the table
(writes held in a `processor.state.HeldTable`, flushed by the sender) and decodes each
window once. Mailing a closing window is the sender's: a window is deleted only after
its mails went out, so a restart or a rebalance on the way closes it again.
"""

from __future__ import annotations

import logging

from alerts.window import Member, Progress, Window, closed, mails, step
from processor.records import (
    WINDOWS_PROGRESS_KEY,
    decode_progress,
    decode_window,
    encode_progress,
    encode_window,
    window_key,
)
from processor.state import HeldTable
from topics.events import Alert
from topics.timestamps import iso_from_ms

log = logging.getLogger(__name__)

#: The outbox, and so every sender table, has one partition.
PARTITION = 0


class DigestWindows:
    """The open windows and the progress record, read and written through the table."""

    def __init__(self, table: HeldTable, *, digest_over: int, window_ms: int) -> None:
        self.table = table
        self.digest_over = digest_over
        self.window_ms = window_ms
        #: Decoded windows by key, with the bytes they were decoded from.
        self._decoded: dict[bytes, tuple[bytes, Window]] = {}

    def state(self) -> tuple[Progress, dict[int, Window]]:
        """The progress record and the open windows by start."""
        progress = Progress()
        windows: dict[int, Window] = {}
        for key, value in self.table.items():
            if value is None:
                continue
            if key == WINDOWS_PROGRESS_KEY:
                progress = decode_progress(value)
                continue
            cached = self._decoded.get(key)
            if cached is None or cached[0] != value:
                cached = (value, decode_window(value))
                self._decoded[key] = cached
            windows[cached[1].start_ms] = cached[1]
        return progress, windows

    def step(self, offset: int, record_ms: int, member: Member | None) -> list[Window]:
        """Add a stale alert (if any) to its window; the windows the record's time
        closes, to be mailed and then `closed`."""
        progress, windows = self.state()
        done = step(progress, windows, offset, record_ms, member, self.window_ms)
        if done.added is not None:
            self.table.put(PARTITION, window_key(done.added.start_ms), encode_window(done.added))
            self.table.put(PARTITION, WINDOWS_PROGRESS_KEY, encode_progress(done.progress))
        return done.closing

    def mails(self, window: Window) -> list[Alert]:
        """What a closing window sends: its digest, or its alerts one by one."""
        return mails(window, self.digest_over)

    def closed(self, window: Window, mailed: int) -> None:
        """Forget a window whose mails went out (`mailed` of them)."""
        key = window_key(window.start_ms)
        self.table.put(PARTITION, key, None)
        self._decoded.pop(key, None)
        progress, _ = self.state()
        self.table.put(PARTITION, WINDOWS_PROGRESS_KEY, encode_progress(closed(progress, window)))
        log.info(
            "digest window %s..%s closed: %d stale alerts in %d mails",
            iso_from_ms(window.start_ms),
            iso_from_ms(window.end_ms),
            window.count,
            mailed,
        )

    def held(self) -> int:
        """Stale alerts in open windows."""
        _, windows = self.state()
        return sum(w.count for w in windows.values())

    def due(self, now_ms: float) -> bool:
        """An open window should have closed by `now_ms`."""
        _, windows = self.state()
        return any(w.end_ms <= now_ms for w in windows.values())

    def forget(self) -> None:
        self._decoded.clear()
