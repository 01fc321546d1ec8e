"""The committed Grafana files: parseable by grafana-foundation-sdk, stable uids, one datasource uid,
and a compose file that mounts them (no Docker engine here, so the compose file is parsed, not run)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

ROOT = Path(__file__).resolve().parent.parent.parent
JSON = ROOT / "dashboards" / "json"
UIDS = {
    "fleet-overview.json": "oxyfleet-fleet-overview",
    "unit-detail.json": "oxyfleet-unit-detail",
    "hospital-uptime.json": "oxyfleet-hospital-uptime",
    "ingest-health.json": "oxyfleet-ingest-health",
}


def datasource_refs(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        found += [node["datasourceUid"]] if "datasourceUid" in node else []
        return found + [r for v in node.values() for r in datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in datasource_refs(v)]
    return []


@pytest.mark.parametrize(("name", "uid"), sorted(UIDS.items()))
def test_dashboard_round_trips_through_the_foundation_sdk(name: str, uid: str) -> None:
    data = json.loads((JSON / name).read_text())
    dashboard = Dashboard.from_json(data)
    assert dashboard.uid == uid == data["uid"]
    assert len(dashboard.panels or []) == len(data["panels"])
    again = Dashboard.from_json(json.loads(json.dumps(dashboard, cls=JSONEncoder)))
    assert again.uid == uid and [p.title for p in again.panels or []] == [p["title"] for p in data["panels"]]


def test_every_datasource_reference_is_the_provisioned_one() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "datasources" / "oxyfleet.yaml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    assert sorted(p.name for p in JSON.glob("*.json")) == sorted(UIDS)
    refs = [r for name in UIDS for r in datasource_refs(json.loads((JSON / name).read_text()))]
    rules = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text())
    refs += [r for r in datasource_refs(rules) if r != "__expr__"]
    assert refs and all((r["uid"] if isinstance(r, dict) else r) == uid for r in refs)


def test_compose_runs_grafana_with_the_provisioning_mounted() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "ingester", "health", "grafana"} <= set(services)
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts == {
        # The shared datasource as the read-only InfluxDB user (tests/unit/test_docker_files.py keeps it equal).
        "/etc/grafana/provisioning/datasources": "./docker/grafana/datasources",
        "/etc/grafana/provisioning/dashboards": "./dashboards/provisioning/dashboards",
        "/etc/grafana/provisioning/alerting": "./dashboards/provisioning/alerting",
        "/var/lib/grafana/dashboards/oxyfleet": "./dashboards/json",
    }
    provider = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "dashboards" / "oxyfleet.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/oxyfleet"
    for source in mounts.values():
        assert (ROOT / source).is_dir()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]
