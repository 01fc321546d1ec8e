"""Ingest throughput benchmark: drain a broker-held backlog through `oxyfleet run` into InfluxDB.

Method (one run):
1. Create the ingester's persistent session (subscribe once, disconnect), so the broker queues for it.
2. Publish M QoS 1 readings from N units while no ingester runs (the broker holds them), with the
   simulator's load mode (`oxyfleet simulate --load`); its publish rate is reported too.
3. Start `oxyfleet run` as a subprocess and time until all M points are queryable in InfluxDB.
   Ingester CPU (user+sys from /proc) and peak RSS (VmHWM) are read from the subprocess.
4. Baseline: the same backlog drained by a bare paho-mqtt subscriber that does nothing with the messages
   (the ceiling for any paho-based consumer on this machine).

Usage: scripts/bench [--messages 50000] [--units 500] [--runs 3]
Needs the local services (scripts/bench starts them). Results go to stdout; nothing is written to the repo.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.loadgen import run_load
from ingest.query_influx import InfluxQL

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
HOST, PORT = "127.0.0.1", int(os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883"))
INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"


def session(
    client_id: str,
    topic: str,
    *,
    on_message: Callable[..., None] | None = None,
    receive_maximum: int = 10_000,
) -> mqtt.Client:
    """Connect a persistent-session subscriber (creates the session the broker queues for)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = receive_maximum
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    if on_message:
        client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.connect(HOST, PORT, properties=props, clean_start=False)
    client.loop_start()
    assert subscribed.wait(10)
    return client


def preload(prefix: str, messages: int, units: int) -> float:
    """Publish the backlog with the simulator's load mode; returns its publish rate (msg/s)."""
    return run_load(host=HOST, port=PORT, prefix=prefix, messages=messages, units=units, qos=1).rate


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user+sys) and peak RSS bytes of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    return cpu, int(hwm.split()[1]) * 1024


def run_ingester(messages: int, units: int) -> dict[str, float]:
    """One ingester run over a preloaded backlog."""
    tag = uuid.uuid4().hex[:8]
    prefix, db, client_id = f"bench{tag}/oxygen", f"bench_{tag}", f"bench-ingest-{tag}"
    spool_dir = Path(tempfile.mkdtemp(prefix="oxyfleet-bench-spool-"))  # removed at the end
    reader = InfluxQL(INFLUX, db)
    reader.execute(f'CREATE DATABASE "{db}"')
    session(client_id, f"{prefix}/#").disconnect()
    publish_rate = preload(prefix, messages, units)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env.update(
        {
            "OXYFLEET_MQTT__PORT": str(PORT),
            "OXYFLEET_MQTT__CLIENT_ID": client_id,
            "OXYFLEET_MQTT__TOPIC_PREFIX": prefix,
            "OXYFLEET_INFLUX__URL": INFLUX,
            "OXYFLEET_INFLUX__DATABASE": db,
            "OXYFLEET_METRICS_PORT": "0",
            "OXYFLEET_LOG_LEVEL": "warning",
            "OXYFLEET_INSTANCE": "bench",
            # The spool is on, as shipped; a directory of its own per run (one spool per process).
            "OXYFLEET_SPOOL__DIR": str(spool_dir),
        }
    )
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ingest", "run"], env=env, cwd=ROOT)
    stored = 0
    try:
        while stored < messages:
            time.sleep(0.25)
            rows = reader.rows("SELECT count(purity_pct) FROM telemetry")
            stored = int(rows[0]["count"]) if rows else 0
            if time.perf_counter() - started > 600:
                break
        elapsed = time.perf_counter() - started
        cpu, rss = proc_stats(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        reader.execute(f'DROP DATABASE "{db}"')
        shutil.rmtree(spool_dir, ignore_errors=True)
    return {
        "msgs_per_s": messages / elapsed,
        "lost": messages - stored,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "peak_rss_mb": rss / 2**20,
        "publish_per_s": publish_rate,
    }


def run_bare(messages: int, units: int) -> float:
    """The same backlog drained by a bare paho subscriber: msg/s."""
    tag = uuid.uuid4().hex[:8]
    prefix, client_id = f"bare{tag}/oxygen", f"bench-bare-{tag}"
    session(client_id, f"{prefix}/#").disconnect()
    preload(prefix, messages, units)
    received = 0
    done = threading.Event()

    def on_message(*_args: object) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            done.set()

    started = time.perf_counter()
    client = session(client_id, f"{prefix}/#", on_message=on_message)
    done.wait(600)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return messages / elapsed


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model}; Python {platform.python_version()}; "
        f"{args.messages} messages from {args.units} units, QoS 1, {args.runs} runs"
    )
    results, bare = [], []
    for i in range(args.runs):
        results.append(run_ingester(args.messages, args.units))
        bare.append(run_bare(args.messages, args.units))
        r = results[-1]
        print(
            f"run {i + 1}: ingester {r['msgs_per_s']:8.0f} msg/s  lost {r['lost']:.0f}  "
            f"cpu {r['cpu_us_per_msg']:5.1f} us/msg  peak rss {r['peak_rss_mb']:5.1f} MB  | "
            f"bare paho {bare[-1]:8.0f} msg/s  | publisher {r['publish_per_s']:8.0f} msg/s"
        )

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):8.1f} (min {min(values):.1f}, max {max(values):.1f})"

    print("\nmedian over runs:")
    print(
        f"  end-to-end ingester (backlog drain, until queryable)  msg/s  {summary([r['msgs_per_s'] for r in results])}"
    )
    print(f"  bare paho subscriber                                  msg/s  {summary(bare)}")
    print(
        f"  ratio ingester / bare                                        {statistics.median(r['msgs_per_s'] for r in results) / statistics.median(bare):8.2f}"
    )
    print(
        f"  ingester CPU per message                              us     {summary([r['cpu_us_per_msg'] for r in results])}"
    )
    print(
        f"  ingester peak RSS                                     MB     {summary([r['peak_rss_mb'] for r in results])}"
    )
    print(
        f"  load-mode publisher (QoS 1, into the queued session)  msg/s  {summary([r['publish_per_s'] for r in results])}"
    )
    print(
        f"  points lost                                                  {sum(r['lost'] for r in results):8.0f}"
    )


if __name__ == "__main__":
    main()
