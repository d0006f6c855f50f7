"""`PromptTableManager`: Faust's table manager sleeps a fixed second before it starts
recovery; every table of ours is declared before the app starts, so ours does not. It
also runs the watch on recovery (`RecoveryWatch`): Faust starts timers and tasks only
once the first recovery has ended, which is too late for a watch on that recovery.
Installed through Faust's public `TableManager` setting.
Why and how: docs/faust-traps.md#a-fixed-second-before-recovery,
docs/faust-traps.md#stalled-recoveries
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import faust
from faust.tables import TableManager

from processor.faust_compat.recovery_watch import RecoveryWatch, StallAction

log = logging.getLogger(__package__)

#: How often the watch looks at the recovery.
WATCH_INTERVAL_S = 1.0


class PromptTableManager(TableManager):
    """Faust's table manager without the second of sleep before recovery: its `on_start`
    (`TableManager.on_start`) less the sleep, plus the recovery watch."""

    #: Told of each action of the recovery watch (`report_recovery_stalls`).
    stall_reporter: Callable[[StallAction], None] | None = None

    async def on_start(self) -> None:
        if not self.should_stop:
            await cast(Any, self)._update_channels()
            await self.recovery.start()
            watch = RecoveryWatch(cast(Any, self.app), self._stalled)
            self.add_future(self._watch_recovery(watch))

    def _stalled(self, action: StallAction) -> None:
        if self.stall_reporter is not None:
            self.stall_reporter(action)

    async def _watch_recovery(self, watch: RecoveryWatch) -> None:
        while not self.should_stop:
            await self.sleep(WATCH_INTERVAL_S)
            try:
                await watch.watch()
            except Exception:  # a bug in the watch must not end the worker's recovery
                log.exception("the recovery watch failed; it looks again in a second")


def report_recovery_stalls(app: faust.App, on_stall: Callable[[StallAction], None]) -> None:
    """The recovery watch's actions go to `on_stall` (the app's table manager is ours:
    `processor.app`)."""
    tables = app.tables
    if isinstance(tables, PromptTableManager):
        tables.stall_reporter = on_stall
