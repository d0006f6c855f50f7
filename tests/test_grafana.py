"""deploy/grafana: the dashboard's every query names only metrics a real worker exports
(read from a real scrape, not from our own list), parses as PromQL (promtool), and uses
the datasource the provisioning files create; compose mounts the files where those
provisioning files look for them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Worker, produce
from tests.webharness import http_get, poll, prefix_of, running_workers, threshold_config
from topics.names import TopicNames

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vigo.json"
#: What each sample name a family of a type can have (the text format's suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}
METRIC_NAME = re.compile(r"\bvigo_[a-z0-9_]+\b")
#: The panels an operator needs: each must be on the dashboard.
REQUIRED = {
    "vigo_fleet_convergence_ratio",
    "vigo_fleet_convergence_threshold_ratio",
    "vigo_fleet_envoys",
    "vigo_group_convergence_ratio",
    "vigo_status_transitions_total",
    "vigo_events_total",
    "vigo_runs_total",
    "vigo_deadletters_total",
    "vigo_consumer_lag_records",
    "vigo_alerts_total",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every target, rows' nested panels included."""
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def exported_names(exposition: str) -> set[str]:
    """Every sample name the exposition's families can have, sampled yet or not (a
    labelled counter nobody incremented still declares its family)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str) -> Iterator[Worker]:
    sections: dict[str, Any] = {"fleet": {"group_by": ["env"]}, "smtp": threshold_config(80)}
    with running_workers(kafka_bootstrap, **sections) as group:
        yield group[0]


def test_every_dashboard_query_names_an_exported_metric(
    worker: Worker, kafka_bootstrap: str
) -> None:
    names = TopicNames(prefix_of(worker))
    produce(kafka_bootstrap, [(names.runs, b"g-1", b"{not json")])  # a dead letter
    exposition = poll(
        lambda: http_get(worker.url + "/metrics").body.decode(),
        lambda text: 'vigo_deadletters_total{reason="malformed_json"}' in text,
        timeout=60,
    )
    exported = exported_names(exposition)
    used = {name for _, expr in queries(dashboard()) for name in METRIC_NAME.findall(expr)}
    assert used >= REQUIRED, sorted(REQUIRED - used)
    assert used <= exported, sorted(used - exported)


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/test adds it)")
    rules = [
        # Grafana fills $__rate_interval in; promtool needs a duration.
        {"record": f"grafana:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert f"SUCCESS: {len(rules)} rules found".encode() in checked.stdout


def test_panels_use_the_provisioned_datasource_and_compose_mounts_the_files() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    uids = {ds["uid"] for ds in datasources if ds["type"] == "prometheus"}
    board = dashboard()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))

    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vigo.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["../grafana/dashboards"] == dashboards_path
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    prometheus_url = datasources[0]["url"]
    assert prometheus_url.startswith("http://prometheus:")
    assert "prometheus" in compose["services"]
