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

Then the run is replayed in engine time (one cycle every 30 s of simulated time, as if the engine had
watched it live) to check alerts: exactly one raise and one clear per fault episode, on the MQTT topic and
at a local webhook receiver, each within the sustain window + one cycle (+ one reporting interval) of the
episode's start and end; none for units that stayed in spec.

Availability computed from unit_state must match the expectation within 0.5 percentage points (the
readings every 5-10 s shift each boundary by at most one interval, ~0.1 pp over five hours).
"""

from __future__ import annotations

import random
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from fleetsim.simulator import FleetPublisher, Simulator, units_from_inventory
from health.engine import HealthEngine
from health.rules import availability
from health.uptime import uptime_rows
from store.writer import InfluxSink, make_transport
from tests.integration.conftest import AlertCapture, alert_capture, wait_until_stored

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
    wait_until_stored(influx, summary.readings_published)
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
        measured = {s: float(row[s] or 0) for s in (*expected, "never_connected")}
        assert sum(measured.values()) == pytest.approx((end - start) / 1000, abs=1.0), unit.unit_id
        # Before a unit's first ever reading nothing is booked against it: at most the seconds between
        # the range's first whole minute and the unit's first report.
        assert measured.pop("never_connected") <= unit.spec.report_interval_s, unit.unit_id
        exp, got = availability(expected), availability(measured)
        assert got == pytest.approx(exp, abs=0.005), (unit.unit_id, fault, expected, measured)
        events = _events_but_first_contact(influx, unit.unit_id, start, end)
        if fault is None or fault["fault"] not in EXPECTED_STATE:
            assert events == [], (unit.unit_id, fault, events)  # no in-spec unit is ever flagged
            continue
        state, reasons = EXPECTED_STATE[fault["fault"]]
        raised = [e for e in events if e["to"] == state]
        assert raised and raised[0]["reason"] in reasons, (fault, events)
        began = fault["crosses_90_ms"] if fault["fault"] == "sieve_wear" else fault["start_ms"]
        # Booked from its start (within one reporting interval), not from when the sustain window ended.
        assert abs(raised[0]["time"] - began) <= unit.spec.report_interval_s * 1000 + 1000, (fault, raised[0])
        if fault["fault"] == "sieve_wear":  # both thresholds: below 90 %, then below 82 % when scheduled
            critical = [e for e in events if e["reason"] == "purity_critical"]
            assert (
                critical
                and abs(critical[0]["time"] - fault["crosses_82_ms"])
                <= unit.spec.report_interval_s * 1000 + 1000
            ), (fault, events)
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

    sink.close()
    check_alerts(influx, settings, prefix, inventory_file, units, sim, start, end, wait_for)


def _events_but_first_contact(influx, unit_id: str, start: int, end: int) -> list[dict[str, Any]]:
    """The unit's events in the range, less its first contact.

    A unit whose first reading came after the range's start (the simulator's first message of some units
    is malformed, so rejected) has one real transition more: ``never_connected`` -> ``in_spec``.
    """
    events = influx.rows(
        f"SELECT * FROM unit_event WHERE unit_id = '{unit_id}' AND time >= {start}ms AND time < {end}ms"
    )
    first_contact = [e for e in events if e["from"] == "never_connected"]
    assert len(first_contact) <= 1 and all(e["to"] == "in_spec" for e in first_contact), events
    return [e for e in events if e not in first_contact]


ALERT_CYCLE_MS = 30_000


def check_alerts(influx, settings, prefix, inventory_file, units, sim, start, end, wait_for) -> None:
    with alert_capture(settings, prefix, backoff_s=0.1) as capture:
        _alert_cycles(influx, inventory_file, capture, start, end, wait_for)
    posts, received = capture.posts, capture.received
    faults = {f.unit_id: f.record() for f in sim.faults}
    for unit in units:
        mine = [a for a in posts if a["unit_id"] == unit.unit_id]
        over_mqtt = [a for a in received if a["unit_id"] == unit.unit_id]
        assert [{k: v for k, v in a.items() if k != "topic"} for a in over_mqtt] == mine
        assert all(a["topic"] == f"{prefix}-alerts/{a['hospital']}/{unit.unit_id}" for a in over_mqtt)
        fault = faults.get(unit.unit_id)
        if fault is None or fault["fault"] not in EXPECTED_STATE:
            assert mine == [], (unit.unit_id, fault, mine)
            continue
        raises = [a for a in mine if a["event"] == "raise"]
        clears = [a for a in mine if a["event"] == "clear"]
        assert len(raises) == 1 and len(clears) == 1, (fault, mine)
        state, reasons = EXPECTED_STATE[fault["fault"]]
        assert raises[0]["state"] == state and raises[0]["reason"] in reasons, (fault, raises)
        began = fault["crosses_90_ms"] if fault["fault"] == "sieve_wear" else fault["start_ms"]
        limit = 120_000 + ALERT_CYCLE_MS + unit.spec.report_interval_s * 1000
        raised_at = datetime.fromisoformat(raises[0]["at"]).timestamp() * 1000
        cleared_at = datetime.fromisoformat(clears[0]["at"]).timestamp() * 1000
        assert 0 <= raised_at - began <= limit, (fault, raises[0])
        assert 0 <= cleared_at - fault["end_ms"] <= limit, (fault, clears[0])
        assert unit.unit_id in raises[0]["message"] and raises[0]["hospital"] in raises[0]["message"]


def _alert_cycles(influx, inventory_file, capture: AlertCapture, start: int, end: int, wait_for) -> None:
    """Engine cycles every 30 s of the run, alerts to ``capture``, until all of them arrived."""
    clock = [0.0]
    engine = HealthEngine(
        influx, None, inventory_file, cycle_s=30, clock=lambda: clock[0], on_change=capture.alerter.notify
    )
    for t in range(
        start + 15 * MINUTE, end + 1, ALERT_CYCLE_MS
    ):  # start once a full lookback window has data
        clock[0] = t / 1000
        engine.cycle()
    capture.alerter.close()
    wait_for(capture.settled)
