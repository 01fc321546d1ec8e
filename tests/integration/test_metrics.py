"""``curl /metrics`` of a real ``python -m oxyfleet run --with-health``, read as Prometheus reads it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from store.schema import STATES
from tests.integration.conftest import ROOT
from tests.integration.conftest import run_oxyfleet as oxyfleet
from tests.integration.test_cli_services import env_for

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(resp.read().decode())


def exposition(text: str) -> dict[str, Any]:
    """Families by name, after checking what every scraper relies on: HELP and TYPE, `_total`, no `instance`."""
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    typed = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families
    for family in families.values():
        assert family.documentation, family.name
        for sample in family.samples:
            exposed = family.name + "_total" if family.type == "counter" else family.name
            assert sample.name == exposed, (family.type, sample.name)
            assert exposed in helped and typed[exposed] == family.type, sample.name
            assert "instance" not in sample.labels, sample  # Prometheus' own target label
    # Every sample line belongs to a family with HELP and TYPE (nothing the parser tolerated silently).
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match and match.group(1) in typed, line
    return families


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    samples = [s.value for s in families[name].samples if s.labels == labels]
    assert len(samples) == 1, (name, labels, families[name].samples)
    return float(samples[0])


def test_metrics_of_the_ingester_and_the_health_engine_parse_and_count_what_happened(
    settings_for, unique, publisher, wait_for, free_port, tmp_path
) -> None:
    metrics_port, api_port = free_port(), free_port()
    env = env_for(settings_for(f"metrics-{unique}")) | {
        "OXYFLEET_INSTANCE": f"ing-{unique}",
        "OXYFLEET_METRICS_HOST": "127.0.0.1",
        "OXYFLEET_METRICS_PORT": str(metrics_port),
        "OXYFLEET_HEALTH__API_PORT": str(api_port),
        "OXYFLEET_HEALTH__CYCLE_S": "1",
        "OXYFLEET_HEALTH__ALERTS_MQTT": "false",
        "OXYFLEET_SPOOL__ENABLED": "true",
        "OXYFLEET_SPOOL__DIR": str(tmp_path / "spool"),
    }
    ingest_url, health_url = f"http://127.0.0.1:{metrics_port}/metrics", f"http://127.0.0.1:{api_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxyfleet", "run", "--with-health"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ingester() -> dict[str, Any]:
        try:
            return exposition(get(ingest_url))
        except OSError:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            return {}

    try:
        prefix = "oxyfleet_ingest_"
        wait_for(lambda: (f := ingester()) and value(f, f"{prefix}mqtt_subscribed") == 1, 30)
        good, bad = 20, 3
        base = time.time_ns() // 1_000_000 - 5000
        for i in range(good):
            publisher.reading("OC-MET", {"ts": base + i, "purity_pct": 93.0})
        for _ in range(bad):
            publisher.reading("OC-MET", b"{not json")
        families = wait_for(
            lambda: (f := ingester()) and value(f, f"{prefix}messages_acked") == good + bad and f, 30
        )
        assert value(families, f"{prefix}messages_received") == good + bad
        assert value(families, f"{prefix}points_rejected") == bad
        assert value(families, f"{prefix}points_rejected_by_reason", reason="not_json") == bad
        assert value(families, f"{prefix}points_written") >= good
        assert value(families, f"{prefix}backlog") == 0
        assert value(families, f"{prefix}ingester_info", ingester=f"ing-{unique}") == 1
        for counter in ("messages_received", "points_written", "reconnects", "write_requests"):
            assert families[f"{prefix}{counter}"].type == "counter", counter
        for gauge in ("backlog", "mqtt_subscribed", "last_batch_seconds", "oldest_unwritten_age_seconds"):
            assert families[f"{prefix}{gauge}"].type == "gauge", gauge
        # Every value the pipeline has is described (none fell back to the generic text).
        undescribed = [f.name for f in families.values() if f.documentation.startswith("Snapshot value")]
        assert not undescribed, undescribed
        assert value(families, "process_resident_memory_bytes") > 10 * 2**20
        assert value(families, "process_cpu_seconds") > 0
        # `oxyfleet check` reads the running ingester's replay rate from the same /metrics.
        check = oxyfleet("check", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "replaying 0 points/s" in check.stdout, check.stdout

        def health() -> dict[str, Any]:
            try:
                return exposition(get(f"{health_url}/metrics"))
            except OSError:
                return {}

        engine = wait_for(lambda: (f := health()) and value(f, "oxyfleet_health_cycles") >= 1 and f, 30)
        assert engine["oxyfleet_health_cycles"].type == "counter"
        units = {s.labels["state"]: s.value for s in engine["oxyfleet_health_units"].samples}
        assert set(units) == set(STATES)
        with urllib.request.urlopen(f"{health_url}/healthz", timeout=5) as resp:
            assert sum(units.values()) == json.loads(resp.read())["units"] >= 1
        assert 0 < value(engine, "oxyfleet_health_last_cycle_seconds") < 30
        assert value(engine, "process_resident_memory_bytes") > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
