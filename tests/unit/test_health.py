"""Health rules on plain data: classification, no-data, sustain (anti-flap, booked from the start), accounting."""

from __future__ import annotations

import pytest

from devices.catalog import load_catalog
from health.rules import (
    OK,
    SILENT,
    Condition,
    Segment,
    availability,
    classify,
    minutes,
    raw_segments,
    sustain,
    timeline,
    transitions,
)

SPEC = load_catalog()["OC-5-DONOR"]
PLANT = load_catalog()["DOCS-PSA-500"]
LOW = Condition("underperforming", "purity_low")
S = 1000
M = 60 * S


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (
            {
                "purity_pct": 93.0,
                "flow_lpm": 5.0,
                "setpoint_lpm": 5.0,
                "outlet_kpa": 55,
                "temp_c": 35,
                "running": True,
            },
            OK,
        ),
        ({"purity_pct": 81.9, "running": True}, Condition("underperforming", "purity_critical")),
        ({"purity_pct": 89.9, "running": True}, LOW),
        ({"flow_lpm": 3.9, "setpoint_lpm": 5.0, "running": True}, Condition("underperforming", "low_flow")),
        ({"flow_lpm": 4.1, "setpoint_lpm": 5.0, "running": True}, OK),
        ({"outlet_kpa": 20.0}, Condition("underperforming", "pressure_low")),
        ({"outlet_kpa": 150.0}, Condition("underperforming", "pressure_high")),
        ({"temp_c": 46.0}, Condition("underperforming", "overheating")),
        ({"alarms": "NO_FLOW", "running": True}, Condition("underperforming", "alarm_no_flow")),
        ({"running": False, "power": "mains"}, Condition("off", "off")),
        (
            {"running": False, "power": "battery", "alarms": "POWER_FAILURE"},
            Condition("power_failure", "power_failure"),
        ),
        ({"alarms": "POWER_FAILURE"}, Condition("power_failure", "power_failure")),
        ({"purity_pct": 70.0, "running": False, "power": "mains"}, Condition("off", "off")),  # standby wins
    ],
)
def test_classify(reading, expected) -> None:
    assert classify(reading, SPEC) == expected


def test_plant_thresholds_come_from_its_model() -> None:
    assert classify({"outlet_kpa": 100.0}, PLANT) == Condition("underperforming", "pressure_low")
    assert classify({"outlet_kpa": 100.0}, SPEC) == OK


def every(interval: int, start: int, end: int, condition: Condition = OK) -> list[tuple[int, Condition]]:
    return [(t, condition) for t in range(start, end, interval)]


def test_a_gap_longer_than_the_no_data_limit_is_no_data_from_the_missed_report() -> None:
    readings = every(10 * S, 0, 100 * S) + every(10 * S, 300 * S, 400 * S)
    segs = raw_segments(readings, 0, 400 * S, 10 * S, 60 * S)
    assert segs == [Segment(0, 100 * S, OK), Segment(100 * S, 300 * S, SILENT), Segment(300 * S, 400 * S, OK)]


def test_a_short_gap_is_not_no_data() -> None:
    readings = every(10 * S, 0, 100 * S) + every(10 * S, 150 * S, 400 * S)
    assert raw_segments(readings, 0, 400 * S, 10 * S, 60 * S) == [Segment(0, 400 * S, OK)]


def test_nothing_ever_received_is_no_data() -> None:
    assert timeline([], 0, 10 * M, interval_ms=10 * S) == [Segment(0, 10 * M, SILENT)]


def test_a_short_dip_is_absorbed_and_a_long_one_is_booked_from_its_start() -> None:
    readings = every(10 * S, 0, 10 * M)
    readings = [(t, LOW if 2 * M <= t < 2 * M + 30 * S or 5 * M <= t < 8 * M else c) for t, c in readings]
    segs = timeline(readings, 0, 10 * M, interval_ms=10 * S)
    assert segs == [Segment(0, 5 * M, OK), Segment(5 * M, 8 * M, LOW), Segment(8 * M, 10 * M, OK)]
    assert [(t.at_ms, t.after) for t in transitions(segs, OK)] == [(5 * M, LOW), (8 * M, OK)]


def test_a_condition_still_shorter_than_the_window_is_pending() -> None:
    readings = [(t, LOW if t >= 9 * M else OK) for t, _ in every(10 * S, 0, 10 * M)]
    assert timeline(readings, 0, 10 * M, interval_ms=10 * S) == [Segment(0, 10 * M, OK)]
    # Once it has lasted long enough, a later evaluation books it from 9 min.
    readings = [(t, LOW if t >= 9 * M else OK) for t, _ in every(10 * S, 0, 12 * M)]
    assert timeline(readings, 0, 12 * M, interval_ms=10 * S)[-1] == Segment(9 * M, 12 * M, LOW)


def test_the_prior_state_continues_into_the_range() -> None:
    readings = every(10 * S, 0, 60 * S, LOW) + every(10 * S, 60 * S, 10 * M)
    # Without a prior, the first minute looks like a short blip; with the stored prior LOW it continues.
    assert sustain(raw_segments(readings, 0, 10 * M, 10 * S, 60 * S), 2 * M, prior=LOW)[0] == Segment(
        0, 60 * S, LOW
    )


def test_minutes_split_seconds_and_pick_the_dominant_state() -> None:
    segs = [Segment(0, 90 * S, OK), Segment(90 * S, 180 * S, LOW)]
    out = minutes(segs, 0, 180 * S)
    assert [m.condition for m in out] == [OK, LOW, LOW]
    assert out[1].seconds["in_spec"] == 30.0 and out[1].seconds["underperforming"] == 30.0
    assert sum(sum(m.seconds.values()) for m in out) == 180.0


def test_availability_excludes_off() -> None:
    assert availability({"in_spec": 50, "underperforming": 25, "no_data": 25, "off": 1000}) == 0.5
    assert availability({"off": 60}) is None


def test_without_a_prior_a_short_start_takes_the_first_lasting_state() -> None:
    readings = every(10 * S, 30 * S, 10 * M)  # first reading 30 s into the range
    assert timeline(readings, 0, 10 * M, interval_ms=10 * S) == [Segment(0, 10 * M, OK)]


HEALTHY_PLANT = {
    "purity_pct": 93.5,
    "flow_lpm": 300.0,
    "outlet_kpa": 400.0,
    "temp_c": 35.0,
    "running": True,
    "product_flow_lpm": 510.0,
    "product_kpa": 420.0,
    "compressor_temp_c": 80.0,
    "dew_point_c": -45.0,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, ""),
        ({"product_flow_lpm": 50.0}, "product_flow_low"),  # 10 % of the 500 L/min rating
        ({"setpoint_lpm": 300.0, "product_flow_lpm": 260.0}, ""),  # judged against the demanded setpoint
        ({"setpoint_lpm": 300.0, "product_flow_lpm": 200.0}, "product_flow_low"),
        ({"product_kpa": 100.0}, "product_pressure_low"),
        ({"product_kpa": 700.0}, "product_pressure_high"),
        ({"compressor_temp_c": 120.0}, "compressor_overheating"),
        ({"dew_point_c": -20.0}, "dew_point_high"),
        ({"product_flow_lpm": None, "product_kpa": None, "compressor_temp_c": None, "dew_point_c": None}, ""),
    ],
)
def test_docs_plants_are_judged_on_their_own_measurements(change: dict[str, object], reason: str) -> None:
    # The example (purity 93 %, product 50 L/min on a 500 L/min plant) is not in spec any more.
    reading = {**HEALTHY_PLANT, **change}
    assert classify(reading, PLANT).reason == reason
    # A concentrator ignores plant fields it does not have.
    assert classify({**reading, "flow_lpm": 5.0, "setpoint_lpm": 5.0, "outlet_kpa": 55.0}, SPEC).reason == ""


def test_accounting_starts_at_commissioning_and_the_first_reading() -> None:
    from health.rules import accounting_start

    assert accounting_start(0, 5 * M, 10 * M, 20 * M) == (10 * M, 10 * M)  # reported before: all booked
    assert accounting_start(12 * M, 5 * M, 10 * M, 20 * M) == (12 * M, 12 * M)  # commissioned mid-range
    assert accounting_start(12 * M, 15 * M, 10 * M, 20 * M) == (12 * M, 15 * M)  # never connected till 15
    assert accounting_start(0, None, 10 * M, 20 * M) == (10 * M, 20 * M)  # never connected at all
    assert accounting_start(30 * M, None, 10 * M, 20 * M) == (20 * M, 20 * M)  # not commissioned yet


def test_a_bare_commissioning_date_is_local_midnight_in_the_province() -> None:
    from datetime import date

    from devices.inventory import commissioned_ms, parse_commissioned

    utc_midnight = 1_717_200_000_000  # 2024-06-01T00:00:00Z
    assert commissioned_ms(date(2024, 6, 1), "DKI Jakarta") == utc_midnight - 7 * 3600_000
    assert commissioned_ms(date(2024, 6, 1), "Sulawesi Selatan") == utc_midnight - 8 * 3600_000
    assert commissioned_ms(date(2024, 6, 1), "Papua") == utc_midnight - 9 * 3600_000
    stamp = parse_commissioned("2024-06-01T09:30:00+08:00")
    assert commissioned_ms(stamp, "Papua") == utc_midnight + 90 * 60_000
    with pytest.raises(ValueError, match="zone"):
        parse_commissioned("2024-06-01T09:30:00")
