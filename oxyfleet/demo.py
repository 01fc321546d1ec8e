"""``oxyfleet demo``: the ingester, a simulated fleet with faults, and a live per-unit table from InfluxDB.

The table is the proof that the whole path works: every number in it was published over MQTT, validated,
enriched from the inventory, written to InfluxDB and queried back with InfluxQL, the way dashboards read
it. The last column is the health engine's verdict on each unit (it runs alongside, on the demo fleet's
own inventory, with a 30 s sustain window instead of 120 s so that faults show within a minute).
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.mqtt import end_session
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from fleetsim.faults import FaultKind
from fleetsim.simulator import FleetPublisher, Simulator, units_from_inventory
from health.model import UnitStatus, state_counts
from health.service import build_engine
from ingest.service import build_ingester
from store.lineproto import KEY_WINDOW_NS
from store.reader import InfluxQL
from store.schema import Measurement, RejectedField, Tag, TelemetryField

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["run_demo"]

# Clock skew would move readings before the demo's start and out of its count; everything else shows.
DEMO_FAULTS = tuple(k for k in FaultKind if k is not FaultKind.CLOCK_SKEW)
WINDOW_S = 300.0
DEMO_SUSTAIN_S = 30.0
DEMO_CYCLE_S = 5.0
DEMO_SESSION_EXPIRY_S = 60


def _table(reader: InfluxQL, since_ns: int, sim_since_ms: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    # Telemetry carries device (simulated) time; rejections carry receive time. Ints: nothing to inject.
    where = f"time >= {int(sim_since_ms)}ms"
    units = reader.rows(
        f"SELECT count({TelemetryField.SEQ}) AS points, last(purity_pct) AS purity, last(flow_lpm) AS flow, "  # noqa: S608
        "last(setpoint_lpm) AS setpoint, last(running) AS running, last(alarms) AS alarms "
        f"FROM {Measurement.TELEMETRY} WHERE {where} GROUP BY {Tag.UNIT_ID}, {Tag.HOSPITAL}"
    )
    rejected = {
        row["reason"]: int(row["n"])
        for row in reader.rows(
            f"SELECT count({RejectedField.PAYLOAD_BYTES}) AS n FROM {Measurement.REJECTED} "  # noqa: S608
            # Rejections are stamped within the minute they arrived (keyed for redelivery, issue 19), so
            # the demo counts from the start of the minute it began in.
            f"WHERE time >= {int(since_ns - since_ns % KEY_WINDOW_NS)} GROUP BY {Tag.REASON}"
        )
    }
    return sorted(units, key=lambda r: r["unit_id"]), rejected


def _health(status: UnitStatus | None) -> str:
    if status is None:
        return "(first health cycle pending)"
    cond = status.condition
    reason = f": {cond.reason.replace('_', ' ')}" if cond.reason and cond.reason != cond.state else ""
    text = cond.state.replace("_", " ") + reason
    return text + (", maintenance due" if status.maintenance_due else "")


def _render(
    units: list[dict[str, Any]],
    rejected: dict[str, int],
    published: int,
    elapsed: float,
    health: dict[str, UnitStatus],
) -> str:
    wide = max([24, *(len(row["hospital"]) for row in units)])  # names are never cut
    lines = [
        f"oxyfleet demo - {elapsed:5.0f} s - published {published} messages; stored in InfluxDB:",
        f"{'unit':<16} {'hospital':<{wide}} {'points':>6} {'purity %':>8} {'flow L/min':>10}  health engine",
    ]
    for row in units:
        purity = f"{row['purity']:.1f}" if row.get("purity") is not None else "-"
        flow = f"{row['flow']:.1f}" if row.get("flow") is not None else "-"
        lines.append(
            f"{row['unit_id']:<16} {row['hospital']:<{wide}} {row['points']:>6} {purity:>8} {flow:>10}  "
            f"{_health(health.get(row['unit_id']))}"
        )
    total = sum(int(r["points"]) for r in units)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) or "none"
    lines.append(f"total points {total}; rejected messages by reason: {shown}")
    if health:
        counts = ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in sorted(state_counts(health.values()).items())
        )
        lines.append(f"health engine: {counts}")
    return "\n".join(lines)


def run_demo(  # noqa: PLR0915 - the demo wires everything together, once
    settings: Settings,
    stop: threading.Event,
    *,
    units: int,
    duration_s: float | None,
    refresh_s: float,
    seed: int,
    speed: float = 1.0,
) -> bool:
    """Run until ``stop`` or ``duration_s``; True when everything published was stored or rejected."""
    from core.logs import configure_logging  # noqa: PLC0415

    # The table is the demo's output (rejections included); the ingester's warnings about the
    # deliberately malformed messages would only interleave with it. Errors still show.
    configure_logging("error", settings.log_format)
    # The demo's session outlives a reconnect (60 s) but not the demo: nothing left on the broker for a
    # week under a client id nobody will use again (the session is also ended explicitly at the end).
    mqtt = settings.mqtt.model_copy(
        update={"client_id": f"{settings.mqtt.client_id}-demo", "session_expiry_s": DEMO_SESSION_EXPIRY_S}
    )
    inventory_path = settings.inventory_file or SAMPLE_INVENTORY
    influx = settings.influx
    if influx.api == "v1":
        # A database of its own, emptied at each start, so the closing count proves this run alone.
        influx = influx.model_copy(update={"database": f"{influx.database}_demo"})
        fresh = InfluxQL.from_settings(influx)
        fresh.execute(f'DROP DATABASE "{influx.database}"')
        fresh.close()
    # A spool of its own, so the demo can run next to an `oxyfleet run` using the configured one.
    spool = settings.spool.model_copy(update={"dir": settings.spool.dir / "demo"})
    settings = settings.model_copy(
        update={"mqtt": mqtt, "inventory_file": inventory_path, "influx": influx, "spool": spool}
    )
    click.echo(f"oxyfleet demo: writing to InfluxDB {influx.url}, database {influx.database}")
    ingester = build_ingester(settings, serve=False)
    ingest_stop = threading.Event()
    ingest_thread = threading.Thread(target=ingester.run, args=(ingest_stop,), name="ingest", daemon=True)
    ingest_thread.start()
    if not ingester.source.subscribed.wait(15):
        click.echo(
            "oxyfleet demo: the ingester did not subscribe within 15 s; is the broker running?", err=True
        )
        ingest_stop.set()
        return False
    since_ns = time.time_ns()
    rng = random.Random(seed)
    fleet = units_from_inventory(load_inventory(inventory_path), units, rng)
    publisher = FleetPublisher(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password_value(),
        tls=mqtt.tls,
        ca_file=str(mqtt.ca_file) if mqtt.ca_file else None,
    )
    # The health engine classifies exactly the demo fleet: its own inventory file holds just those units.
    workdir = tempfile.TemporaryDirectory(prefix="oxyfleet-demo-")
    demo_inventory = Path(workdir.name) / "inventory.csv"
    picked = {u.unit_id for u in fleet}
    demo_inventory.write_text(
        write_inventory(u for u in load_inventory(inventory_path).units.values() if u.unit_id in picked)
    )
    demo_health = settings.health.model_copy(
        update={
            "sustain_s": DEMO_SUSTAIN_S,
            "lookback_s": WINDOW_S,
            "cycle_s": DEMO_CYCLE_S,
            "alerts_mqtt": False,
        }
    )
    engine = build_engine(
        settings.model_copy(update={"inventory_file": demo_inventory, "health": demo_health}), writing=True
    )
    health_stop = threading.Event()
    health_thread = threading.Thread(target=engine.run, args=(health_stop,), name="health", daemon=True)
    health_thread.start()
    sims: list[Simulator] = []
    sim_stop = threading.Event()
    started = time.monotonic()
    end = None if duration_s is None else started + duration_s

    def simulate() -> None:
        window = 0
        while not sim_stop.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0.5:
                return
            for unit in fleet:
                unit.faults.clear()
            sim = Simulator(
                fleet,
                publisher,
                seed=seed + window,
                duration_s=min(WINDOW_S, left or WINDOW_S),
                speed=speed,
                fault_share=0.3,
                fault_kinds=DEMO_FAULTS,
                malformed_share=0.02,
                prefix=mqtt.topic_prefix,
            )
            sims.append(sim)
            sim.run(sim_stop)
            window += 1

    sim_thread = threading.Thread(target=simulate, name="simulator", daemon=True)
    sim_thread.start()
    reader = InfluxQL.from_settings(settings.influx)
    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while not stop.wait(min(refresh_s, max(0.0, (end or 1e18) - time.monotonic()))):
            rows, rejected = _table(reader, since_ns, min((s.sim_start_ms for s in sims), default=0))
            status = engine.last_status
            click.echo(
                clear
                + _render(rows, rejected, publisher.published, time.monotonic() - started, status)
                + "\n"
            )
            if (end is not None and time.monotonic() >= end) or not ingest_thread.is_alive():
                break
    finally:
        sim_stop.set()
        sim_thread.join(10)
        publisher.close()
        time.sleep(settings.buffer.batch_age_s + 1.0)  # let the last batch land before the final count
        ingest_stop.set()
        ingest_thread.join(30)
        end_session(mqtt, mqtt.client_id)
        health_stop.set()
        health_thread.join(30)
        workdir.cleanup()
    rows, rejected = _table(reader, since_ns, min((s.sim_start_ms for s in sims), default=0))
    click.echo(_render(rows, rejected, publisher.published, time.monotonic() - started, engine.last_status))
    readings = sum(s.summary.readings_published for s in sims)
    expected_rejected = sum(sum(s.summary.rejections_expected.values()) for s in sims)
    stored = sum(int(r["points"]) for r in rows)
    ok = stored == readings and sum(rejected.values()) == expected_rejected
    verdict = (
        "every published reading is stored and every malformed message rejected with its reason"
        if ok
        else f"MISMATCH: {readings} readings published, {stored} stored; "
        f"{expected_rejected} rejections expected, {sum(rejected.values())} stored"
    )
    click.echo(f"oxyfleet demo: {verdict}.")
    return ok
