"""Documentation and deployment files stay true to the code: variables exist, compose config is valid."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from core.settings import Settings, redacted_lines

ROOT = Path(__file__).resolve().parent.parent.parent
KNOWN = {line.split("=", 1)[0] for line in redacted_lines(Settings(_env_file=None))}
# Variables of Grafana's container, referenced by the provisioning files (not oxyfleet settings).
GRAFANA_VARS = {
    m
    for f in (ROOT / "dashboards" / "provisioning").rglob("*.yaml")
    for m in re.findall(r"\$\{(OXYFLEET_[A-Z0-9_]+)\}", f.read_text())
}
SERVICES_VARS = GRAFANA_VARS | {
    "OXYFLEET_SERVICES_MQTT_PORT",
    "OXYFLEET_SERVICES_INFLUX_PORT",
    "OXYFLEET_SERVICES_INFLUX_RPC_PORT",
    "OXYFLEET_RUN_DIR",
    "OXYFLEET_UPDATE_GOLDEN",
}


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md", "docs/devices.md", "docker-compose.yml"])
def test_every_variable_named_in_the_docs_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    named = set(re.findall(r"OXYFLEET_[A-Z0-9_]+", text))
    assert named, doc
    # "OXYFLEET_MQTT__PASSWORD (_FILE)" style mentions name the base variable.
    # "OXYFLEET_MQTT__*" names a group: its prefix must start real variables.
    groups = {v for v in named if v.endswith("__")}
    assert all(any(k.startswith(g) for k in KNOWN) for g in groups), groups
    unknown = {
        v for v in named - groups if v not in KNOWN and v not in SERVICES_VARS and v.rstrip("_") not in KNOWN
    }
    assert unknown == set()


@pytest.mark.parametrize("service", ["ingester", "health"])
def test_compose_oxyfleet_environments_are_valid_configuration(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"][service]["environment"]
    for key in list(os.environ):
        if key.startswith("OXYFLEET_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        text = str(value)
        if key == "OXYFLEET_INVENTORY_FILE":  # mounted there; by default from the sample inventory
            assert text == "/etc/oxyfleet/inventory.csv"
            text = str(ROOT / "devices" / "inventory.csv")
        elif text.startswith("/run/secrets/"):  # a Docker secret the service declares
            name = text.removeprefix("/run/secrets/")
            assert name in compose["services"][service]["secrets"], key
            (tmp_path / name).write_text("from-a-secret-file\n")
            text = str(tmp_path / name)
        # ${VAR:-default} takes its default here.
        text = re.sub(r"\$\{[^}:]+:-([^}]*)\}", r"\1", text)
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]+\}", "compose-substituted", text))
    settings = Settings(_env_file=None)
    assert settings.influx.api == "v1"
    assert (
        settings.influx.database
        == compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    )
    assert settings.influx.username == f"oxyfleet-{'ingester' if service == 'ingester' else 'health'}"
    assert settings.influx.password_value() == "from-a-secret-file"
    assert settings.mqtt.password_value() == "from-a-secret-file"
    assert not settings.influx.create_database


def test_compose_images_are_pinned_and_secrets_not_defaulted() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "image" in service and "build" not in service:
            assert re.search(r":\d+\.\d+\.\d+$", service["image"]), f"{name}: pin an exact version"
    # Secrets are Docker secrets (files, required by compose), never variables that could be defaulted.
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.findall(r"\$\{[A-Z_]*(?:PASSWORD|TOKEN|SECRET)[A-Z_]*", text)
    for secret in ("influxdb_admin_token", "influxdb_admin_password", "mqtt_ingest_password"):
        assert compose["secrets"][secret] == {"file": f"./secrets/{secret}"}
