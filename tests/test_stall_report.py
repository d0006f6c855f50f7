"""A stall the delivery guard cannot end by fetching again is the agent's own: the guard's
warning names where the agent's task waits (`where_waiting`)."""

from __future__ import annotations

import asyncio

from processor.faust_compat.delivery import where_waiting


async def _write_states(never: asyncio.Event) -> None:
    await never.wait()


async def _checkpoint(never: asyncio.Event) -> None:
    await _write_states(never)


def test_where_a_stuck_task_waits_innermost_last() -> None:
    async def go() -> tuple[str, str]:
        never = asyncio.Event()
        task = asyncio.create_task(_checkpoint(never))
        await asyncio.sleep(0.01)
        waiting = where_waiting(task)
        never.set()
        await task
        return waiting, where_waiting(task)

    waiting, ended = asyncio.run(go())
    frames = waiting.split(" > ")
    # Ours, then asyncio's own: the Event the innermost of ours waits on.
    assert [f.rsplit(" ", 1)[1] for f in frames] == ["_checkpoint", "_write_states", "wait"]
    assert frames[0].startswith("tests/test_stall_report.py:")
    assert frames[2].startswith("asyncio/locks.py:")
    assert ended == "(ended)"
