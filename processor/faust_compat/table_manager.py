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
from typing import Any, cast

from faust.tables import TableManager

from processor.faust_compat.recovery_watch import RecoveryWatch

log = logging.getLogger(__package__)

#: How often the watch looks at the recovery.
WATCH_INTERVAL_S = 1.0


class PromptTableManager(TableManager):
    """Faust's table manager without the second of sleep before recovery: its `on_start`
    (`TableManager.on_start`) less the sleep, plus the recovery watch."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await cast(Any, self)._update_channels()
            await self.recovery.start()
            self.add_future(self._watch_recovery(RecoveryWatch(cast(Any, self.app))))

    async def _watch_recovery(self, watch: RecoveryWatch) -> None:
        while not self.should_stop:
            await self.sleep(WATCH_INTERVAL_S)
            try:
                await watch.watch()
            except Exception:  # a bug in the watch must not end the worker's recovery
                log.exception("the recovery watch failed; it looks again in a second")
