"""The ``oxyfleet`` command as a user runs it: a real subprocess against the real services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import redacted_lines
from tests.integration.conftest import run_oxyfleet as oxyfleet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def env_for(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    for line in redacted_lines(settings):
        key, _, value = line.partition("=")
        if value:
            env[key] = value
    env["OXYFLEET_LOG_FORMAT"] = "json"
    return env


def test_check_reports_ok_and_names_what_is_broken(settings_for, unique) -> None:
    env = env_for(settings_for(f"check-{unique}"))
    ok = oxyfleet("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": ok") == 2
    broken = oxyfleet(
        "check", env={**env, "OXYFLEET_MQTT__PORT": "1", "OXYFLEET_INFLUX__URL": "http://127.0.0.1:9"}
    )
    assert broken.returncode == 1
    assert "cannot reach broker at 127.0.0.1:1" in broken.stdout
    assert "network error talking to InfluxDB: connection refused" in broken.stdout
    assert " object at 0x" not in broken.stdout + broken.stderr  # no library reprs, only what happened


def test_run_ingests_and_stops_cleanly_on_sigterm(settings_for, unique, publisher, influx, wait_for) -> None:
    env = env_for(settings_for(f"run-{unique}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxyfleet", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        # Publish only once the subscription exists; before that there is no session to hold messages.
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("ingest.subscribed" in line for line in seen):
            seen.append(proc.stderr.readline())
        assert any("ingest.subscribed" in line for line in seen), seen
        base = time.time_ns() // 1_000_000 - 5000
        for i in range(20):
            publisher.reading("OC-CLI", {"ts": base + i, "purity_pct": 93.0})
        wait_for(
            lambda: (
                influx.rows("SELECT count(purity_pct) FROM telemetry")
                and influx.rows("SELECT count(purity_pct) FROM telemetry")[0]["count"] == 20
            )
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in [*seen, *err.splitlines()] if line.startswith("{")]
    assert "ingest.mqtt_connected" in events
    assert "ingest.batch_written" in events


def test_run_with_bad_config_exits_2_without_connecting(unique) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    result = oxyfleet("run", env={**env, "OXYFLEET_INFLUX__API": "v3"})
    assert result.returncode == 2
    assert "OXYFLEET_INFLUX__API" in result.stderr


def test_run_without_influxdb_exits_1_and_says_so(services) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env = {**env, "OXYFLEET_INFLUX__URL": "http://127.0.0.1:9", "OXYFLEET_METRICS_PORT": "0"}
    result = oxyfleet("run", env={**env, "OXYFLEET_SPOOL__ENABLED": "false"})
    assert result.returncode == 1
    assert "is InfluxDB running at http://127.0.0.1:9" in result.stderr


def test_run_without_influxdb_starts_anyway_when_it_can_spool(services, unique, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env |= {
        "OXYFLEET_INFLUX__URL": "http://127.0.0.1:9",
        "OXYFLEET_METRICS_PORT": "0",
        "OXYFLEET_MQTT__CLIENT_ID": f"spoolstart-{unique}",
        "OXYFLEET_MQTT__TOPIC_PREFIX": f"t{unique}/oxygen",
        "OXYFLEET_SPOOL__DIR": str(tmp_path / "spool"),
        "OXYFLEET_LOG_FORMAT": "json",
    }
    result = oxyfleet("run", "--duration", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "ingest.influx_unreachable_at_start" in result.stderr


def test_check_reports_the_spool(settings_for, unique, tmp_path) -> None:
    from ingest.spool import Spool

    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, 1 << 20)
    assert spool.put(["telemetry,unit_id=X purity_pct=93 1"], 1)
    spool.close()
    env = env_for(settings_for(f"check-{unique}")) | {
        "OXYFLEET_SPOOL__ENABLED": "true",
        "OXYFLEET_SPOOL__DIR": str(spool_dir),
        "OXYFLEET_SPOOL__MAX_BYTES": str(1 << 20),
        "OXYFLEET_METRICS_PORT": "1",  # nothing answers: the replay rate is unknown, not an error
    }
    ok = oxyfleet("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    line = next(x for x in ok.stdout.splitlines() if x.startswith("spool"))
    assert f"spool    {spool_dir}: 1 batches, 0.0 of 1 MiB (0 %)" in line
    assert line.endswith(": ok")
    assert "replay rate n/a" in line
    (spool_dir / "0000000000000007.corrupt").write_bytes(b"damaged")
    damaged = oxyfleet("check", env=env)
    assert damaged.returncode == 1
    assert "FAILED - 1 damaged segment(s)" in damaged.stdout


def test_run_with_health_serves_the_api(settings_for, unique, influx, tmp_path) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = env_for(settings_for(f"withhealth-{unique}"))
    env.update(
        {
            "OXYFLEET_HEALTH__API_PORT": str(port),
            "OXYFLEET_HEALTH__CYCLE_S": "1",
            "OXYFLEET_HEALTH__ALERTS_MQTT": "false",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxyfleet", "run", "--with-health", "--duration", "15"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 12
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    answer = (resp.status, json.loads(resp.read()))
            except OSError:
                time.sleep(0.3)
        assert answer is not None and answer[0] == 200 and answer[1]["units"] > 0, answer
    finally:
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_secrets_never_reach_logs_or_errors(settings_for, unique, tmp_path) -> None:
    """Wrong credentials everywhere: the messages must say what is wrong without repeating the secrets."""
    token, password = "tok-SECRET-4711", "pw-SECRET-0815"
    secret_file = tmp_path / "mqtt_password"
    secret_file.write_text(password)
    env = env_for(settings_for(f"secrets-{unique}"))
    env.update(
        {
            "OXYFLEET_INFLUX__TOKEN": token,
            "OXYFLEET_MQTT__USERNAME": "nobody",
            "OXYFLEET_MQTT__PASSWORD_FILE": str(secret_file),
            "OXYFLEET_LOG_LEVEL": "debug",
        }
    )
    outputs = [
        oxyfleet("check-config", env=env),
        oxyfleet("check", env=env),
        oxyfleet("run", "--duration", "3", env=env),
        oxyfleet("check", env={**env, "OXYFLEET_INFLUX__URL": "http://127.0.0.1:9"}),
    ]
    for result in outputs:
        text = result.stdout + result.stderr
        assert token not in text and password not in text, text[-2000:]
    assert "OXYFLEET_INFLUX__TOKEN=**********" in outputs[0].stdout


def test_long_commands_show_progress_on_a_terminal_only(settings_for, unique, tmp_path, on_terminal) -> None:
    """Re-evaluating days of history and simulating a fleet say how far they are, but only to a person."""
    env = env_for(settings_for(f"progress-{unique}")) | {"OXYFLEET_LOG_LEVEL": "warning"}
    code, terminal = on_terminal(["health", "--once", "--since", "2h"], env, tmp_path)
    assert code == 0, terminal
    assert "evaluating 2h" in terminal
    piped = oxyfleet("health", "--once", "--since", "2h", env=env)
    assert piped.returncode == 0, piped.stderr
    assert "evaluating" not in piped.stderr
    assert piped.stdout.startswith("evaluated ")

    simulate = ["simulate", "--units", "5", "--duration", "3s", "--malformed-share", "0"]
    code, terminal = on_terminal([*simulate, "--ground-truth", str(tmp_path / "a.jsonl")], env, tmp_path)
    assert code == 0, terminal
    assert "simulating 5 units" in terminal
    piped = oxyfleet(*simulate, "--ground-truth", str(tmp_path / "b.jsonl"), env=env)
    assert piped.returncode == 0, piped.stderr
    assert "simulating" not in piped.stderr
    assert piped.stdout.startswith("published ")
