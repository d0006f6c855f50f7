"""Shared fixtures: a real Kafka broker for the integration tests.

Kept free of faust imports so that pure unit tests collect fast and without side effects.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "kafka"))
import kafkabroker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a broker shared by the whole session.

    VIGO_TEST_KAFKA names an existing broker (faster local loops); otherwise one is started
    lazily, only if a test asks for it, and always stopped at the end, even on failure.
    """
    external = os.environ.get("VIGO_TEST_KAFKA", "").strip()
    if external:
        yield external
        return
    broker = kafkabroker.start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A per-test topic prefix such as `t1a2b3c4d.`, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    """Kill the workers a test started and left running: one left behind by a failed
    assertion keeps fetching, and loads the machine every later test runs on. Workers of
    wider-scoped fixtures were started before this fixture and are theirs to stop."""
    harness = sys.modules.get("tests.harness")
    before = len(harness.STARTED) if harness is not None else 0
    yield
    harness = sys.modules.get("tests.harness")
    if harness is None:
        return
    for worker in harness.STARTED[before:]:
        worker.kill()
    del harness.STARTED[before:]
