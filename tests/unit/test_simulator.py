"""Fault models and the simulator's ground truth, checked against the real decoder (no broker needed)."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import Counter
from typing import Any

import pytest

from devices.catalog import load_catalog
from devices.inventory import SAMPLE_INVENTORY, load_inventory
from fleetsim.faults import (
    GENERIC_KINDS,
    Fault,
    FaultKind,
    UnitState,
    apply_faults,
    healthy_reading,
    plan_faults,
)
from fleetsim.simulator import MALFORMED, Simulator, units_from_inventory
from ingest.decode import Decoder, Inbound, ValidReading

NOW_MS = 1764140400000
CATALOG = load_catalog()


class ListPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.messages.append((topic, payload, retain))


def unit(kind: str = "concentrator", model: str = "OC-5-DONOR") -> UnitState:
    return UnitState("OC-T-1", kind, CATALOG[model], purity_base=93.0, run_hours=100.0)


def reading_at(u: UnitState, t: int) -> dict[str, Any]:
    return apply_faults(healthy_reading(u, t, random.Random(t), 10), u, t)


def with_fault(kind: FaultKind, **params: object) -> tuple[UnitState, Fault]:
    u = unit()
    fault = Fault(u.unit_id, kind, NOW_MS - 600_000, NOW_MS - 300_000, dict(params))
    u.faults.append(fault)
    return u, fault


def test_sieve_wear_crosses_90_then_82_at_the_scheduled_times() -> None:
    u = unit()
    (fault,) = plan_faults(
        [u], NOW_MS - 3_600_000, NOW_MS, random.Random(3), share=1.0, kinds=[FaultKind.SIEVE_WEAR]
    )
    t90, t82 = fault.params["crosses_90_ms"], fault.params["crosses_82_ms"]
    assert fault.start_ms < t90 < t82 < fault.end_ms
    assert reading_at(u, fault.start_ms - 1000)["purity_pct"] > 90
    assert reading_at(u, t90 - 1000)["purity_pct"] >= 90 > reading_at(u, t90 + 1000)["purity_pct"]
    assert reading_at(u, t82 - 1000)["purity_pct"] >= 82 > reading_at(u, t82 + 1000)["purity_pct"]
    assert "LOW_PURITY" in reading_at(u, t82 + 1000)["alarms"]
    assert reading_at(u, fault.end_ms)["purity_pct"] > 90  # serviced: sieve beds replaced


def test_flow_restriction_drops_flow_below_80_percent_of_setpoint() -> None:
    u, fault = with_fault(FaultKind.FLOW_RESTRICTION, flow_factor=0.55)
    during = reading_at(u, fault.start_ms + 1000)
    assert during["flow_lpm"] / during["setpoint_lpm"] == pytest.approx(0.55, abs=0.01)
    after = reading_at(u, fault.end_ms + 1000)
    assert after["flow_lpm"] / after["setpoint_lpm"] > 0.95


def test_power_failure_and_switched_off_differ_only_in_power_and_alarm() -> None:
    u, fault = with_fault(FaultKind.POWER_FAILURE)
    r = reading_at(u, fault.start_ms)
    assert (r["running"], r["power"], r["flow_lpm"], "purity_pct" in r) == (False, "battery", 0.0, False)
    assert "POWER_FAILURE" in r["alarms"]
    u, fault = with_fault(FaultKind.SWITCHED_OFF)
    r = reading_at(u, fault.start_ms)
    assert (r["running"], r["power"], r["alarms"]) == (False, "mains", [])


def test_overheating_and_device_alarm() -> None:
    u, fault = with_fault(FaultKind.OVERHEATING, excess_c=7.0)
    r = reading_at(u, fault.start_ms)
    assert r["temp_c"] == u.spec.max_temp_c + 7.0 and "HIGH_TEMP" in r["alarms"]
    assert reading_at(u, fault.end_ms)["temp_c"] < u.spec.max_temp_c
    u, fault = with_fault(FaultKind.DEVICE_ALARM, alarm="LOW_PRESSURE")
    r = reading_at(u, fault.start_ms)
    assert "LOW_PRESSURE" in r["alarms"] and r["outlet_kpa"] < u.spec.outlet_min_kpa


def test_clock_skew_shifts_timestamps_by_the_planned_amount() -> None:
    u, fault = with_fault(FaultKind.CLOCK_SKEW, skew_ms=-90_500)
    assert reading_at(u, fault.start_ms)["ts"] == fault.start_ms - 90_500


def run_sim(
    units: list[UnitState], kinds: list[FaultKind], *, fault_share: float, malformed_share: float
) -> tuple[Simulator, ListPublisher, list[dict[str, Any]]]:
    publisher, truth = ListPublisher(), io.StringIO()
    sim = Simulator(
        units,
        publisher,
        seed=7,
        duration_s=600,
        speed=1.0,
        fault_kinds=kinds,
        truth=truth,
        now_ms=lambda: NOW_MS - 600_000,
        fault_share=fault_share,
        malformed_share=malformed_share,
    )  # the simulated window ends at NOW_MS
    sim.run(realtime=False)
    return sim, publisher, [json.loads(line) for line in truth.getvalue().splitlines()]


def decode_all(messages: list[tuple[str, bytes, bool]]) -> tuple[list[ValidReading], Counter[str]]:
    decoder = Decoder()
    readings: list[ValidReading] = []
    reasons: Counter[str] = Counter()
    for topic, payload, _ in messages:
        out = decoder.decode(Inbound(topic, payload, NOW_MS * 1_000_000))
        readings += out.readings
        reasons.update(r.reason.value for r in out.rejections)
    return readings, reasons


def test_network_loss_buffers_and_uploads_a_late_batch_with_original_timestamps() -> None:
    u = unit()
    sim, pub, _truth = run_sim([u], [FaultKind.NETWORK_LOSS], fault_share=1.0, malformed_share=0.0)
    (fault,) = sim.faults
    statuses = [p for t, p, _ in pub.messages if t.endswith("/status")]
    assert statuses == [b"online", b"offline", b"online"]
    batches = [
        json.loads(p) for t, p, _ in pub.messages if t.endswith("/telemetry") and p.startswith(b'{"readings"')
    ]
    assert batches, "the buffered readings must be uploaded"
    late = [r["ts"] for b in batches for r in b["readings"]]
    assert all(fault.start_ms <= ts < fault.end_ms for ts in late)
    singles = [
        json.loads(p)["ts"] for t, p, _ in pub.messages if t.endswith("/telemetry") and p.startswith(b'{"ts"')
    ]
    assert not [ts for ts in singles if fault.start_ms <= ts < fault.end_ms]
    readings, reasons = decode_all(pub.messages)
    assert len(readings) == sim.summary.readings_published == len(late) + len(singles)
    assert reasons == Counter()


def test_silent_unit_sends_nothing_and_its_seq_shows_the_gap() -> None:
    u = unit()
    sim, pub, _ = run_sim([u], [FaultKind.SILENT], fault_share=1.0, malformed_share=0.0)
    (fault,) = sim.faults
    telemetry = [json.loads(p) for t, p, _ in pub.messages if t.endswith("/telemetry")]
    assert not [r for r in telemetry if fault.start_ms <= r["ts"] < fault.end_ms]
    seqs = [r["seq"] for r in telemetry]
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    assert max(gaps) > 1


def test_sensor_glitch_is_exactly_one_out_of_range_reading() -> None:
    u = unit()
    sim, pub, _ = run_sim([u], [FaultKind.SENSOR_GLITCH], fault_share=1.0, malformed_share=0.0)
    _, reasons = decode_all(pub.messages)
    assert reasons == Counter({"out_of_range": 1}) == sim.summary.rejections_expected


@pytest.mark.parametrize(("reason", "make"), MALFORMED, ids=[r for r, _ in MALFORMED])
def test_each_malformed_message_is_rejected_with_the_reason_the_ground_truth_states(reason, make) -> None:
    payload = make(healthy_reading(unit(), NOW_MS, random.Random(1), 10))
    out = Decoder().decode(Inbound("oxygen/concentrator/OC-T-1/telemetry", payload, NOW_MS * 1_000_000))
    assert [r.reason.value for r in out.rejections] == [reason]


def test_a_whole_run_matches_its_ground_truth() -> None:
    units = units_from_inventory(load_inventory(SAMPLE_INVENTORY), 60, random.Random(5))
    sim, pub, truth = run_sim(units, list(GENERIC_KINDS), fault_share=0.5, malformed_share=0.05)
    readings, reasons = decode_all(pub.messages)
    summary = truth[-1]
    assert summary["type"] == "summary"
    assert len(readings) == summary["readings_published"]
    assert dict(reasons) == summary["rejections_expected"]
    assert summary["messages"] == len(pub.messages)
    faults = [r for r in truth if r["type"] == "fault"]
    assert {f["fault"] for f in faults} == {k.value for k in GENERIC_KINDS}  # every kind scheduled
    assert all(sim.sim_start_ms <= f["start_ms"] < f["end_ms"] <= sim.sim_end_ms for f in faults)
    malformed = [r for r in truth if r["type"] == "malformed"]
    assert Counter(m["reason"] for m in malformed) + Counter(
        {"out_of_range": sum(1 for f in faults if f["fault"] == "sensor_glitch")}
    ) == Counter(summary["rejections_expected"])
    # No two readings of a unit share a timestamp (clock skew included), so none overwrites another.
    keys = [(r.unit_id, r.reading.ts) for r in readings]
    assert len(keys) == len(set(keys))


def test_same_seed_same_run_different_seed_different_run() -> None:
    def messages(seed: int) -> list[bytes]:
        units = units_from_inventory(load_inventory(SAMPLE_INVENTORY), 20, random.Random(seed))
        publisher = ListPublisher()
        Simulator(units, publisher, seed=seed, duration_s=120, now_ms=lambda: NOW_MS).run(realtime=False)
        return [p for _, p, _ in publisher.messages]

    assert messages(1) == messages(1)
    assert messages(1) != messages(2)


def test_accelerated_time_ends_at_now_and_stays_inside_the_backfill_window() -> None:
    sim = Simulator([unit()], ListPublisher(), duration_s=60, speed=600, now_ms=lambda: NOW_MS)
    assert sim.sim_end_ms == NOW_MS + 60_000
    assert sim.sim_end_ms - sim.sim_start_ms == 600 * 60_000
    with pytest.raises(ValueError, match="backfill"):
        Simulator([unit()], ListPublisher(), duration_s=3600, speed=1000, now_ms=lambda: NOW_MS)
