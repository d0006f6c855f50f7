"""A fault for the recovery watch's test (`tests/test_recovery_watch.py`), loaded by a
worker started with this directory on PYTHONPATH: until the first recovery that had
records of it to read has ended, no changelog record of the partition numbered
`VIGO_FAULT_STARVED_CHANGELOG_PARTITION` reaches Faust's recovery, as in the chaos
soak's stalled recovery. Never installed elsewhere."""

from __future__ import annotations

import os
from typing import Any, cast

_PARTITION = os.environ.get("VIGO_FAULT_STARVED_CHANGELOG_PARTITION")

if _PARTITION is not None:
    from faust.tables import manager

    _starved = int(_PARTITION)
    _queue_of = cast(Any, manager.TableManager).changelog_queue.fget

    def _starving_queue(self: Any) -> Any:
        queue = _queue_of(self)
        if getattr(queue, "starving", False):
            return queue
        put, put_nowait = queue.put, queue.put_nowait_enhanced
        recovery = self.recovery

        def starved(event: Any) -> bool:
            if event.message.tp.partition == _starved and not recovery.starved_once:
                recovery.dropped += 1
                return True  # dropped: recovery never sees it
            return False

        async def starving_put(event: Any) -> None:
            if not starved(event):
                await put(event)

        def starving_put_nowait(*args: Any, **kwargs: Any) -> None:
            # The conductor's way in (`put_nowait_enhanced`); `put` when the queue is full.
            if not starved(args[0] if args else kwargs["value"]):
                put_nowait(*args, **kwargs)

        def first_recovery_ended(ended: Any = recovery._set_recovery_ended) -> None:
            recovery.starved_once = recovery.dropped > 0
            ended()

        recovery.starved_once, recovery.dropped = False, 0
        recovery._set_recovery_ended = first_recovery_ended
        queue.put, queue.put_nowait_enhanced = starving_put, starving_put_nowait
        queue.starving = True
        return queue

    manager.TableManager.changelog_queue = property(_starving_queue)  # type: ignore[assignment]
