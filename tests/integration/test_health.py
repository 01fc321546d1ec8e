"""The health engine against the real InfluxDB, checked against the simulator's ground truth.

A fleet of 20 units from the sample inventory (half of them with one fault episode each, one episode per
fault kind) runs for five simulated hours at speed 600 through the real broker and ingester. The engine
then evaluates the range, and for every unit the test derives the expected time in each state from the
ground truth alone:

- flow_restriction, overheating, device_alarm: underperforming over [start, end);
- sieve_wear: underperforming from the scheduled 90 % crossing to the end;
- power_failure: power_failure over [start, end); switched_off: off (excluded from availability);
- silent: no_data over [start, end);
- network_loss (readings uploaded late), clock_skew (within limits), sensor_glitch (one reading
  rejected): no time lost once the late readings are in;
- everything else in spec.

Availability computed from unit_state must match the expectation within 0.5 percentage points (the
readings every 5-10 s shift each boundary by at most one interval, ~0.1 pp over five hours).
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import pytest

from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from devices.simulator import FleetPublisher, Simulator, units_from_inventory
from ingest.health import availability
from ingest.health_engine import HealthEngine, uptime_rows
from ingest.pipeline import make_transport
from ingest.sink_influx import InfluxSink

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

MINUTE = 60_000
EXPECTED_STATE = {
    "flow_restriction": ("underperforming", {"low_flow"}),
    "overheating": ("underperforming", {"overheating"}),
    "device_alarm": ("underperforming", {"alarm_high_pressure", "pressure_low", "alarm_no_flow"}),
    "sieve_wear": ("underperforming", {"purity_low", "purity_critical"}),
    "power_failure": ("power_failure", {"power_failure"}),
    "switched_off": ("off", {"off"}),
    "silent": ("no_data", {"no_data"}),
}


def expected_seconds(faults: list[dict[str, Any]], start: int, end: int) -> dict[str, float]:
    seconds = dict.fromkeys(("in_spec", "underperforming", "power_failure", "no_data", "off"), 0.0)
    for f in faults:
        kind = f["fault"]
        if kind not in EXPECTED_STATE:
            continue
        begin = f["crosses_90_ms"] if kind == "sieve_wear" else f["start_ms"]
        overlap = max(0, min(f["end_ms"], end) - max(begin, start)) / 1000
        seconds[EXPECTED_STATE[kind][0]] += overlap
    seconds["in_spec"] = (end - start) / 1000 - sum(seconds.values())
    return seconds


def test_engine_matches_ground_truth_and_survives_restart(
    start_ingester, influx, prefix, settings_for, tmp_path: Path, wait_for
) -> None:
    rng = random.Random(11)
    units = units_from_inventory(load_inventory(SAMPLE_INVENTORY), 20, rng)
    inventory_file = tmp_path / "inventory.csv"
    inventory = load_inventory(SAMPLE_INVENTORY)
    inventory_file.write_text(write_inventory(inventory.units[u.unit_id] for u in units))
    start_ingester(inventory_file=inventory_file)
    settings = settings_for("health-pub")
    publisher = FleetPublisher(settings.mqtt.host, settings.mqtt.port)
    sim = Simulator(
        units,
        publisher,
        seed=11,
        duration_s=30,
        speed=600,
        fault_share=0.5,
        malformed_share=0.01,
        prefix=prefix,
    )
    summary = sim.run(threading.Event())
    publisher.close()
    wait_for(
        lambda: (
            (influx.rows("SELECT count(seq) FROM telemetry") or [{"count": 0}])[0]["count"]
            == summary.readings_published
        ),
        timeout=60,
    )
    assert {f.kind.value for f in sim.faults} == {
        "sieve_wear",
        "flow_restriction",
        "power_failure",
        "switched_off",
        "overheating",
        "device_alarm",
        "network_loss",
        "silent",
        "clock_skew",
        "sensor_glitch",
    }

    start = sim.sim_start_ms - sim.sim_start_ms % MINUTE + MINUTE  # the first whole minute of the run
    end = sim.sim_end_ms - sim.sim_end_ms % MINUTE
    sink = InfluxSink(make_transport(settings.influx))
    engine = HealthEngine(influx, sink, inventory_file)
    engine.evaluate_range(start, end)
    first = {r["unit_id"]: r for r in uptime_rows(influx, start, end)}
    assert len(first) == 20

    faults = {f.unit_id: f.record() for f in sim.faults}
    for unit in units:
        fault = faults.get(unit.unit_id)
        expected = expected_seconds([fault] if fault else [], start, end)
        row = first[unit.unit_id]
        measured = {s: float(row[s] or 0) for s in expected}
        assert sum(measured.values()) == pytest.approx((end - start) / 1000, abs=1.0), unit.unit_id
        exp, got = availability(expected), availability(measured)
        assert got == pytest.approx(exp, abs=0.005), (unit.unit_id, fault, expected, measured)
        events = influx.rows(
            f"SELECT * FROM unit_event WHERE unit_id = '{unit.unit_id}' AND time >= {start}ms AND time < {end}ms"
        )
        if fault is None or fault["fault"] not in EXPECTED_STATE:
            assert events == [], (unit.unit_id, fault, events)  # no in-spec unit is ever flagged
            continue
        state, reasons = EXPECTED_STATE[fault["fault"]]
        raised = [e for e in events if e["to"] == state]
        assert raised and raised[0]["reason"] in reasons, (fault, events)
        began = fault["crosses_90_ms"] if fault["fault"] == "sieve_wear" else fault["start_ms"]
        # Booked from its start (within one reporting interval), not from when the sustain window ended.
        assert abs(raised[0]["time"] - began) <= unit.spec.report_interval_s * 1000 + 1000, (fault, raised[0])
        assert any(e["to"] == "in_spec" and e["time"] >= fault["end_ms"] - 1000 for e in events), (
            fault,
            events,
        )

    # A restart mid-range: two engines, each evaluating half, the second reading its prior from storage.
    middle = start + (end - start) // 2
    middle -= middle % MINUTE
    HealthEngine(influx, sink, inventory_file).evaluate_range(start, middle)
    HealthEngine(influx, sink, inventory_file).evaluate_range(middle, end)
    second = {r["unit_id"]: r for r in uptime_rows(influx, start, end)}
    for unit_id, row in first.items():
        for s in ("in_spec", "underperforming", "power_failure", "no_data", "off"):
            assert float(second[unit_id][s] or 0) == pytest.approx(float(row[s] or 0), abs=1.0), (unit_id, s)
