"""Faults for the recovery watch's tests (`tests/test_recovery_watch.py`), loaded by a
worker started with this directory on PYTHONPATH. Never installed elsewhere.

- `VIGO_FAULT_STARVED_CHANGELOG_PARTITION=N`: until the first recovery that had records
  of it to read has ended, no changelog record of partition N reaches Faust's recovery
  once fetched, as in the chaos soak's stalled recovery.
- `VIGO_FAULT_UNRESUMED_CHANGELOG_PARTITION=N`: the first time Faust resumes partitions
  (recovery's start), the changelog partitions numbered N are left out, so they are not
  handed on and their records are never taken from the fetcher.
"""

from __future__ import annotations

import os
from typing import Any, cast

_PARTITION = os.environ.get("VIGO_FAULT_STARVED_CHANGELOG_PARTITION")
_UNRESUMED = os.environ.get("VIGO_FAULT_UNRESUMED_CHANGELOG_PARTITION")

if _UNRESUMED is not None:
    from faust.transport.consumer import Consumer

    _left_out = int(_UNRESUMED)
    _resume = Consumer.resume_partitions
    _calls: list[int] = []

    def _resume_but_once(self: Any, tps: Any) -> None:
        tps = set(tps)
        if not _calls and any(tp.topic.endswith("-changelog") for tp in tps):
            _calls.append(1)
            tps = {
                tp
                for tp in tps
                if not (tp.topic.endswith("-changelog") and tp.partition == _left_out)
            }
        _resume(self, tps)

    Consumer.resume_partitions = _resume_but_once  # type: ignore[method-assign]

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
