"""Health engine scale benchmark: one cycle for N units (default 20,000) on the local InfluxDB.

Method: a generated inventory of N units; telemetry for the trailing window (15 min by default, a reading
every 10 s per unit, ~5 % of the units underperforming) is written straight to a fresh database; then
engine cycles run exactly as `oxyfleet health` runs them, and each is timed: query, classification,
per-minute accounting, writing unit_state/unit_event. Nothing is written to the repo.

Usage: scripts/bench-health [--units 20000] [--cycles 3] [--lookback 900]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from devices.catalog import load_catalog
from devices.inventory import Unit, write_inventory
from health.engine import HealthEngine
from store.reader import InfluxQL
from store.schema import Measurement
from store.writer import InfluxSink, V1Transport

INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"


def fill(sink: InfluxSink, units: list[Unit], start: int, end: int) -> int:
    """Readings every 10 s per unit in [start, end); one unit in 20 at 85 % purity."""
    lines: list[str] = []
    written = 0
    for i, u in enumerate(units):
        purity = 85.0 if i % 20 == 0 else 93.5
        tags = (
            f"{Measurement.TELEMETRY},hospital={u.hospital.replace(' ', chr(92) + ' ')},kind=concentrator,model={u.model},"
            f"province={u.province.replace(' ', chr(92) + ' ')},unit_id={u.unit_id}"
        )
        phase = (i * 7919) % 10_000
        first = start + (phase - start) % 10_000
        lines.extend(
            f"{tags} purity_pct={purity},flow_lpm=5.0,setpoint_lpm=5.0,running=true {t * 1_000_000}"
            for t in range(first, end, 10_000)
        )
        if len(lines) >= 20_000:
            sink.write(lines)
            written += len(lines)
            lines = []
    sink.write(lines)
    return written + len(lines)


def main() -> None:
    """Fill a database, time engine cycles, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--lookback", type=float, default=900.0, help="trailing window, seconds")
    parser.add_argument("--cycle", type=float, default=15.0, help="cycle period, seconds")
    args = parser.parse_args()
    spec = load_catalog()["OC-5-DONOR"]
    units = [
        Unit(
            f"B-{i:06d}",
            "concentrator",
            "OC-5-DONOR",
            f"SN{i}",
            f"Hospital {i // 50:04d}",
            f"Province {i // 2000:02d}",
            "bench",
            date(2021, 8, 1),
            0.0,
            spec,
        )
        for i in range(args.units)
    ]
    db = f"bench_health_{uuid.uuid4().hex[:8]}"
    reader = InfluxQL(INFLUX, db, timeout_s=600)
    reader.execute(f'CREATE DATABASE "{db}"')
    sink = InfluxSink(V1Transport(INFLUX, db, timeout_s=600))
    try:
        now = time.time_ns() // 1_000_000
        began = time.perf_counter()
        written = fill(sink, units, now - int(args.lookback * 1000) - 120_000, now)
        fill_s = time.perf_counter() - began
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inventory.csv"
            path.write_text(write_inventory(units))
            engine = HealthEngine(reader, sink, path, lookback_s=args.lookback)
            timings: list[float] = []
            for i in range(args.cycles):
                if i:  # the fleet keeps reporting between cycles, as it would live
                    time.sleep(max(0.0, args.cycle - timings[-1]))
                    later = time.time_ns() // 1_000_000
                    fill(sink, units, now, later)
                    now = later
                t0 = time.perf_counter()
                evaluation = engine.cycle()
                timings.append(time.perf_counter() - t0)
            # `oxyfleet status` as an operator runs it (its own process, reading the stored status).
            env = {
                **os.environ,
                "OXYFLEET_INFLUX__URL": INFLUX,
                "OXYFLEET_INFLUX__DATABASE": db,
                "OXYFLEET_INVENTORY_FILE": str(path),
            }
            t0 = time.perf_counter()
            shown = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                [str(Path(sys.executable).with_name("oxyfleet")), "status"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            status_s = time.perf_counter() - t0
            status_units = shown.stdout.strip().splitlines()[-1]
        states = evaluation.state_counts()
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        print(
            f"machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; InfluxDB at {INFLUX}"
        )
        print(
            f"filled {written} readings for {args.units} units in {fill_s:.1f} s; lookback {args.lookback:.0f} s"
        )
        print(f"first cycle (cold: the whole window read and written): {timings[0]:.2f} s")
        steady = timings[1:] or timings
        print(
            f"steady cycles: median {statistics.median(steady):.2f} s (min {min(steady):.2f}, max {max(steady):.2f}) "
            f"over {len(steady)}; points written in the last {len(evaluation.lines)}; states {states}"
        )
        print(f"`oxyfleet status` (own process, stored status): {status_s:.2f} s wall, {status_units}")
    finally:
        reader.execute(f'DROP DATABASE "{db}"')


if __name__ == "__main__":
    main()
