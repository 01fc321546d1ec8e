"""Every configuration error exits 2 naming the variable's real name and what belongs there, never a traceback.

Through the CLI as an operator meets it (click's runner for each case, one real subprocess for the case
that used to print a 64-line traceback), with a clean environment so the developer's shell cannot change
the outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from core.settings import load_settings
from oxyfleet.cli import cli

if TYPE_CHECKING:
    from pathlib import Path

EXIT_CONFIG = 2


pytestmark = pytest.mark.usefixtures("clean_env")


# (environment, the line the operator must see: variable, then what is wrong / what to put there)
CASES = {
    "webhooks_not_json": (
        {"OXYFLEET_HEALTH__WEBHOOKS": "https://x"},
        'OXYFLEET_HEALTH__WEBHOOKS: must be a JSON list, e.g. ["https://hooks.example.org/oxyfleet"]',
    ),
    "webhooks_not_a_url": (
        {"OXYFLEET_HEALTH__WEBHOOKS": '["not a url"]'},
        "OXYFLEET_HEALTH__WEBHOOKS: item 1: 'not a url' is not an http(s) URL",
    ),
    "webhooks_second_url_ftp": (
        {"OXYFLEET_HEALTH__WEBHOOKS": '["https://ok.example/a", "ftp://files.example/b"]'},
        "OXYFLEET_HEALTH__WEBHOOKS: item 2: 'ftp://files.example/b' is not an http(s) URL",
    ),
    "webhooks_json_object": (
        {"OXYFLEET_HEALTH__WEBHOOKS": '{"url": "https://x"}'},
        "OXYFLEET_HEALTH__WEBHOOKS: must be a JSON list",
    ),
    "mqtt_password_file_missing": (
        {"OXYFLEET_MQTT__PASSWORD_FILE": "/nonexistent/mqtt-password"},
        (
            "OXYFLEET_MQTT__PASSWORD_FILE: file /nonexistent/mqtt-password is missing; give the path of an "
            "existing, readable file"
        ),
    ),
    "inventory_file_missing": (
        {"OXYFLEET_INVENTORY_FILE": "/nonexistent/inventory.csv"},
        "OXYFLEET_INVENTORY_FILE: file /nonexistent/inventory.csv is missing",
    ),
    "inventory_file_is_a_directory": (
        {"OXYFLEET_INVENTORY_FILE": "/tmp"},
        "OXYFLEET_INVENTORY_FILE: file /tmp is a directory",
    ),
    "influx_token_file_missing": (
        {"OXYFLEET_INFLUX__TOKEN_FILE": "/nonexistent/token"},
        "OXYFLEET_INFLUX__TOKEN_FILE: file /nonexistent/token is missing",
    ),
    "tls_cert_without_key": (
        {"OXYFLEET_MQTT__CERT_FILE": "/etc/hostname"},
        "OXYFLEET_MQTT__KEY_FILE: a TLS client certificate needs its key",
    ),
    "influx_v2_without_token": (
        {"OXYFLEET_INFLUX__API": "v2", "OXYFLEET_INFLUX__ORG": "o"},
        (
            "OXYFLEET_INFLUX__TOKEN: OXYFLEET_INFLUX__API=v2 needs an API token: set OXYFLEET_INFLUX__TOKEN or "
            "OXYFLEET_INFLUX__TOKEN_FILE"
        ),
    ),
    "influx_v2_without_org": (
        {"OXYFLEET_INFLUX__API": "v2", "OXYFLEET_INFLUX__TOKEN": "t"},
        "OXYFLEET_INFLUX__ORG: OXYFLEET_INFLUX__API=v2 needs the organisation name",
    ),
    "port_not_a_number": (
        {"OXYFLEET_MQTT__PORT": "eighteen"},
        (
            "OXYFLEET_MQTT__PORT: Input should be a valid integer, unable to parse string as an integer "
            "(got 'eighteen'). Expected: Broker port"
        ),
    ),
    "section_as_bad_json": (
        {"OXYFLEET_MQTT": "{port: 1883"},
        "OXYFLEET_MQTT: is not valid JSON; set the section as a JSON object",
    ),
    "unknown_nested_variable": (
        {"OXYFLEET_MQTT__PASWORD": "x"},
        "OXYFLEET_MQTT__PASWORD: not a setting oxyfleet knows",
    ),
    "influx_url_scheme": (
        {"OXYFLEET_INFLUX__URL": "localhost:8086"},
        "OXYFLEET_INFLUX__URL: String should match pattern '^https?://' (got 'localhost:8086')",
    ),
}


@pytest.mark.parametrize("command", [["check-config"], ["run"], ["health", "--once"]])
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, case: str, command: list[str]
) -> None:
    env, expected = CASES[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "oxyfleet: invalid configuration:" in result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_secrets_never_appear_in_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__TOKEN", "s3cret-token-value")
    monkeypatch.setenv("OXYFLEET_INFLUX__PASSWORD", "s3cret-password-value")
    monkeypatch.setenv("OXYFLEET_MQTT__PORT", "0")
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == EXIT_CONFIG
    assert "s3cret" not in result.output


def test_valid_webhook_list_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OXYFLEET_HEALTH__WEBHOOKS", '["https://hooks.example.org/a", "http://10.0.0.5:8080/b"]'
    )
    assert load_settings().health.webhooks == ["https://hooks.example.org/a", "http://10.0.0.5:8080/b"]
    result = CliRunner().invoke(cli, ["check-config"])
    assert (
        'OXYFLEET_HEALTH__WEBHOOKS=["https://hooks.example.org/a", "http://10.0.0.5:8080/b"]' in result.output
    )


def test_webhooks_not_json_in_a_real_process(tmp_path: Path) -> None:
    """The case that printed a 64-line pydantic-settings traceback and exited 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env["OXYFLEET_HEALTH__WEBHOOKS"] = "https://x"
    proc = subprocess.run(
        [sys.executable, "-m", "oxyfleet", "check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "OXYFLEET_HEALTH__WEBHOOKS: must be a JSON list" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) <= 3


@pytest.mark.parametrize("command", [["run"], ["health", "--once"]])
@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        (b"PK\x03\x04 a workbook", "is an Excel/LibreOffice workbook (.xlsx/.ods), not CSV"),
        (b"No;Nama RS;Kabupaten\r\n1;RSUD Kupang;Kota Kupang\r\n", "This looks like another export"),
    ],
    ids=["xlsx", "wrong-export"],
)
def test_an_unreadable_inventory_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str], raw: bytes, hint: str
) -> None:
    inventory = tmp_path / "inventaris.csv"
    inventory.write_bytes(raw)
    monkeypatch.setenv("OXYFLEET_INVENTORY_FILE", str(inventory))
    monkeypatch.setenv("OXYFLEET_METRICS_PORT", "0")
    # Nothing listens there: the inventory must be refused before anything connects anywhere.
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OXYFLEET_MQTT__PORT", "9")
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "OXYFLEET_INVENTORY_FILE: the inventory has problems" in result.output
    assert hint in result.output
