"""`RepeatedLines` (processor.lognoise): one line of a kind per window, and the count of
what it held back on the next one it lets through."""

from __future__ import annotations

import logging

from processor.lognoise import RepeatedLines


def record(msg: str, *args: object, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_one_line_of_a_kind_per_window_then_the_count_held_back() -> None:
    now = [0.0]
    repeated = RepeatedLines(window_s=30, clock=lambda: now[0])
    first = record("Unable connect to node with id %s: %s", 1, "refused")
    assert repeated.filter(first)
    assert first.getMessage() == "Unable connect to node with id 1: refused"
    passed = 0
    for i in range(100):
        now[0] = i * 0.1
        passed += repeated.filter(record("Unable connect to node with id %s: %s", 2, "x"))
    assert passed == 0
    # Another kind of line is not held back by the first.
    assert repeated.filter(record("Unable to update metadata from %s", [1]))
    now[0] = 31.0
    after = record("Unable connect to node with id %s: %s", 1, "refused")
    assert repeated.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 1: refused (100 more like it held back)"
    )
    now[0] = 62.0
    quiet = record("Unable connect to node with id %s: %s", 1, "refused")
    assert repeated.filter(quiet) and "held back" not in quiet.getMessage()


def test_the_same_message_from_two_loggers_is_two_kinds() -> None:
    repeated = RepeatedLines(window_s=30, clock=lambda: 0.0)
    assert repeated.filter(record("boom", name="aiokafka"))
    assert repeated.filter(record("boom", name="aiokafka.conn"))
    assert not repeated.filter(record("boom", name="aiokafka"))
