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

from devices.catalog import load_catalog
from devices.inventory import Unit, write_inventory
from health.rollup import DayRow, day_lines, local_days, marker_lines
from store.reader import InfluxQL
from store.schema import LONG_POLICY, State
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
    """User + system CPU seconds of a process, from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    """Fill, then time the report command (HTML, CSV)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the database and the reports (printed)")
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
            load = os.getloadavg()
            t0, c0, i0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN), cpu_s(pid)
            done = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "oxyfleet", "report", "--month", "2026-10", "--by", "source",
                 "--format", fmt, "--lang", "en", "--out", str(out_dir)],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            took = time.perf_counter() - t0
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
            size = sum(p.stat().st_size for p in out_dir.glob(f"*.{fmt}"))
            print(
                f"oxyfleet report --by source --format {fmt}: {took:.1f} s wall, {cpu:.1f} s CPU (report "
                f"process), {cpu_s(pid) - i0:.1f} s CPU (InfluxDB); exit {done.returncode}, "
                f"{size / 1e6:.1f} MB; load average before {load}",
                flush=True,
            )
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
