"""Benchmark: the monthly report for N units (default 20,000, one donor source), stored as the product stores it.

Method: a generated inventory of N units in hospitals of 50 (400 hospitals at 20,000 units, WIB); the
report's month (2026-10) and the previous one (2026-09) stored as the health service stores completed
days: one ``unit_day`` point per unit and local day, in one series per hospital, with each hospital's day
marker, written with the service's own line builders (:func:`health.rollup.day_lines`,
:func:`health.rollup.marker_lines`) into the long-term retention policy. Every 17th unit spends an hour a
day underperforming, so the worst-first order and the comparison have something to show. (Per-minute
``unit_state`` for a whole month at 20,000 units is 864 million points, about two hours of writing here; a
report of completed days does not read it, except the 40 plotted units' strips, which find none here.)

Then ``oxyfleet report --month 2026-10 --by source`` in its own process, HTML and then CSV, each timed
end to end with its CPU time and InfluxDB's CPU time over the same span. Prints the machine and the load
average; a benchmark, not a timed test.

    .venv/bin/python bench/report_bench.py --units 20000

``--rollup-day N`` measures the other side instead: what making one day's rollup costs. It stores one
local day of per-minute ``unit_state`` and ``telemetry_1m`` for N units (as the engine writes them), then
runs ``oxyfleet health rollup --month 2026-10`` in its own process and times it (wall, its CPU,
InfluxDB's CPU); the cost grows with the units (series) of the day.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil

from devices.catalog import load_catalog
from devices.inventory import Unit, write_inventory
from health.rollup import DayRow, day_lines, local_days, marker_lines
from store.lineproto import line, tag_set
from store.reader import InfluxQL
from store.schema import (
    LONG_POLICY,
    STATES,
    UNIT_TAGS,
    Measurement,
    OxygenField,
    State,
    StateField,
    aggregate_field,
    seconds_field,
)
from store.writer import InfluxSink, V1Transport

INFLUX = os.environ.get(
    "OXYFLEET_TEST_INFLUX_URL", f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
)
ZONE = ZoneInfo("Asia/Jakarta")


def influx_pid() -> int | None:
    """InfluxDB's pid from the services run dir (for its CPU time), when this machine runs it."""
    run_dir = Path(os.environ.get("OXYFLEET_RUN_DIR", ".run"))
    try:
        return int((run_dir / "influxdb.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def fill(sink: InfluxSink, units: list[Unit], months: list[tuple[int, int]]) -> int:
    """One rollup point per unit and local day of the months, plus each hospital's day markers."""
    written = 0
    provinces = {u.hospital: u.province for u in units}
    for year, month in months:
        start = int(datetime(year, month, 1, tzinfo=ZONE).timestamp() * 1000)
        nxt = (year + 1, 1) if month == 12 else (year, month + 1)
        end = int(datetime(*nxt, 1, tzinfo=ZONE).timestamp() * 1000)
        for day in local_days(ZONE, start, end):
            rows = []
            for n, u in enumerate(units):
                bad = 3600.0 if n % 17 == 0 else 0.0
                rows.append(
                    DayRow(
                        u.hospital, u.province, u.unit_id,
                        {State.IN_SPEC: 86400.0 - bad, State.UNDERPERFORMING: bad},
                        due=n % 23 == 0, due_ms=day[1] - 60_000, litres=6900.0, readings=8640,
                    )
                )  # fmt: skip
            counts = dict.fromkeys(provinces, 0)
            for u in units:
                counts[u.hospital] += 1
            lines = day_lines(rows, day, day[1] + 3600_000) + marker_lines(
                provinces, counts, day, day[1] + 3600_000
            )
            for i in range(0, len(lines), 10_000):
                sink.write(lines[i : i + 10_000])
            written += len(lines)
    return written


def fill_minutes(sink: InfluxSink, units: list[Unit], day: tuple[int, int]) -> int:
    """One local day of per-minute unit_state and telemetry_1m per unit, as the health engine writes them."""
    written = 0
    lines: list[str] = []
    for u in units:
        tags = tag_set(
            dict(zip(UNIT_TAGS, (u.hospital, u.kind, u.model, u.province, u.unit_id), strict=True))
        )
        for t in range(day[0], day[1], 60_000):
            state: dict[str, object] = {StateField.STATE: State.IN_SPEC, StateField.MAINTENANCE_DUE: False}
            seconds = {seconds_field(s): 60.0 if s == State.IN_SPEC else 0.0 for s in STATES}
            lines.append(line(Measurement.UNIT_STATE, tags, {**state, **seconds}, t * 1_000_000))
            oxygen = {
                aggregate_field("purity_pct", "mean"): 93.0,
                OxygenField.LITRES: 5.0,
                OxygenField.READINGS: 6,
            }
            lines.append(line(Measurement.TELEMETRY_1M, tags, oxygen, t * 1_000_000))
        if len(lines) >= 20_000:
            sink.write(lines)
            written += len(lines)
            lines = []
    sink.write(lines)
    return written + len(lines)


def timed(
    command: list[str], env: dict[str, str], pid: int | None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``oxyfleet COMMAND`` in its own process: the result, and wall/CPU/InfluxDB CPU/load as text."""
    load = os.getloadavg()
    t0, c0, i0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN), cpu_s(pid)
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "oxyfleet", *command], env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return done, (
        f"{took:.1f} s wall, {cpu:.1f} s CPU (its process), {cpu_s(pid) - i0:.1f} s CPU (InfluxDB); "
        f"exit {done.returncode}; load average before {load}"
    )


def rollup_day(units: list[Unit], db: str, sink: InfluxSink, out_dir: Path) -> None:
    """Store one day of minutes for the units, then time `oxyfleet health rollup` over its month."""
    day = local_days(ZONE, *(int(datetime(2026, 10, d, tzinfo=ZONE).timestamp() * 1000) for d in (15, 16)))[0]
    began = time.perf_counter()
    points = fill_minutes(sink, units, day)
    print(
        f"wrote {points:,} minute points ({len(units):,} units x 1 day) in {time.perf_counter() - began:.1f} s"
    )
    inv = out_dir / "inventory.csv"
    inv.write_text(write_inventory(units))
    env = {**os.environ, "OXYFLEET_INFLUX__URL": INFLUX, "OXYFLEET_INFLUX__DATABASE": db,
           "OXYFLEET_INVENTORY_FILE": str(inv), "OXYFLEET_INFLUX__TIMEOUT_S": "600",
           "OXYFLEET_INFLUX__RAW_RETENTION": "INF"}  # fmt: skip
    done, figures = timed(["health", "rollup", "--month", "2026-10"], env, influx_pid())
    print(f"oxyfleet health rollup --month 2026-10 ({len(units):,} units, one day with minutes): {figures}")
    if done.returncode:
        print(done.stderr[-2000:])


def main() -> None:
    """Fill, then time the report command (HTML, CSV)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the database and the reports (printed)")
    parser.add_argument(
        "--rollup-day",
        type=int,
        default=0,
        metavar="N",
        help="time making one day's rollup for N units instead",
    )
    args = parser.parse_args()
    spec = load_catalog()["OC-5-DONOR"]
    units = [
        Unit(f"R-{i:06d}", "concentrator", "OC-5-DONOR", f"SN{i}", f"Hospital {i // 50:04d}",
             "DKI Jakarta", "donor-bench", date(2021, 8, 1), 0.0, spec)
        for i in range(args.units)
    ]  # fmt: skip
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average {os.getloadavg()}",
        flush=True,
    )
    db = f"bench_report_{uuid.uuid4().hex[:8]}"
    reader = InfluxQL(INFLUX, db, timeout_s=600)
    reader.execute(f'CREATE DATABASE "{db}"')
    reader.execute(f'CREATE RETENTION POLICY "{LONG_POLICY}" ON "{db}" DURATION INF REPLICATION 1')
    sink = InfluxSink(V1Transport(INFLUX, db, timeout_s=600, retention_policy=LONG_POLICY))
    pid = influx_pid()
    out_dir = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        if args.rollup_day:
            rollup_day(units[: args.rollup_day], db, sink, out_dir)
            return
        began = time.perf_counter()
        points = fill(sink, units, [(2026, 9), (2026, 10)])
        print(
            f"wrote {points:,} unit_day points ({args.units:,} units x 61 days + markers) "
            f"in {time.perf_counter() - began:.1f} s",
            flush=True,
        )
        inv = out_dir / "inventory.csv"
        inv.write_text(write_inventory(units))
        env = {**os.environ, "OXYFLEET_INFLUX__URL": INFLUX, "OXYFLEET_INFLUX__DATABASE": db,
               "OXYFLEET_INVENTORY_FILE": str(inv), "OXYFLEET_INFLUX__TIMEOUT_S": "600"}  # fmt: skip
        for fmt in ("html", "csv"):
            command = ["report", "--month", "2026-10", "--by", "source", "--format", fmt, "--lang", "en"]
            done, figures = timed([*command, "--out", str(out_dir)], env, pid)
            size = sum(p.stat().st_size for p in out_dir.glob(f"*.{fmt}"))
            print(f"oxyfleet report --by source --format {fmt}: {figures}, {size / 1e6:.1f} MB", flush=True)
            if done.returncode:
                print(done.stderr[-2000:])
        if args.keep:
            print(f"kept: database {db}, reports in {out_dir}")
    finally:
        if not args.keep:
            reader.execute(f'DROP DATABASE "{db}"')
            for p in out_dir.glob("*"):
                p.unlink()
            out_dir.rmdir()
        reader.close()
        sink.close()


if __name__ == "__main__":
    main()
