"""The fleet simulator against the real broker and InfluxDB, checked against its own ground truth.

`oxyfleet simulate --units 200 --seed 1 --duration 60s` runs as a user would start it (a subprocess),
while an in-process ingester with the sample inventory stores what arrives. Afterwards every number in
the ground truth must be found in InfluxDB: readings, rejections by reason, inventory tags, and each
fault episode's signature in the stored data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from devices.inventory import SAMPLE_INVENTORY, Inventory, load_inventory
from fleetsim.faults import sieve_purity
from tests.integration.conftest import now_ms, run_oxyfleet

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from store.reader import InfluxQL

pytestmark = pytest.mark.integration


def simulate(prefix: str, truth: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env.update(
        {
            "OXYFLEET_MQTT__TOPIC_PREFIX": prefix,
            "OXYFLEET_MQTT__PORT": os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883"),
        }
    )
    return run_oxyfleet("simulate", "--ground-truth", str(truth), *args, env=env, timeout=timeout)


def rows_in(influx: InfluxQL, unit: str, start: int, end: int, fields: str = "*") -> list[dict[str, Any]]:
    return influx.rows(
        f"SELECT {fields} FROM telemetry WHERE unit_id = '{unit}' AND time >= {start}ms AND time < {end}ms"
    )


def test_simulate_200_units_for_60s_is_stored_as_the_ground_truth_says(
    start_ingester, influx, prefix, wait_for, tmp_path
) -> None:
    start_ingester(inventory_file=SAMPLE_INVENTORY)
    truth_file = tmp_path / "truth.jsonl"
    result = simulate(prefix, truth_file, "--units", "200", "--seed", "1", "--duration", "60s")
    assert result.returncode == 0, result.stderr
    truth = [json.loads(line) for line in truth_file.read_text().splitlines()]
    summary = truth[-1]
    assert summary["type"] == "summary" and summary["readings_published"] > 1000

    def stored() -> tuple[int, dict[str, int]]:
        rows = influx.rows("SELECT count(seq) FROM telemetry")
        rejected = {
            r["reason"]: int(r["n"])
            for r in influx.rows("SELECT count(payload_bytes) AS n FROM rejected GROUP BY reason")
        }
        return (int(rows[0]["count"]) if rows else 0), rejected

    expected = (summary["readings_published"], summary["rejections_expected"])
    wait_for(lambda: stored() == expected, timeout=30)
    assert sum(summary["rejections_expected"].values()) > 0  # malformed messages were part of the run

    # Tags: every unit's points carry its hospital, province and model from the sample inventory.
    inventory = load_inventory(SAMPLE_INVENTORY)
    series = influx.rows("SELECT last(seq) FROM telemetry GROUP BY unit_id, hospital, province, model, kind")
    assert len(series) == 200
    for row in series:
        unit = inventory.units[row["unit_id"]]
        assert (row["hospital"], row["province"], row["model"], row["kind"]) == (
            unit.hospital,
            unit.province,
            unit.model,
            unit.kind,
        )

    # Each fault episode leaves its signature in what was stored.
    faults = [r for r in truth if r["type"] == "fault"]
    seen = Counter(f["fault"] for f in faults if episode_seen(influx, inventory, f))
    # 30 episodes over 10 kinds: each kind is observed at least once.
    assert len(seen) == 10, seen


def episode_seen(influx: InfluxQL, inventory: Inventory, f: dict[str, Any]) -> bool:  # noqa: C901 - a branch per fault kind
    """Assert the episode's signature in storage; False when no reading fell inside a short episode."""
    unit, start, end, kind = f["unit_id"], f["start_ms"], f["end_ms"], f["fault"]
    during = rows_in(influx, unit, start, end)
    if kind == "silent":
        assert during == [], f
        return True
    if kind == "sensor_glitch":
        glitch = influx.rows(
            f"SELECT count(payload_bytes) FROM rejected WHERE reason = 'out_of_range' AND unit_id = '{unit}'"
        )
        assert glitch and glitch[0]["count"] >= 1, f
        return True
    if kind == "network_loss":
        assert influx.rows(
            f"SELECT online FROM unit_connection WHERE unit_id = '{unit}' AND online = false"
        ), f
        return bool(during)  # the late batch arrived with original timestamps inside the episode
    if kind == "clock_skew":
        grid = {r["time"] % 1000 for r in rows_in(influx, unit, 0, 2**62 // 10**6, "seq")}
        assert len(grid) == 2, f  # regular readings on one millisecond phase, skewed ones 500 ms off
        return True
    for row in during:
        if kind == "sieve_wear":
            assert row["purity_pct"] == pytest.approx(
                sieve_purity(f["purity_base"], start, end, row["time"]), abs=0.02
            ), f
        elif kind == "flow_restriction":
            assert row["flow_lpm"] / row["setpoint_lpm"] == pytest.approx(f["flow_factor"], abs=0.01), f
        elif kind in ("power_failure", "switched_off"):
            assert row["running"] is False and row["power"] == (
                "battery" if kind == "power_failure" else "mains"
            ), f
        elif kind == "overheating":
            assert row["temp_c"] > inventory.units[unit].spec.max_temp_c and "HIGH_TEMP" in row["alarms"], f
        elif kind == "device_alarm":
            assert f["alarm"] in row["alarms"], f
    return bool(during)


def test_editing_the_inventory_retags_new_points_within_seconds(
    start_ingester, publisher, influx, wait_for, tmp_path
) -> None:
    inventory = tmp_path / "inventory.csv"
    shutil.copy(SAMPLE_INVENTORY, inventory)
    start_ingester(inventory_file=inventory, inventory_check_s=0.5)
    unit = "OC-JKT-00001"
    publisher.reading(unit, {"ts": now_ms() - 2000, "purity_pct": 93.0})
    wait_for(lambda: influx.rows("SELECT last(purity_pct) FROM telemetry GROUP BY hospital"))
    (before,) = influx.rows("SELECT last(purity_pct) FROM telemetry GROUP BY hospital")
    assert before["hospital"] == "RS Umum Cempaka Raya"
    inventory.write_text(
        inventory.read_text().replace(
            f"{unit},concentrator,OC-10-DONOR,SN95231021,RS Umum Cempaka Raya",
            f"{unit},concentrator,OC-10-DONOR,SN95231021,RS Moved Here",
        )
    )
    edited_at = time.monotonic()

    def retagged() -> bool:
        publisher.reading(unit, {"ts": now_ms(), "purity_pct": 93.0})
        return bool(influx.rows("SELECT count(purity_pct) FROM telemetry WHERE hospital = 'RS Moved Here'"))

    wait_for(retagged, timeout=10, interval=0.5)
    assert time.monotonic() - edited_at < 5


def test_load_mode_reports_its_rate(prefix, tmp_path, services) -> None:
    result = simulate(prefix, tmp_path / "unused.jsonl", "--load", "--messages", "20000", "--units", "100")
    assert result.returncode == 0, result.stderr
    assert "published 20000 readings from 100 units at QoS 1" in result.stdout
    rate = float(result.stdout.rsplit(": ", 1)[1].split()[0].replace(",", ""))
    assert rate > 0


def test_load_mode_live_timestamps_are_now_and_distinct_per_unit_across_processes(
    prefix: str, tmp_path: Path, services: None
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    seen: list[tuple[str, int]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, m: seen.append((m.topic.split("/")[-2], json.loads(m.payload)["ts"]))
    sub.connect("127.0.0.1", int(os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883")))
    sub.subscribe(f"{prefix}/#", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    start = now_ms()
    args = ("--load", "--live-ts", "--messages", "6000", "--units", "10", "--processes", "2")
    result = simulate(prefix, tmp_path / "unused.jsonl", *args)
    end = now_ms()
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while len(seen) < 6000 and time.monotonic() < deadline:
        time.sleep(0.1)
    sub.loop_stop()
    sub.disconnect()
    assert len(seen) == 6000
    assert len(set(seen)) == 6000  # 600 readings per unit in well under 600 ms: still all distinct
    assert all(start <= ts <= end + 1000 for _, ts in seen)
