"""Checkpoints (SPEC 11.5): a worker killed between the changelog flush and the offset
commit (`VIGO_FAULT=exit-after-changelog-flush`) leaves state ahead of its offsets; the
next worker replays from the committed offsets over that state and yields equal versions:
no gap, no version with two contents, the final statuses as if nothing had happened."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from processor.config import Settings
from processor.topics_admin import ensure_topics
from tests.harness import Worker, consume, enrollment, produce, run_event, worker_config
from tests.webharness import poll
from topics.names import TopicNames

ENVOYS = [f"cp-{i:02d}" for i in range(20)]


def chains(changes: list[dict[str, Any]]) -> dict[str, dict[int, set[tuple[Any, Any]]]]:
    """Per envoy, per version, the distinct (from, to) published with it."""
    by_envoy: dict[str, dict[int, set[tuple[Any, Any]]]] = defaultdict(lambda: defaultdict(set))
    for change in changes:
        by_envoy[change["envoy_id"]][change["version"]].add((change["from"], change["to"]))
    return by_envoy


def test_a_kill_between_changelog_flush_and_offset_commit_replays_to_equal_versions(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    names = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix, partitions=2, interval="5m")
    asyncio.run(ensure_topics(Settings.model_validate(config), {}))  # as a worker would
    produce(kafka_bootstrap, [(names.enrollments, e.encode(), enrollment(e)) for e in ENVOYS])
    produce(
        kafka_bootstrap,
        [(names.runs, e.encode(), run_event(e, "ok", "changed")) for e in ENVOYS]
        + [(names.runs, e.encode(), run_event(e, "ok", "ok")) for e in ENVOYS],
    )
    doomed = Worker(config, tmp_path, name="w1", env={"VIGO_FAULT": "exit-after-changelog-flush"})
    doomed.start(wait=False)
    assert doomed.proc is not None
    assert doomed.proc.wait(timeout=120) == 137, doomed.log_text()[-3000:]
    assert "VIGO_FAULT=exit-after-changelog-flush" in doomed.log_text()
    first = consume(kafka_bootstrap, names.status_changes)
    assert first, "the first worker published nothing before its checkpoint"

    worker = Worker(config, tmp_path, name="w2").start()
    try:
        final = poll(
            lambda: consume(kafka_bootstrap, names.status_changes),
            lambda cs: (
                all(
                    next(iter(chains(cs)[e][max(chains(cs)[e])]))[1] == "converged"
                    for e in ENVOYS
                    if chains(cs)[e]
                )
                and set(chains(cs)) >= set(ENVOYS)
            ),
            timeout=90,
        )
    finally:
        worker.stop()
    for envoy in ENVOYS:
        versions = chains(final)[envoy]
        assert sorted(versions) == list(range(1, len(versions) + 1)), (envoy, versions)
        assert all(len(contents) == 1 for contents in versions.values()), (envoy, versions)
        # drifted by the changed run, converged by the clean one
        last = versions[max(versions)]
        assert next(iter(last))[1] == "converged", (envoy, versions)
    # The first worker's changes are replayed as they were, never renumbered.
    for change in first:
        assert (change["from"], change["to"]) in chains(final)[change["envoy_id"]][
            change["version"]
        ]
