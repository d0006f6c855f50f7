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
