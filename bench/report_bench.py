"""Benchmark: one monthly report over N units (default 20,000, one donor source), from InfluxDB.

Method: a generated inventory of N units; per-minute ``unit_state`` for the first ``--hours`` of the month
for every unit (or, with ``--daily``, the whole month as one pre-summed point per unit and day: what a
report would read from daily totals) (a whole month at 20,000 units is 864 million points, ~2 h of writing here, so the stored
part is scaled down and the state-sum query is timed separately to show how it grows with the stored
minutes); events for a few units; then ``oxyfleet report --by source`` in its own process, timed end to end
(HTML, then CSV). Prints the figures; not a timed test.

    .venv/bin/python bench/report_bench.py --units 20000 --hours 2
"""

from __future__ import annotations

import argparse
import os
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
from store.lineproto import line, tag_set
from store.reader import InfluxQL
from store.schema import STATES, UNIT_TAGS, Measurement, State, StateField, seconds_field
from store.writer import InfluxSink, V1Transport

INFLUX = os.environ.get(
    "OXYFLEET_TEST_INFLUX_URL", f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
)


def fill(sink: InfluxSink, units: list[Unit], start_ms: int, minutes: int, step_min: int = 1) -> int:
    """States every ``step_min`` minutes: every 17th unit spends 1/60 of its time underperforming."""
    lines: list[str] = []
    written = 0
    for n, u in enumerate(units):
        tags = tag_set(
            dict(zip(UNIT_TAGS, (u.hospital, u.kind, u.model, u.province, u.unit_id), strict=True))
        )
        for m in range(0, minutes, step_min):
            state = State.UNDERPERFORMING if n % 17 == 0 and (m // step_min) % 60 == 7 else State.IN_SPEC
            fields: dict[str, object] = {
                StateField.STATE: state,
                StateField.REASON: "",
                StateField.CODE: 0,
                StateField.IN_SPEC: int(state == State.IN_SPEC),
                StateField.MAINTENANCE_DUE: False,
                **{seconds_field(s): 60.0 * step_min if s == state else 0.0 for s in STATES},
            }
            lines.append(line(Measurement.UNIT_STATE, tags, fields, (start_ms + m * 60_000) * 1_000_000))
        if len(lines) >= 20_000:
            sink.write(lines)
            written += len(lines)
            lines = []
    sink.write(lines)
    return written + len(lines)


def main() -> None:
    """Fill, then time the report command."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--hours", type=int, default=2, help="stored hours of per-minute states per unit")
    parser.add_argument(
        "--daily",
        action="store_true",
        help="store the whole month as one pre-summed point per unit and day instead (what daily totals would cost)",
    )
    args = parser.parse_args()
    spec = load_catalog()["OC-5-DONOR"]
    units = [
        Unit(f"R-{i:06d}", "concentrator", "OC-5-DONOR", f"SN{i}", f"Hospital {i // 50:04d}",
             "DKI Jakarta", "donor-bench", date(2021, 8, 1), 0.0, spec)
        for i in range(args.units)
    ]  # fmt: skip
    db = f"bench_report_{uuid.uuid4().hex[:8]}"
    reader = InfluxQL(INFLUX, db, timeout_s=600)
    reader.execute(f'CREATE DATABASE "{db}"')
    sink = InfluxSink(V1Transport(INFLUX, db, timeout_s=600))
    start_ms = int(datetime(2026, 10, 1, tzinfo=ZoneInfo("Asia/Jakarta")).timestamp() * 1000)
    try:
        began = time.perf_counter()
        if args.daily:
            args.hours = 31 * 24
            points = fill(sink, units, start_ms, args.hours * 60, step_min=1440)
        else:
            points = fill(sink, units, start_ms, args.hours * 60)
        print(
            f"wrote {points:,} unit_state points ({args.units:,} units x {args.hours} h"
            f"{', one point a day' if args.daily else ''}) in {time.perf_counter() - began:.1f} s",
            flush=True,
        )
        sums = ", ".join(f"sum({seconds_field(s)})" for s in STATES)
        for hours in sorted({max(1, args.hours // 2), args.hours}):
            t0 = time.perf_counter()
            rows = reader.rows(
                f"SELECT {sums} FROM {Measurement.UNIT_STATE} WHERE time >= {start_ms}ms "  # noqa: S608
                f"AND time < {start_ms + hours * 3600_000}ms GROUP BY unit_id"
            )
            print(
                f"state-sum query over {hours} h x {args.units:,} units: {time.perf_counter() - t0:.2f} s ({len(rows):,} rows)"
            )
        with tempfile.TemporaryDirectory() as tmp:
            inv = Path(tmp) / "inventory.csv"
            inv.write_text(write_inventory(units))
            env = {**os.environ, "OXYFLEET_INFLUX__URL": INFLUX, "OXYFLEET_INFLUX__DATABASE": db,
                   "OXYFLEET_INVENTORY_FILE": str(inv), "OXYFLEET_INFLUX__TIMEOUT_S": "600"}  # fmt: skip
            for fmt in ("html", "csv"):
                t0 = time.perf_counter()
                done = subprocess.run(  # noqa: S603
                    [sys.executable, "-m", "oxyfleet", "report", "--month", "2026-10", "--by", "source",
                     "--format", fmt, "--lang", "en", "--out", tmp],
                    env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                took = time.perf_counter() - t0
                size = sum(p.stat().st_size for p in Path(tmp).glob(f"*.{fmt}"))
                print(
                    f"oxyfleet report --by source --format {fmt}: {took:.1f} s, exit {done.returncode}, {size / 1e6:.1f} MB"
                )
                if done.returncode:
                    print(done.stderr[-2000:])
    finally:
        reader.execute(f'DROP DATABASE "{db}"')
        reader.close()


if __name__ == "__main__":
    main()
