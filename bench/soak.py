"""Soak benchmark: the ingester at full fleet rate for a long time, memory sampled; flat RSS is the goal.

Method: `oxyfleet run` (as shipped: validation, manual acks, spool on, inventory tags when given) runs as
a subprocess; the load generator publishes live-stamped QoS 1 readings from ``--units`` units, each unit
every ``--every`` seconds (20,000 units every 10 s = 2,000 msg/s), for ``--minutes``. Every ``--sample``
seconds the ingester's RSS (VmRSS), CPU time and /metrics counters are recorded. At the end it waits
until every reading is queryable and reports: RSS at warm-up end, at the end, the peak, and the slope
of a least-squares line through the samples after warm-up (MB per hour; ~0 means no leak), CPU per
message, and points lost (must be 0).

Usage: scripts/bench-soak [--minutes 30] [--units 20000] [--every 10] [--sample 10] [--json FILE]
Needs the local services (scripts/bench-soak starts them). Writes nothing to the repository unless
``--json`` points there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from ingest.stats import scrape
from store.reader import InfluxQL
from store.schema import Measurement

ROOT = Path(__file__).resolve().parent.parent
PORT = os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883")
INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
WARMUP_S = 120.0


def rss_cpu(pid: int) -> tuple[float, float]:
    """Resident MB and CPU seconds (user+sys) of a live process."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    return proc.memory_info().rss / 2**20, times.user + times.system


def metrics(port: int) -> dict[str, float]:
    """The ingester's /metrics as name -> value (empty when it does not answer)."""
    return scrape(f"http://127.0.0.1:{port}/metrics")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per hour."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den * 3600


def main() -> None:  # noqa: PLR0915 - one linear procedure, easier to read in one piece
    """Run the soak and print (and optionally store) the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--every", type=float, default=10.0, help="Seconds between two readings of a unit.")
    parser.add_argument("--sample", type=float, default=10.0, help="Seconds between memory samples.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the samples and summary here.")
    args = parser.parse_args()
    rate = args.units / args.every
    messages = int(rate * args.minutes * 60)
    tag = uuid.uuid4().hex[:8]
    prefix, db, metrics_port = f"soak{tag}/oxygen", f"soak_{tag}", 9190
    spool_dir = Path(tempfile.mkdtemp(prefix="oxyfleet-bench-spool-"))  # removed at the end
    reader = InfluxQL(INFLUX, db)
    reader.execute(f'CREATE DATABASE "{db}"')
    base = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    common = {"OXYFLEET_MQTT__PORT": PORT, "OXYFLEET_MQTT__TOPIC_PREFIX": prefix}
    env = {
        **base,
        **common,
        "OXYFLEET_MQTT__CLIENT_ID": f"soak-{tag}",
        "OXYFLEET_INFLUX__URL": INFLUX,
        "OXYFLEET_INFLUX__DATABASE": db,
        "OXYFLEET_METRICS_PORT": str(metrics_port),
        "OXYFLEET_LOG_LEVEL": "warning",
        "OXYFLEET_INSTANCE": "soak",
        "OXYFLEET_SPOOL__DIR": str(spool_dir),
    }
    print(
        f"soak: {args.units} units every {args.every:g} s = {rate:,.0f} msg/s for {args.minutes:g} min "
        f"({messages:,} readings); {os.cpu_count()} cores, Python {platform.python_version()}",
        flush=True,
    )
    ingester = subprocess.Popen([sys.executable, "-m", "oxyfleet", "run"], env=env, cwd=ROOT)
    samples: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 30
        while metrics(metrics_port).get("mqtt_subscribed") != 1:
            if time.monotonic() > deadline or ingester.poll() is not None:
                sys.exit("soak: the ingester did not subscribe within 30 s")
            time.sleep(0.2)
        load = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            [
                sys.executable,
                "-m",
                "oxyfleet",
                "simulate",
                "--load",
                "--live-ts",
                "--qos=1",
                f"--messages={messages}",
                f"--rate={rate}",
                f"--units={args.units}",
                "--unit-prefix=SOAK",
            ],
            env={**base, **common},
            cwd=ROOT,
        )
        started = time.monotonic()
        while load.poll() is None:
            time.sleep(args.sample)
            if ingester.poll() is not None:
                load.terminate()
                sys.exit(
                    f"soak: the ingester exited ({ingester.returncode}) after {time.monotonic() - started:.0f} s"
                )
            rss, cpu = rss_cpu(ingester.pid)
            m = metrics(metrics_port)
            sample = {
                "t_s": round(time.monotonic() - started, 1),
                "rss_mb": round(rss, 1),
                "cpu_s": round(cpu, 1),
                "acked": m.get("messages_acked", 0),
                "backlog": m.get("backlog", 0),
                "spool_batches": m.get("spool_batches", 0),
            }
            samples.append(sample)
            print(
                f"  t={sample['t_s']:7.0f} s  rss {rss:6.1f} MB  cpu {cpu:7.1f} s  acked {sample['acked']:10,.0f}  "
                f"backlog {sample['backlog']:6,.0f}  spool {sample['spool_batches']:.0f}",
                flush=True,
            )
        if load.returncode != 0:
            sys.exit(f"soak: the load generator failed (exit {load.returncode})")
        stored, wait_until = 0, time.monotonic() + 300
        while stored < messages and time.monotonic() < wait_until:
            rows = reader.rows(f"SELECT count(purity_pct) FROM {Measurement.TELEMETRY}")  # noqa: S608 - constants
            stored = int(rows[0]["count"]) if rows else 0
            time.sleep(1)
        rss, cpu = rss_cpu(ingester.pid)
        peak_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{ingester.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM")
        )
    finally:
        ingester.terminate()
        ingester.wait(30)
        reader.execute(f'DROP DATABASE "{db}"')
        shutil.rmtree(spool_dir, ignore_errors=True)
        reader.close()
    steady = [(s["t_s"], s["rss_mb"]) for s in samples if s["t_s"] >= WARMUP_S]
    summary = {
        "units": args.units,
        "msg_per_s": rate,
        "minutes": args.minutes,
        "messages": messages,
        "lost": messages - stored,
        "rss_after_warmup_mb": steady[0][1] if steady else None,
        "rss_end_mb": rss,
        "rss_peak_mb": peak_kb / 1024,
        "rss_slope_mb_per_hour": round(slope_per_hour(steady), 2),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
        "max_backlog": max((s["backlog"] for s in samples), default=0),
    }
    print("\nsoak summary:")
    for key, value in summary.items():
        print(f"  {key:24s} {value}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
