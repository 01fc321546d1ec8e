"""Disk sizing: one simulated day of a fleet sample written into a real InfluxDB 1.x, measured with du.

Why measured and not computed: TSM compresses each series' timestamps and values (delta, Gorilla, RLE),
so bytes per point depend on how the readings vary, how many series there are and how full compaction
packs them. Nothing but a real store tells that.

Method: the sample inventory's units (or ``--units`` of them) run through the fleet simulator for one
simulated day (faults included, no malformed messages), every payload goes through the ingester's own
decoder and line builder, and the lines are written in 5,000-line batches to a fresh database of an
``influxd`` this script starts in a temporary directory (on a free loopback port) with short cold
durations, so the cache is snapshotted and the shard fully compacted within a minute instead of the
default 10 minutes / 4 hours. When the TSM files stop changing, ``du`` of the database's data and WAL
directories gives the bytes per stored point, which is extrapolated to fleets reporting every 10 s.

Usage: .venv/bin/python bench/sizing.py [--units 252 | --generated N] [--settle 120]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from devices.catalog import load_catalog
from devices.inventory import SAMPLE_INVENTORY, load_inventory
from fleetsim.simulator import Simulator, generate_units, units_from_inventory
from ingest.decode import Decoder, Inbound
from ingest.inventory_tags import InventoryTags
from store.lineproto import LineBuilder, StaticTags, TagLookup
from store.reader import InfluxQL
from store.writer import InfluxSink, V1Transport

DAY_S = 86_400
FLEETS = (2_000, 20_000, 100_000)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _du(path: Path) -> int:
    """Bytes on disk (``du -sb`` would count apparent size; blocks are what fills a disk)."""
    du = shutil.which("du") or "/usr/bin/du"
    out = subprocess.run([du, "-sk", str(path)], capture_output=True, text=True, check=True).stdout  # noqa: S603 - fixed tool
    return int(out.split()[0]) * 1024


def _start_influxd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, rpc = _free_port(), _free_port()
    conf = root / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "15s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
"""
    )
    proc = subprocess.Popen(  # noqa: S603 - the system influxd with our own config
        [shutil.which("influxd") or "/usr/bin/influxd", "run", "-config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(root / "influxd.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1):  # noqa: S310 - http://127.0.0.1
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("influxd did not start; see its log")


class _Writer:
    """Decodes each simulated message as the ingester would and writes its lines in 5,000-line batches."""

    def __init__(self, sink: InfluxSink, tags: TagLookup) -> None:
        self.sink = sink
        self.decoder = Decoder()
        self.builder = LineBuilder(tags)
        self.lines: list[str] = []
        self.points = 0

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        decoded = self.decoder.decode(Inbound(topic, payload, time.time_ns(), 1, retain))
        self.lines.extend(self.builder.telemetry(r) for r in decoded.readings)
        if len(self.lines) >= 5000:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.sink.write(self.lines)
            self.points += len(self.lines)
            self.lines = []


def _settle(data: Path, wal: Path, most_s: float) -> bool:
    """Wait until the WAL is empty and the TSM files have not changed for 20 s (full compaction done)."""
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + most_s
    while time.monotonic() < deadline:  # until WAL empty and TSM files unchanged for 20 s
        tsm = sorted((p.name, p.stat().st_size) for p in data.rglob("*.tsm"))
        size = hash(tuple(tsm))
        wal_empty = not any(wal.rglob("*.wal*")) or _du(wal) <= 16 * 1024
        if size != last:
            last, stable_since = size, time.monotonic()
        elif wal_empty and time.monotonic() - stable_since > 20:
            return True
        time.sleep(2)
    return False


def main() -> None:
    """Write the day, wait for compaction, print bytes per point and the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=252, help="units of the sample inventory to simulate")
    parser.add_argument(
        "--generated", type=int, default=0, help="simulate this many generated (unregistered) units instead"
    )
    parser.add_argument("--settle", type=float, default=120.0, help="most seconds to wait for compaction")
    args = parser.parse_args()
    inventory = load_inventory(SAMPLE_INVENTORY)
    rng = random.Random(7)
    units = (
        generate_units(args.generated, load_catalog(), rng)
        if args.generated
        else units_from_inventory(inventory, args.units, rng)
    )
    # Generated units are in no inventory: plain "unregistered" tags, without a warning per unit.
    tags: TagLookup = StaticTags() if args.generated else InventoryTags(SAMPLE_INVENTORY)
    with tempfile.TemporaryDirectory(prefix="oxyfleet-sizing-") as tmp:
        root = Path(tmp)
        proc, url = _start_influxd(root)
        try:
            db = "sizing"
            InfluxQL(url, db).execute(f'CREATE DATABASE "{db}"')
            writer = _Writer(InfluxSink(V1Transport(url, db, timeout_s=120)), tags)
            sim = Simulator(units, writer, duration_s=DAY_S / 1000, speed=1000, malformed_share=0.0, seed=7)
            began = time.perf_counter()
            sim.run(realtime=False)
            writer.flush()
            write_s = time.perf_counter() - began
            data, wal = root / "data" / db, root / "wal" / db
            raw = _du(data) + _du(wal)
            settled = _settle(data, wal, args.settle)
            on_disk = _du(data) + _du(wal)
            tsm_files = len(list(data.rglob("*.tsm")))
        finally:
            proc.terminate()
            proc.wait(30)
    per_point = on_disk / writer.points
    per_unit_day = writer.points / len(units)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, influxd 1.x at {url}")
    print(
        f"{len(units)} units, one simulated day: {writer.points:,} points ({per_unit_day:,.0f}/unit/day) "
        f"written in {write_s:.0f} s"
    )
    print(f"on disk right after writing (WAL + cache snapshots): {raw / 1e6:.1f} MB")
    if not settled:
        print(f"WARNING: the files still changed after {args.settle:.0f} s; raise --settle")
    print(f"after compaction ({tsm_files} TSM files): {on_disk / 1e6:.1f} MB = {per_point:.2f} bytes/point")
    print("| units | points/day (10 s) | disk/day | disk/90 days |")
    print("|---|---|---|---|")
    for n in FLEETS:
        points = n * DAY_S // 10
        day = points * per_point
        print(f"| {n:,} | {points / 1e6:,.1f} M | {day / 1e9:.2f} GB | {day * 90 / 1e9:,.0f} GB |")


if __name__ == "__main__":
    main()
