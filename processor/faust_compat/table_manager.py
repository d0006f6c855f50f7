"""`PromptTableManager`: Faust's table manager sleeps a fixed second before it starts
recovery; every table of ours is declared before the app starts, so ours does not.
Installed through Faust's public `TableManager` setting.
Why and how: docs/faust-traps.md#a-fixed-second-before-recovery
"""

from __future__ import annotations

from typing import Any, cast

from faust.tables import TableManager


class PromptTableManager(TableManager):
    """Faust's table manager without the second of sleep before recovery: its `on_start`
    (`TableManager.on_start`) less the sleep."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await cast(Any, self)._update_channels()
            await self.recovery.start()
