"""Builders and Hypothesis strategies for input events, shared by the test modules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import strategies as st

from topics.events import Checkin, Enrollment, ModuleError, Resource, ResourceResult, Run

_run_ids = itertools.count(1)
T0 = 1_795_000_000_000  # 2026-11-18, epoch ms


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run(
    *results: str,
    envoy: str = "web-01",
    finished_ms: int | None = None,
    run_id: str | None = None,
    module_errors: tuple[str, ...] = (),
    config_version: str | None = None,
) -> Run:
    """A run whose resources have the given results, one module per resource unless
    a result is written `module:result` to put several resources in one module."""
    resources = []
    for i, spec in enumerate(results):
        module, _, result = spec.rpartition(":")
        resources.append(Resource(id=f"r{i}", module=module or f"m{i}", result=result))  # type: ignore[arg-type]
    finished = finished_ms if finished_ms is not None else T0 + next(_run_ids) * 1000
    return Run(
        envoy_id=envoy,
        run_id=run_id or f"run-{next(_run_ids)}",
        started_at=iso(finished - 500),
        finished_at=iso(finished),
        finished_at_ms=finished,
        resources=tuple(resources),
        module_errors=tuple(ModuleError(module=m, message="boom") for m in module_errors),
        config_version=config_version,
    )


def checkin(envoy: str = "web-01", at_ms: int = T0) -> Checkin:
    return Checkin(envoy_id=envoy, at=iso(at_ms))


def enrolled(envoy: str = "web-01", interval_s: int | None = None, **labels: str) -> Enrollment:
    return Enrollment(envoy, "enrolled", iso(T0), labels, interval_s)


def revoked(envoy: str = "web-01") -> Enrollment:
    return Enrollment(envoy, "revoked", iso(T0), {}, None)


results: st.SearchStrategy[ResourceResult] = st.sampled_from(["ok", "changed", "failed"])
corrective: st.SearchStrategy[ResourceResult] = st.sampled_from(["ok", "changed"])
modules = st.sampled_from(["files", "packages", "services", "users"])
#: None (no `config_version`) and a few versions, so that rollouts and repeats both occur.
config_versions: st.SearchStrategy[str | None] = st.none() | st.sampled_from(["v1", "v2", "v3"])


@st.composite
def runs(draw: st.DrawFn, envoy: str = "web-01", errors: bool = True) -> Run:
    """Any run; with `errors=False` only `ok` and `changed` results and no module errors
    (the runs SPEC 10.1 judges by their `config_version`, rare among any runs)."""
    n = draw(st.integers(0, 6))
    drawn = results if errors else corrective
    resources = tuple(
        Resource(id=f"r{i}", module=draw(modules), result=draw(drawn)) for i in range(n)
    )
    module_errors = draw(st.lists(modules, max_size=2)) if errors else []
    finished = T0 + draw(st.integers(0, 10_000)) * 1000
    return Run(
        envoy_id=envoy,
        run_id=f"run-{draw(st.integers(0, 40))}",
        started_at=iso(finished),
        finished_at=iso(finished),
        finished_at_ms=finished,
        resources=resources,
        module_errors=tuple(ModuleError(module=m, message="x") for m in module_errors),
        config_version=draw(config_versions),
    )


def input_events(envoy: str = "web-01") -> st.SearchStrategy[Checkin | Run | Enrollment]:
    return st.one_of(
        runs(envoy),
        runs(envoy),
        st.just(checkin(envoy)),
        st.builds(lambda i: enrolled(envoy, i), st.sampled_from([None, 60, 300])),
        st.just(revoked(envoy)),
    )
