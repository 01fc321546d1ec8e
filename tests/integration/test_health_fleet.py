"""The health engine on a real fleet's awkward cases, against the real InfluxDB (and broker where it matters).

Each test states its ground truth up front (the simulator's fault records, the inventory's commissioning
time, the readings it stored) and checks what the engine stored against it:

- DOCS plants judged on their own measurements (one plant per DOCS fault kind, through broker + ingester);
- a unit commissioned mid-range (RFC 3339 timestamp), a bare date at local midnight of its province,
  a unit that never connected, a silent unit due for service;
- a backlog arriving while the engine runs: no transition that never happened;
- a write failure (through the fault proxy): the next cycle writes what was lost;
- a fault inside a late upload: notified once, as history, on MQTT and at a webhook; not after a restart.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from core.errors import SinkError
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from fleetsim.faults import DOCS_KINDS, UnitState, healthy_reading
from fleetsim.simulator import FleetPublisher, Simulator, units_from_inventory
from health.engine import HealthEngine
from health.rules import availability
from health.status import stored_status
from health.uptime import uptime_rows
from ingest.decode import Decoder, Inbound
from store.lineproto import LineBuilder
from store.writer import InfluxSink, V1Transport, make_transport
from tests.integration.conftest import alert_capture, wait_until_stored
from tests.integration.test_faults import FaultProxy

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from devices.inventory import Unit
    from store.reader import InfluxQL

pytestmark = pytest.mark.integration

MINUTE = 60_000
DOCS_REASON = {
    "product_flow_loss": "product_flow_low",
    "product_pressure_loss": "product_pressure_low",
    "compressor_overheat": "compressor_overheating",
    "wet_air": "dew_point_high",
}


def _store(sink: InfluxSink, unit: Unit, times: Iterable[int], **override: Any) -> int:
    """Readings of a healthy simulated unit at ``times`` (with ``override``), stored as the ingester does."""
    state = UnitState(unit.unit_id, unit.kind, unit.spec, purity_base=93.5, run_hours=100.0)
    rng = random.Random(unit.unit_id)
    builder, decoder = LineBuilder(), Decoder(check_time=False)
    lines = []
    for t in times:
        reading = {**healthy_reading(state, t, rng, unit.spec.report_interval_s), **override}
        payload = json.dumps(reading).encode()
        out = decoder.decode(Inbound(f"oxygen/{unit.kind}/{unit.unit_id}/telemetry", payload, 0))
        assert not out.rejections, out.rejections
        lines += [builder.telemetry(r) for r in out.readings]
    assert sink.write(lines).rejected == {}
    return len(lines)


def _late_marker(sink: InfluxSink, unit: Unit, from_ms: int, to_ms: int, count: int, at_ms: int) -> None:
    """The ingester's late_data marker for an upload received at ``at_ms``."""
    sink.write([LineBuilder().late_data(unit.kind, unit.unit_id, from_ms, to_ms, count, at_ms * 1_000_000)])


def _inventory(tmp_path: Path, units: Iterable[Unit]) -> Path:
    path = tmp_path / "inventory.csv"
    path.write_text(write_inventory(units))
    return path


def _events(influx: InfluxQL, unit_id: str, start: int, end: int) -> list[dict[str, Any]]:
    return influx.rows(
        f"SELECT * FROM unit_event WHERE unit_id = '{unit_id}' AND time >= {start}ms AND time < {end}ms"
    )


def test_docs_plants_are_judged_on_their_own_measurements(
    start_ingester, influx, prefix, settings_for, tmp_path: Path, wait_for
) -> None:
    """Four DOCS plants, one fault kind each (purity, delivered flow and power stay fine): each is caught."""
    rng = random.Random(7)
    inventory = load_inventory(SAMPLE_INVENTORY)
    units = [u for u in units_from_inventory(inventory, 5, rng) if u.kind == "docs"][:4]
    assert len(units) == 4
    path = _inventory(tmp_path, (inventory.units[u.unit_id] for u in units))
    start_ingester(inventory_file=path)
    settings = settings_for("docs-pub")
    publisher = FleetPublisher(settings.mqtt.host, settings.mqtt.port)
    sim = Simulator(
        units,
        publisher,
        seed=7,
        duration_s=12,
        speed=600,
        fault_share=1.0,
        fault_kinds=DOCS_KINDS,
        malformed_share=0.0,
        prefix=prefix,
    )
    summary = sim.run(threading.Event())
    publisher.close()
    wait_until_stored(influx, summary.readings_published)
    faults = {f.unit_id: f.record() for f in sim.faults}
    assert {f["fault"] for f in faults.values()} == {k.value for k in DOCS_KINDS}
    start = sim.sim_start_ms - sim.sim_start_ms % MINUTE + MINUTE
    end = sim.sim_end_ms - sim.sim_end_ms % MINUTE
    sink = InfluxSink(make_transport(settings.influx))
    engine = HealthEngine(influx, sink, path)
    engine.evaluate_range(start, end)
    rows = {r["unit_id"]: r for r in uptime_rows(influx, start, end)}
    for unit in units:
        fault = faults[unit.unit_id]
        # A plant whose first reading came after `start` (its reporting phase crossed the minute) has one
        # real transition more, its first contact: not the fault's end.
        events = [e for e in _events(influx, unit.unit_id, start, end) if e["from"] != "never_connected"]
        raised = [e for e in events if e["to"] == "underperforming"]
        assert raised and raised[0]["reason"] == DOCS_REASON[fault["fault"]], (fault, events)
        assert abs(raised[0]["time"] - fault["start_ms"]) <= unit.spec.report_interval_s * 1000 + 1000
        cleared = [e for e in events if e["to"] == "in_spec"]
        assert (
            cleared and abs(cleared[0]["time"] - fault["end_ms"]) <= unit.spec.report_interval_s * 1000 + 1000
        )
        bad = (min(fault["end_ms"], end) - max(fault["start_ms"], start)) / 1000
        expected = {"in_spec": (end - start) / 1000 - bad, "underperforming": bad}
        measured = {s: float(rows[unit.unit_id][s] or 0) for s in ("in_spec", "underperforming", "no_data")}
        assert availability(measured) == pytest.approx(availability(expected), abs=0.005), (fault, measured)
    sink.close()


def test_commissioning_never_connected_and_silence(influx, settings_for, tmp_path: Path) -> None:
    """Nothing booked before commissioning (a timestamp, or a bare date at local midnight of the province);
    a unit that never reported is never_connected, not no_data; a silent unit keeps its maintenance flag
    and its last reading."""
    now = time.time_ns() // 1_000_000
    # The latest midnight in Papua (WIT, UTC+9) at least an hour ago: the range is the two hours around it.
    wit = timedelta(hours=9)
    local = datetime.fromtimestamp((now - 3600_000) / 1000, tz=UTC) + wit
    midnight = int((local.replace(hour=0, minute=0, second=0, microsecond=0) - wit).timestamp() * 1000)
    start, end = midnight - 60 * MINUTE, midnight + 60 * MINUTE
    sample = load_inventory(SAMPLE_INVENTORY).units
    base = sample["OC-JKT-00001"]
    day = (datetime.fromtimestamp(midnight / 1000, tz=UTC) + wit).date()
    mid = datetime.fromtimestamp((start + 30 * MINUTE) / 1000, tz=UTC).astimezone(
        timezone(timedelta(hours=8))
    )
    units = {
        # commissioned 30 minutes into the range, written as an RFC 3339 timestamp at WITA
        "late": base.__class__(**{**_fields(base), "unit_id": "T-LATE", "commissioned": mid}),
        # commissioned "today" in Papua: local midnight there, two hours before midnight in Jakarta
        "papua": base.__class__(
            **{**_fields(base), "unit_id": "T-PAPUA", "province": "Papua", "commissioned": day}
        ),
        "jakarta": base.__class__(**{**_fields(base), "unit_id": "T-JKT", "commissioned": day}),
        "never": base.__class__(**{**_fields(base), "unit_id": "T-NEVER"}),
        "silent": base.__class__(**{**_fields(base), "unit_id": "T-SILENT", "last_service_run_hours": 0.0}),
    }
    path = _inventory(tmp_path, units.values())
    reloaded = load_inventory(path).units
    assert reloaded["T-LATE"].commissioned_ms == start + 30 * MINUTE
    assert reloaded["T-PAPUA"].commissioned_ms == midnight
    assert reloaded["T-JKT"].commissioned_ms == midnight + 2 * 3600_000
    sink = InfluxSink(make_transport(settings_for("comm").influx))
    every = range(start - 30 * MINUTE, end, 10_000)
    for key in ("late", "papua", "jakarta"):
        _store(sink, units[key], every)  # readings before commissioning too (factory tests)
    last_silent = start + 20 * MINUTE - 10_000
    _store(sink, units["silent"], range(start - 30 * MINUTE, last_silent + 1, 10_000), run_hours=12_000.0)
    engine = HealthEngine(influx, sink, path)
    engine.evaluate_range(start, end)

    def first_minute(unit_id: str) -> int | None:
        rows = influx.rows(f"SELECT first(state) FROM unit_state WHERE unit_id = '{unit_id}'")
        return rows[0]["time"] if rows else None

    assert first_minute("T-LATE") == start + 30 * MINUTE
    assert first_minute("T-PAPUA") == midnight
    assert first_minute("T-JKT") is None  # its midnight is after the range
    rows = {r["unit_id"]: r for r in uptime_rows(influx, start, end)}
    assert rows["T-LATE"]["in_spec"] == pytest.approx(90 * 60, abs=1)  # from commissioning to the end
    assert not rows["T-LATE"]["no_data"]
    assert rows["T-NEVER"]["never_connected"] == pytest.approx(120 * 60, abs=1)
    assert not rows["T-NEVER"]["no_data"]
    assert availability({s: rows["T-NEVER"][s] or 0.0 for s in ("in_spec", "no_data")}) is None
    assert _events(influx, "T-NEVER", start, end) == []
    assert _events(influx, "T-LATE", start, end) == []  # commissioning is not a transition
    # Silence: no_data from its next due report on, with maintenance still due on every silent minute.
    silent = influx.rows(
        f"SELECT maintenance_due, state FROM unit_state WHERE unit_id = 'T-SILENT' AND time >= {last_silent + 2 * MINUTE}ms"
    )
    assert silent and all(r["state"] == "no_data" and r["maintenance_due"] for r in silent)
    # A live cycle after the range: status (as stored) keeps the last reading and the flag.
    engine.clock = lambda: (end + 5 * MINUTE) / 1000
    engine.cycle()
    status = stored_status(influx, engine.inventory, end + 5 * MINUTE)
    assert status["T-SILENT"].last_reading_ms == last_silent
    assert status["T-SILENT"].maintenance_due and status["T-SILENT"].condition.state == "no_data"
    assert status["T-NEVER"].condition.state == "never_connected"
    assert status["T-NEVER"].last_reading_ms is None
    sink.close()


def _fields(unit: Unit) -> dict[str, Any]:
    return {name: getattr(unit, name) for name in unit.__dataclass_fields__}


def _fleet(tmp_path: Path, n: int) -> tuple[Path, list[Unit]]:
    sample = load_inventory(SAMPLE_INVENTORY).units
    units = [sample[f"OC-JKT-{i:05d}"] for i in range(1, n + 1)]
    return _inventory(tmp_path, units), units


def test_a_backlog_arriving_while_the_engine_runs_makes_no_phantom_transitions(
    influx, settings_for, tmp_path: Path
) -> None:
    """The ingester was away 25 minutes; the engine, running, saw silence; then the backlog arrives.

    Ground truth: every unit was in spec all along, so no unit_event at all may remain (neither the
    in_spec -> no_data seen live nor a no_data -> in_spec at the window's start), and no no_data time.
    """
    path, units = _fleet(tmp_path, 3)
    sink = InfluxSink(make_transport(settings_for("backlog").influx))
    now = time.time_ns() // 1_000_000
    t0 = now - 2 * 3600_000
    t0 -= t0 % MINUTE
    for unit in units:
        _store(sink, unit, range(t0 - 30 * MINUTE, t0, 10_000))
    clock = [t0 / 1000]
    engine = HealthEngine(influx, sink, path, clock=lambda: clock[0])
    for t in range(t0, t0 + 26 * MINUTE, MINUTE):  # the engine runs through the outage
        clock[0] = t / 1000
        engine.cycle()
    assert all(s.condition.state == "no_data" for s in engine.last_status.values())
    assert all(_events(influx, u.unit_id, t0, t0 + 26 * MINUTE) for u in units)  # seen live
    backlog = range(t0, t0 + 26 * MINUTE, 10_000)
    for unit in units:
        _store(sink, unit, backlog)
        _late_marker(sink, unit, backlog[0], backlog[-1], len(backlog), t0 + 26 * MINUTE + 5_000)
    clock[0] = (t0 + 26 * MINUTE + 15_000) / 1000
    engine.cycle()
    assert all(s.condition.state == "in_spec" for s in engine.last_status.values())
    for unit in units:
        assert _events(influx, unit.unit_id, t0 - 30 * MINUTE, t0 + 27 * MINUTE) == [], unit.unit_id
    rows = uptime_rows(influx, t0 - 15 * MINUTE, t0 + 26 * MINUTE)
    assert len(rows) == 3 and all(not r["no_data"] for r in rows), rows
    sink.close()


def test_a_failed_write_is_written_by_the_next_cycle(influx, settings_for, tmp_path: Path) -> None:
    """InfluxDB answers 503 to one cycle's write (fault proxy): the next cycle writes everything it lost."""
    path, units = _fleet(tmp_path, 3)
    direct = InfluxSink(make_transport(settings_for("direct").influx))
    now = time.time_ns() // 1_000_000
    now -= now % MINUTE
    for unit in units:
        _store(direct, unit, range(now - 20 * MINUTE, now, 10_000))
    proxy = FaultProxy(influx.url)
    sink = InfluxSink(V1Transport(proxy.url, influx.database))
    try:
        clock = [now / 1000]
        engine = HealthEngine(influx, sink, path, clock=lambda: clock[0])
        proxy.mode = "503"
        with pytest.raises(SinkError):
            engine.cycle()
        assert influx.rows("SELECT count(state) FROM unit_state") == []
        proxy.mode = "pass"
        clock[0] += 15
        engine.cycle()
        while engine.booking_older:  # a first start: the window's older minutes, as `run` books them
            engine.book_older()
    finally:
        proxy.close()
    # 15 complete minutes of window per unit, every one of them written, and the live status too.
    counts = influx.rows("SELECT count(state) FROM unit_state GROUP BY unit_id")
    assert {r["unit_id"]: r["count"] for r in counts} == {u.unit_id: 15 for u in units}
    assert set(stored_status(influx, engine.inventory, now + 15_000)) == {u.unit_id for u in units}
    direct.close()
    sink.close()


def test_a_fault_inside_a_late_upload_is_notified_once_as_history(
    influx, settings_for, prefix, tmp_path: Path, wait_for
) -> None:
    """A unit offline for an hour uploads its buffer: 15 minutes of it below 82 % purity.

    One `history` alert (MQTT and webhook) with the fault's start, end and reason; none on the next
    cycles, and none from a restarted engine that reads the same upload again.
    """
    path, units = _fleet(tmp_path, 1)
    unit = units[0]
    settings = settings_for("history")
    sink = InfluxSink(make_transport(settings.influx))
    now = time.time_ns() // 1_000_000
    t0 = now - 3 * 3600_000
    t0 -= t0 % MINUTE
    _store(sink, unit, range(t0 - 30 * MINUTE, t0, 10_000))
    with alert_capture(settings, prefix) as capture:
        clock = [t0 / 1000]

        def engine() -> HealthEngine:
            return HealthEngine(
                influx,
                sink,
                path,
                clock=lambda: clock[0],
                on_change=capture.alerter.notify,
                on_history=capture.alerter.history,
            )

        first = engine()
        told: list[dict[str, tuple[int, int]]] = []  # what the daily rollups hear of the late work
        first.on_cycle = lambda _now, spans: told.append(dict(spans))
        for t in range(t0, t0 + 60 * MINUTE + 1, 5 * MINUTE):  # offline: the engine sees silence
            clock[0] = t / 1000
            first.cycle()
        fault_start, fault_end = t0 + 20 * MINUTE, t0 + 35 * MINUTE
        upload = range(t0, t0 + 60 * MINUTE, 10_000)
        _store(sink, unit, [t for t in upload if not fault_start <= t < fault_end])
        _store(sink, unit, [t for t in upload if fault_start <= t < fault_end], purity_pct=79.0)
        _late_marker(sink, unit, upload[0], upload[-1], len(upload), t0 + 60 * MINUTE + 5_000)
        for t in (t0 + 60 * MINUTE + 15_000, t0 + 61 * MINUTE):
            clock[0] = t / 1000
            first.cycle()
        assert {unit.unit_id: (upload[0], upload[-1])} in told  # the rollups redo the days it changed
        clock[0] = (t0 + 62 * MINUTE) / 1000
        engine().cycle()  # a restart reads the same late upload again
        wait_for(capture.settled, timeout=10)
        history = [
            {k: v for k, v in a.items() if k != "topic"} for a in capture.received if a["event"] == "history"
        ]
        assert [a for a in capture.posts if a["event"] == "history"] == history
        assert len(history) == 1, capture.received
        (alert,) = history
        assert (alert["unit_id"], alert["state"], alert["reason"]) == (
            unit.unit_id,
            "underperforming",
            "purity_critical",
        )
        assert abs(datetime.fromisoformat(alert["start"]).timestamp() * 1000 - fault_start) <= 10_000
        assert abs(datetime.fromisoformat(alert["end"]).timestamp() * 1000 - fault_end) <= 10_000
    sink.close()


class _Recording:
    """The real InfluxQL client, noting every statement it sends (what a restarted engine asks InfluxDB)."""

    def __init__(self, reader: InfluxQL) -> None:
        self.reader = reader
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def rows(self, q: str, **kw: Any) -> list[dict[str, Any]]:
        self.sent.append(q)
        return self.reader.rows(q, **kw)

    def raw(self, q: str, **kw: Any) -> dict[str, Any]:
        self.sent.append(q)
        return self.reader.raw(q, **kw)


def test_a_restarted_engine_resumes_from_what_it_stored(influx, settings_for, tmp_path: Path) -> None:
    """A new engine over results an earlier one stored: the same minutes and events, nothing re-booked.

    Ground truth: two units in spec all along (with three hours of older history), one below 90 % purity
    from t0 + 10 min. The restarted engine must not scan telemetry history (every unit has a stored
    status), must read raw telemetry only for the last few minutes, must keep each unit's "since", and
    must neither add nor lose a transition.
    """
    path, units = _fleet(tmp_path, 3)
    sink = InfluxSink(make_transport(settings_for("restart").influx))
    now = time.time_ns() // 1_000_000
    t0 = now - 2 * 3600_000
    t0 -= t0 % MINUTE
    for unit in units[:2]:
        _store(sink, unit, range(t0 - 180 * MINUTE, t0 + 30 * MINUTE, 10_000))
    faulty = units[2]
    _store(sink, faulty, range(t0 - 180 * MINUTE, t0 + 10 * MINUTE, 10_000))
    _store(sink, faulty, range(t0 + 10 * MINUTE, t0 + 30 * MINUTE, 10_000), purity_pct=86.0)
    clock = [t0 / 1000]
    engine = HealthEngine(influx, sink, path, clock=lambda: clock[0])
    stop = t0 + 16 * MINUTE
    for t in range(t0, stop, 30_000):
        clock[0] = t / 1000
        engine.cycle()
    before_status = dict(engine.last_status)
    assert before_status[faulty.unit_id].condition.state == "underperforming"
    window = f"time >= {t0 - 30 * MINUTE}ms AND time < {stop - MINUTE}ms"  # every minute engine one wrote
    stored_before = influx.rows(f"SELECT * FROM unit_state WHERE {window}")
    events_before = influx.rows(f"SELECT * FROM unit_event WHERE time >= {t0 - 30 * MINUTE}ms")

    recording = _Recording(influx)
    restarted = HealthEngine(recording, sink, path, clock=lambda: clock[0])  # type: ignore[arg-type]
    clock[0] = (stop + 15_000) / 1000
    restarted.cycle()
    telemetry = [q for q in recording.sent if re.search(r"FROM telemetry\b(?!_)", q)]
    assert not any("first(" in q or "last(" in q for q in telemetry), telemetry  # no history scan
    earliest = min(int(q.split("time >= ")[1].split("ms")[0]) for q in telemetry)
    assert earliest >= stop - 8 * MINUTE, (stop - earliest) / MINUTE  # only what may still change
    for unit in units:
        status = restarted.last_status[unit.unit_id]
        assert status.condition == before_status[unit.unit_id].condition
        assert status.since_ms == before_status[unit.unit_id].since_ms, unit.unit_id
        assert status.last_reading_ms is not None and status.last_reading_ms >= stop - 10_000
    assert influx.rows(f"SELECT * FROM unit_state WHERE {window}") == stored_before
    assert influx.rows(f"SELECT * FROM unit_event WHERE time >= {t0 - 30 * MINUTE}ms") == events_before

    for t in range(stop + 45_000, t0 + 25 * MINUTE, 30_000):  # and it goes on as the first one would
        clock[0] = t / 1000
        restarted.cycle()
    for unit in units[:2]:
        assert _events(influx, unit.unit_id, t0 - 30 * MINUTE, t0 + 30 * MINUTE) == [], unit.unit_id
    events = _events(influx, faulty.unit_id, t0 - 30 * MINUTE, t0 + 30 * MINUTE)
    assert [(e["from"], e["to"]) for e in events] == [("in_spec", "underperforming")], events
    assert abs(events[0]["time"] - (t0 + 10 * MINUTE)) <= 10_000
    rows = {r["unit_id"]: r for r in uptime_rows(influx, t0, t0 + 24 * MINUTE)}
    assert rows[faulty.unit_id]["underperforming"] == pytest.approx(14 * 60, abs=10)
    assert all(not r["no_data"] for r in rows.values()), rows
    sink.close()


def test_a_first_start_ever_answers_within_a_cycle_and_books_the_older_minutes_after(
    influx, settings_for, tmp_path: Path
) -> None:
    """Nothing stored yet: the first cycle reads only from the resume point; the rest is booked after.

    Ground truth (the clock is minute-aligned, so the resume point is ``now - 5 min``): unit 1 in spec
    all along; unit 2 below 90 % purity from ``now - 12 min`` (inside the older minutes); unit 3 from
    ``now - 6 min`` (a fault spanning the resume point: booked from its start); unit 4 from ``now - 3 min``
    (after it). The first cycle must know every current state without reading the older minutes or
    scanning history; after the following cycles every minute of the window is booked, each fault from
    its start, one transition per fault and no other (no phantom at the window's start or at the
    resume point), no no_data, and no alert at all (nothing changed while the engine ran).
    """
    path, units = _fleet(tmp_path, 4)
    sink = InfluxSink(make_transport(settings_for("first-start").influx))
    now = time.time_ns() // 1_000_000 - 10 * MINUTE
    now -= now % MINUTE
    began = {units[1].unit_id: now - 12 * MINUTE, units[2].unit_id: now - 6 * MINUTE}
    began[units[3].unit_id] = now - 3 * MINUTE
    for unit in units:
        fault = began.get(unit.unit_id, now + 10 * MINUTE)
        _store(sink, unit, range(now - 20 * MINUTE, fault, 10_000))
        _store(sink, unit, range(fault, now + 10 * MINUTE, 10_000), purity_pct=86.0)
    clock = [now / 1000]
    alerts: list[tuple[str, str]] = []
    recording = _Recording(influx)
    engine = HealthEngine(
        recording,  # type: ignore[arg-type]
        sink,
        path,
        clock=lambda: clock[0],
        on_change=lambda status, before, _at: alerts.append((status.unit.unit_id, before.state)),
    )
    engine.cycle()
    for unit in units:
        status = engine.last_status[unit.unit_id]
        expected = "underperforming" if unit.unit_id in began else "in_spec"
        assert status.condition.state == expected, unit.unit_id
    telemetry = [q for q in recording.sent if re.search(r"FROM telemetry\b(?!_)", q)]
    assert not any("first(" in q or "last(" in q for q in telemetry), telemetry  # no history scan
    earliest = min(int(q.split("time >= ")[1].split("ms")[0]) for q in telemetry)
    assert earliest >= now - 7 * MINUTE, (now - earliest) / MINUTE  # only from the resume point
    assert engine.booking_older

    for t in range(now + 15_000, now + 2 * MINUTE, 15_000):  # as `run` goes on: a cycle, then a slice
        if engine.booking_older:
            engine.book_older()
        clock[0] = t / 1000
        engine.cycle()
    assert not engine.booking_older
    assert alerts == []
    end = now + MINUTE
    counts = influx.rows(
        f"SELECT count(state) FROM unit_state WHERE time >= {now - 15 * MINUTE}ms AND time < {end}ms "
        "GROUP BY unit_id"
    )
    assert {r["unit_id"]: r["count"] for r in counts} == {u.unit_id: 16 for u in units}
    assert _events(influx, units[0].unit_id, now - 30 * MINUTE, end) == []
    for unit_id, at in began.items():
        events = _events(influx, unit_id, now - 30 * MINUTE, end)
        assert [(e["from"], e["to"]) for e in events] == [("in_spec", "underperforming")], (unit_id, events)
        assert abs(events[0]["time"] - at) <= 10_000, (unit_id, (events[0]["time"] - at) / 1000)
        assert engine.last_status[unit_id].since_ms == events[0]["time"]
    rows = {r["unit_id"]: r for r in uptime_rows(influx, now - 15 * MINUTE, end)}
    for unit in units:
        fault = began.get(unit.unit_id, end)
        assert rows[unit.unit_id]["underperforming"] == pytest.approx((end - fault) / 1000, abs=10)
        assert not rows[unit.unit_id]["no_data"], unit.unit_id
    sink.close()
