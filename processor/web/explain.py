"""`GET /api/envoys/{id}/explain` (SPEC 11.1): why an envoy has its status, from what the
worker holds.

The reasoning is pure (`projections.explain`); this module adds what only the shell
knows: where each run was read (the runs topic, the envoy's partition, the offset kept in
its history entry) and the newest `config_version` of the fleet, asked of the fleet owner
(`GET /api/rollouts`, SPEC 11.2) the way `/api/compliance` is forwarded. That last part is
optional: a worker without rollouts, a fleet owner that does not answer in time or a
fleet with no version yet gives `newest_in_fleet: null`, never a failed request.

The view answers for an envoy this worker owns and forwards the request otherwise, as
`GET /api/envoys/{id}` does (`VigoView.from_envoy_owner`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from faust.web import Request, Response

from processor.web.base import VigoView
from processor.web.cluster import Cluster
from projections.explain import Explanation, Liveness, explain
from projections.runs import RunSummary
from topics.statuses import RunOutcome
from topics.timestamps import iso_from_ms

#: Where the fleet owner answers with the newest version (SPEC 11.2).
ROLLOUTS_PATH = "/api/rollouts"
#: How long an explanation waits for it: it is a detail, not worth the peer timeout.
NEWEST_TIMEOUT_S = 2.0


def _iso(ms: int | None) -> str | None:
    return iso_from_ms(ms) if ms is not None else None


def evidence_doc(run: RunSummary, topic: str, partition: int) -> dict[str, Any]:
    """One run the rule looked at, and where it was read (`offset` null for a run stored
    by a release that did not keep it)."""
    return {
        "run_id": run.run_id,
        "finished_at": run.finished_at,
        "outcome": run.outcome.value,
        "config_version": run.config_version,
        "intentional": run.outcome is RunOutcome.INTENTIONAL,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": run.offset if run.offset >= 0 else None,
        },
        "changed": list(run.changed),
        "changed_count": run.changed_count,
        "failed": list(run.failed),
        "failed_count": run.failed_count,
        "module_errors": list(run.errored_modules),
        "module_errors_count": run.errored_modules_count,
    }


def liveness_doc(liveness: Liveness) -> dict[str, Any]:
    return {
        "enrolled_at": iso_from_ms(liveness.enrolled_at_ms),
        "last_seen": _iso(liveness.last_seen_ms),
        "last_reported_at": liveness.last_reported_at,
        "counted_from": iso_from_ms(liveness.counted_from_ms),
        "interval_s": liveness.interval_s,
        "offline_at": _iso(liveness.offline_at_ms),
        "stale_at": _iso(liveness.stale_at_ms),
        "inactive_at": _iso(liveness.inactive_at_ms),
        "stale": liveness.stale,
    }


def explanation_doc(
    explanation: Explanation, topic: str, partition: int, newest_in_fleet: str | None
) -> dict[str, Any]:
    """The API's document: `topic` and `partition` are where the envoy's runs are read."""
    rule = explanation.rule
    return {
        "envoy_id": explanation.envoy_id,
        "status": explanation.status.value,
        "since": iso_from_ms(explanation.since_ms),
        "rule": {"status": rule.status.value, "text": rule.text, "section": rule.section},
        "evidence": [evidence_doc(run, topic, partition) for run in explanation.evidence],
        "consecutive_changed_runs": explanation.consecutive_changed,
        "streak_truncated": explanation.streak_truncated,
        "liveness": liveness_doc(explanation.liveness),
        "config_version": {
            "applied": explanation.applied_version,
            "last_run": explanation.last_run_version,
            "newest_in_fleet": newest_in_fleet,
        },
    }


def newest_version(body: bytes) -> str | None:
    """`newest.version` of a `/api/rollouts` body; None for anything else."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    newest = doc.get("newest") if isinstance(doc, dict) else None
    version = newest.get("version") if isinstance(newest, dict) else None
    return version if isinstance(version, str) else None


async def newest_in_fleet(cluster: Cluster) -> str | None:
    """The fleet's newest `config_version`, from the fleet owner (this worker included:
    it is asked over HTTP like any other, marked forwarded, so it answers from itself).
    None when there is no owner, no rollouts route, no answer in time or no version."""
    owner = cluster.fleet_owner()
    if owner is None:
        return None
    try:
        status, body = await asyncio.wait_for(
            cluster.get(owner, ROLLOUTS_PATH), timeout=NEWEST_TIMEOUT_S
        )
    except Exception:  # any failure at all: the explanation goes without it
        return None
    return newest_version(body) if status == 200 else None


class EnvoyExplain(VigoView):
    """Why one envoy has its status, answered by the worker that owns its partition."""

    async def get(self, request: Request, envoy_id: str) -> Response:
        if (refused := self.refused(request)) is not None:
            return refused
        envoys = self.ctx.envoys
        record = envoys.owned_record(envoy_id)
        if record is None:
            return await self.from_envoy_owner(request, envoy_id)
        # Explained before the await: the state as of this batch, whatever comes next.
        explanation = explain(record.state, envoys.rules)
        newest = await newest_in_fleet(self.ctx.cluster)
        return self.json(explanation_doc(explanation, envoys.names.runs, record.partition, newest))
