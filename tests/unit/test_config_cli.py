"""Configuration and the CLI's offline commands: generated files current, errors say what to fix, no secret leaks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.errors import ConfigError
from core.settings import Settings, env_example, load_settings, redacted_lines
from oxyfleet.cli import cli

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "golden"


pytestmark = pytest.mark.usefixtures("clean_env")


def test_env_example_is_current() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), "run `oxyfleet env-example`"


def test_every_setting_is_in_env_example() -> None:
    text = env_example()
    for line in redacted_lines(Settings()):
        assert f"# {line.split('=')[0]}=" in text


def test_json_schema_is_current() -> None:
    result = CliRunner().invoke(cli, ["schema", "--check"])
    assert result.exit_code == 0, result.output


def test_nested_env_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXYFLEET_MQTT__PORT", "8883")
    monkeypatch.setenv("OXYFLEET_BUFFER__BATCH_SIZE", "100")
    settings = load_settings()
    assert settings.mqtt.port == 8883
    assert settings.buffer.batch_size == 100
    assert settings.influx.database == "oxyfleet"


def test_config_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXYFLEET_MQTT__PORT", "99999")
    monkeypatch.setenv("OXYFLEET_INFLUX__API", "v2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "OXYFLEET_MQTT__PORT" in text
    assert "OXYFLEET_INFLUX__TOKEN: OXYFLEET_INFLUX__API=v2 needs an API token" in text


def test_cli_config_error_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXYFLEET_BUFFER__BATCH_SIZE", "zero")
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 2
    assert "OXYFLEET_BUFFER__BATCH_SIZE" in result.output


def test_missing_secret_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__TOKEN_FILE", str(tmp_path / "nope"))
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 2
    assert "OXYFLEET_INFLUX__TOKEN_FILE: file" in result.output


def test_secrets_are_redacted_and_read_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "mqtt_password"
    secret_file.write_text("file-secret-123\n")
    monkeypatch.setenv("OXYFLEET_INFLUX__TOKEN", "env-secret-456")
    monkeypatch.setenv("OXYFLEET_MQTT__PASSWORD_FILE", str(secret_file))
    settings = load_settings()
    assert settings.mqtt.password_value() == "file-secret-123"
    assert settings.influx.token_value() == "env-secret-456"
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 0
    assert "env-secret-456" not in result.output
    assert "file-secret-123" not in result.output
    assert "OXYFLEET_INFLUX__TOKEN=**********" in result.output
    assert "env-secret-456" not in repr(settings)


def test_validate_payload_explains_every_problem(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"ts": 1764140400000, "purity_pct": 140, "flow_lpm": "5", "fw": "1.0"}))
    result = CliRunner().invoke(cli, ["validate-payload", str(sample), "--no-time-window"])
    assert result.exit_code == 1
    assert "INVALID (schema_invalid)" in result.output
    assert "purity_pct: Input should be less than or equal to 100" in result.output
    assert "flow_lpm: Input should be a valid number" in result.output


def test_validate_payload_accepts_golden_valid_cases() -> None:
    case = GOLDEN / "docs" / "valid_plant"
    result = CliRunner().invoke(
        cli, ["validate-payload", str(case / "payload.json"), "--kind", "docs", "--no-time-window"]
    )
    assert result.exit_code == 0, result.output
    assert "valid: 1 docs reading(s)" in result.output


def test_validate_payload_names_unknown_fields(tmp_path: Path) -> None:
    sample = tmp_path / "s.json"
    sample.write_text(json.dumps({"ts": 1764140400000, "purity_pct": 93.0, "rssi_dbm": -70}))
    result = CliRunner().invoke(cli, ["validate-payload", str(sample), "--no-time-window"])
    assert result.exit_code == 0
    assert "unknown fields are ignored: rssi_dbm" in result.output


def test_validate_payload_checks_the_time_window_by_default(tmp_path: Path) -> None:
    sample = tmp_path / "s.json"
    sample.write_text(json.dumps({"ts": 1_000_000_000_000, "purity_pct": 93.0}))  # 2001
    result = CliRunner().invoke(cli, ["validate-payload", str(sample)])
    assert result.exit_code == 1
    assert "ts_too_old" in result.output


def test_help_everywhere() -> None:
    runner = CliRunner()
    for command in (
        [],
        ["run"],
        ["check"],
        ["check-config"],
        ["validate-payload"],
        ["schema"],
        ["env-example"],
        ["demo"],
    ):
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage:" in result.output


def test_every_variable_round_trips_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What check-config prints can be fed back as environment variables (caught OXYFLEET_MQTT__QOS=1)."""
    defaults = Settings(_env_file=None)
    for line in redacted_lines(defaults):
        key, _, value = line.partition("=")
        if value:
            monkeypatch.setenv(key, value)
    assert load_settings(_env_file=None) == defaults


def _readme_dotenv() -> str:
    """The ```dotenv block of the README's Docker section: the .env an operator copies."""
    text = (ROOT / "README.md").read_text()
    return text.split("```dotenv\n", 1)[1].split("```", 1)[0]


def test_the_cli_runs_with_the_readmes_docker_env_in_the_working_directory(tmp_path: Path) -> None:
    """Compose and the CLI share one .env: compose's own keys are not the CLI's business (issue 15)."""
    import shutil
    import subprocess
    import sys

    oxyfleet = shutil.which("oxyfleet", path=str(Path(sys.executable).parent)) or "oxyfleet"
    (tmp_path / "devices").mkdir()
    shutil.copy(ROOT / "devices" / "inventory.csv", tmp_path / "devices" / "inventory.csv")
    # The README's .env, plus a compose-only secret an older README put there.
    env_file = _readme_dotenv() + "INFLUXDB_TOKEN=abc\nMQTT_INGEST_PASSWORD=def\n"
    (tmp_path / ".env").write_text(env_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    done = subprocess.run(
        [oxyfleet, "check-config"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "OXYFLEET_INVENTORY_FILE=devices/inventory.csv" in done.stdout  # its OXYFLEET_ keys are read
    assert "OXYFLEET_HEALTH__WEBHOOKS=[]" in done.stdout
    # A misspelt oxyfleet key in the same file is still an error naming it.
    (tmp_path / ".env").write_text(env_file + "OXYFLEET_MQTT__PORTT=8883\n")
    done = subprocess.run(
        [oxyfleet, "check-config"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "OXYFLEET_MQTT__PORTT" in done.stderr and "INFLUXDB_TOKEN" not in done.stderr
