"""Health engine scale benchmark: one cycle for N units (default 20,000) on the local InfluxDB.

Method: a generated inventory of N units; telemetry for the trailing window (15 min by default, a reading
every 10 s per unit, ~5 % of the units underperforming) is written straight to a fresh database, with
``--history-days`` of older, sparser telemetry before it (a real database holds 90 days: a first cycle that
scanned all history would show); then engine cycles run exactly as `oxyfleet health` runs them, and each is
timed: the very first start (nothing stored yet), steady cycles (each followed, as `run` does, by a step
booking the older minutes of the first start's window while any remain, timed apart), then a restart (a new engine over the
database the first one filled) and the cycle after it. Each figure is wall time and CPU seconds of the
engine (this process's thread) and of influxd (from /proc, pid from ``$OXYFLEET_RUN_DIR/influxdb.pid`` or
``--influxd-pid``): on a shared machine CPU is the figure to decide by. Nothing is written to the repo.

Usage: scripts/bench-health [--units 20000] [--cycles 4] [--lookback 900] [--history-days 2] [--one-slice]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from core.settings import LONG_RETENTION_POLICY
from devices.catalog import load_catalog
from devices.inventory import Unit, write_inventory
from health.engine import HealthEngine
from store.reader import InfluxQL
from store.schema import Measurement
from store.writer import InfluxSink, V1Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from health.model import Evaluation

INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"


def fill(sink: InfluxSink, units: list[Unit], start: int, end: int, every_ms: int = 10_000) -> int:
    """Readings every ``every_ms`` per unit in [start, end); one unit in 20 at 85 % purity."""
    lines: list[str] = []
    written = 0
    for i, u in enumerate(units):
        purity = 85.0 if i % 20 == 0 else 93.5
        tags = (
            f"{Measurement.TELEMETRY},hospital={u.hospital.replace(' ', chr(92) + ' ')},kind=concentrator,model={u.model},"
            f"province={u.province.replace(' ', chr(92) + ' ')},unit_id={u.unit_id}"
        )
        phase = (i * 7919) % every_ms
        first = start + (phase - start) % every_ms
        lines.extend(
            f"{tags} purity_pct={purity},flow_lpm=5.0,setpoint_lpm=5.0,running=true {t * 1_000_000}"
            for t in range(first, end, every_ms)
        )
        if len(lines) >= 20_000:
            sink.write(lines)
            written += len(lines)
            lines = []
    sink.write(lines)
    return written + len(lines)


def _influxd_pid(given: int | None) -> int | None:
    if given:
        return given
    pidfile = Path(os.environ.get("OXYFLEET_RUN_DIR", ".run")) / "influxdb.pid"
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` (0 when unknown): influxd's share of a cycle."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


@dataclass
class Timed:
    """One engine cycle: wall seconds, the engine's CPU seconds and influxd's CPU seconds."""

    wall: float
    cpu: float
    influx_cpu: float
    gc: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.wall:.2f} s wall, engine CPU {self.cpu:.2f} s (of which GC {self.gc:.2f} s), "
            f"influxd CPU {self.influx_cpu:.2f} s"
        )


PROFILE_DIR: Path | None = None
_GC: dict[str, float] = {"started": 0.0, "total": 0.0}


def _gc_timer(phase: str, _info: dict[str, int]) -> None:
    """Time the cyclic garbage collector (a big reading cache makes its full passes expensive)."""
    if phase == "start":
        _GC["started"] = time.perf_counter()
    else:
        _GC["total"] += time.perf_counter() - _GC["started"]


def timed_cycle(
    engine: HealthEngine, influxd: int | None, name: str, step: Callable[[], Evaluation | None] | None = None
) -> tuple[Timed, Evaluation]:
    """Run one cycle (or ``step``) and measure it; the fills happen outside.

    CPU is this process's: its threads are the engine's only, and it reads long ranges on two.
    """
    profiler = cProfile.Profile() if PROFILE_DIR is not None else None
    _GC["total"] = 0.0
    i0, c0, t0 = _cpu_s(influxd), time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    evaluation = (step or engine.cycle)()
    if profiler is not None:
        profiler.disable()
    took = Timed(time.perf_counter() - t0, time.process_time() - c0, _cpu_s(influxd) - i0, _GC["total"])
    assert evaluation is not None
    if profiler is not None and PROFILE_DIR is not None:
        profiler.dump_stats(PROFILE_DIR / f"{name}.prof")
    return took, evaluation


def _summary(runs: list[Timed]) -> str:
    walls, cpus, icpus = ([getattr(r, k) for r in runs] for k in ("wall", "cpu", "influx_cpu"))
    each = "; ".join(str(r) for r in runs)
    return (
        f"median {statistics.median(walls):.2f} s wall (min {min(walls):.2f}, max {max(walls):.2f}), "
        f"engine CPU median {statistics.median(cpus):.2f} s, influxd CPU median {statistics.median(icpus):.2f} s"
        f"\n  each: {each}"
    )


def main() -> None:  # noqa: PLR0915 - one linear script: fill, time, print
    """Fill a database, time engine cycles, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--cycles", type=int, default=4, help="cycles of the first engine")
    parser.add_argument("--lookback", type=float, default=900.0, help="trailing window, seconds")
    parser.add_argument("--cycle", type=float, default=15.0, help="cycle period, seconds")
    parser.add_argument(
        "--history-days",
        type=float,
        default=2.0,
        help="older telemetry before the window (one reading per 10 min)",
    )
    parser.add_argument(
        "--influxd-pid", type=int, default=None, help="default: $OXYFLEET_RUN_DIR/influxdb.pid"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="write a cProfile of each cycle to this directory"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (to profile `oxyfleet status`)"
    )
    parser.add_argument(
        "--one-slice",
        action="store_true",
        help="read every range in one query (the engine reads long ones as two concurrent slices)",
    )
    args = parser.parse_args()
    global PROFILE_DIR  # noqa: PLW0603 - a script's option
    PROFILE_DIR = args.profile
    gc.callbacks.append(_gc_timer)
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
    # The engine's results go to the long-term policy, as `oxyfleet health` writes them (and status reads).
    reader.execute(f'CREATE RETENTION POLICY "{LONG_RETENTION_POLICY}" ON "{db}" DURATION INF REPLICATION 1')
    results = InfluxSink(V1Transport(INFLUX, db, retention_policy=LONG_RETENTION_POLICY, timeout_s=600))
    influxd = _influxd_pid(args.influxd_pid)
    try:
        now = time.time_ns() // 1_000_000
        window_from = now - int(args.lookback * 1000) - 120_000
        began = time.perf_counter()
        history = fill(sink, units, window_from - int(args.history_days * 86_400_000), window_from, 600_000)
        written = history + fill(sink, units, window_from, now)
        fill_s = time.perf_counter() - began
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inventory.csv"
            path.write_text(write_inventory(units))

            def keep_reporting(took: Timed) -> None:
                """The fleet keeps reporting between cycles, as it would live."""
                nonlocal now
                time.sleep(max(0.0, args.cycle - took.wall))
                later = time.time_ns() // 1_000_000
                fill(sink, units, now, later)
                now = later

            engine = HealthEngine(
                reader, results, path, lookback_s=args.lookback, long_rp=LONG_RETENTION_POLICY
            )
            if args.one_slice:
                engine.split_ms = None
            first, evaluation = timed_cycle(engine, influxd, "first")
            steady: list[Timed] = []
            older: list[Timed] = []
            took = first
            for _ in range(max(0, args.cycles - 1)):
                keep_reporting(took)
                took, evaluation = timed_cycle(engine, influxd, f"steady{len(steady)}")
                steady.append(took)
                if engine.booking_older:
                    # As `run` does: after the cycle (its alerts are out), a slice of the older minutes.
                    booked, _ = timed_cycle(engine, influxd, f"older{len(older)}", engine.book_older)
                    older.append(booked)
                    took = Timed(took.wall + booked.wall, 0.0, 0.0)
            engine_first_busy = engine.booking_older
            # A restart: a new engine over the database the first one filled (what a redeploy meets).
            keep_reporting(took)
            engine = HealthEngine(
                reader, results, path, lookback_s=args.lookback, long_rp=LONG_RETENTION_POLICY
            )
            if args.one_slice:
                engine.split_ms = None
            restart, _ = timed_cycle(engine, influxd, "restart")
            keep_reporting(restart)
            after_restart, evaluation = timed_cycle(engine, influxd, "after_restart")
            # `oxyfleet status` as an operator runs it (its own process, reading the stored status).
            env = {
                **os.environ,
                "OXYFLEET_INFLUX__URL": INFLUX,
                "OXYFLEET_INFLUX__DATABASE": db,
                "OXYFLEET_INVENTORY_FILE": str(path),
            }
            t0 = time.perf_counter()
            shown = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                [str(Path(sys.executable).with_name("oxyfleet")), "status"]
                if PROFILE_DIR is None
                else [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(PROFILE_DIR / "status.prof"),
                    "-m",
                    "oxyfleet",
                    "status",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            status_s = time.perf_counter() - t0
            status_units = (shown.stdout.strip().splitlines() or [""])[-1]
            if shown.returncode:
                status_units = f"FAILED ({shown.returncode}): {shown.stderr.strip()[-300:]}"
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
            f" (influxd pid {influxd})"
        )
        print(
            f"filled {written} readings for {args.units} units in {fill_s:.1f} s ({history} of them older, "
            f"{args.history_days:g} days); lookback {args.lookback:.0f} s"
        )
        print(
            f"reads: {'one query each' if args.one_slice else 'ranges of 3 min or more in two concurrent slices'}"
        )
        print(f"first start (nothing stored yet): {first}")
        print(f"steady cycles ({len(steady)}): {_summary(steady or [first])}")
        print(
            f"older minutes of the first start's window, booked after cycles ({len(older)} steps"
            f"{', not finished' if engine_first_busy else ''}): " + ("; ".join(map(str, older)) or "none")
        )
        print(f"restart (new engine over stored results): {restart}")
        print(f"cycle after the restart: {after_restart}")
        print(f"points written in the last cycle {len(evaluation.lines)}; states {states}")
        print(f"`oxyfleet status` (own process, stored status): {status_s:.2f} s wall, {status_units}")
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep:
            print(f"kept database {db}; inventory not kept")
        else:
            reader.execute(f'DROP DATABASE "{db}"')


if __name__ == "__main__":
    main()
