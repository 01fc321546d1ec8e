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
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"][service]["environment"]
    for key in list(os.environ):
        if key.startswith("OXYFLEET_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        text = str(value)
        if key == "OXYFLEET_INVENTORY_FILE":  # a path inside the image; the sample is the same file
            assert text == "/app/devices/inventory.csv"
            text = str(ROOT / "devices" / "inventory.csv")
        # ${VAR:-default} takes its default here; ${VAR:?message} stands for a value from .env.
        text = re.sub(r"\$\{[^}:]+:-([^}]*)\}", r"\1", text)
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]+\}", "compose-substituted", text))
    settings = Settings(_env_file=None)
    assert settings.influx.api == "v2"
    assert (
        settings.influx.bucket
        == compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    )
    assert settings.influx.org == compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ORG"]


def test_compose_images_are_pinned_and_secrets_not_defaulted() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "image" in service and "build" not in service:
            assert re.search(r":\d+\.\d+\.\d+$", service["image"]), f"{name}: pin an exact version"
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("INFLUXDB_TOKEN", "INFLUXDB_ADMIN_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required, not defaulted"
