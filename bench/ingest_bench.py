"""End-to-end ingest benchmark: `oxyfleet run` as shipped against a bare paho subscriber, same machine, same run.

What one run measures, for each QoS asked (default 1 and 0):

1. **Ingester, end to end.** N ingester processes (`oxyfleet run`, validation, manual acks, spool on; with
   ``--processes`` > 1 they share one MQTT 5 shared subscription) are started and subscribed; then the load
   generator publishes M readings from U units as fast as it can. Time runs from the first publish until
   every point is queryable in InfluxDB. Points lost = published - stored (must be 0 at QoS 1). Ingester
   CPU (user+sys from /proc, after start-up) per message, and peak RSS (VmHWM), are read from the
   processes.
2. **Bare paho subscriber**, same M readings, same broker: a paho-mqtt client (MQTT 5, the same as the
   ingester's) that does nothing with the messages; time from first publish until all received. It is the
   ceiling for any paho-based consumer on this machine; the table prints the ratio.
3. **Latency at a fixed fleet rate** (QoS 1): the load generator publishes live-stamped readings at
   ``--latency-rate`` (2,000 msg/s = 20,000 units every 10 s) for ``--latency-seconds`` while a poller
   counts the stored points every 50 ms. The k-th oldest reading counts as queryable at the first poll
   that saw k points (the pipeline is FIFO), so latency = that poll's time - the reading's timestamp;
   resolution about 50 ms. p50 and p99 over all readings.

Usage: scripts/bench [--messages 200000] [--units 1000] [--runs 3] [--qos 1 0] [--processes 1]
                     [--latency-rate 2000] [--latency-seconds 30]
Needs the local services (scripts/bench starts them). Prints the table; nothing is written to the repo.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleetsim.loadgen import run_load
from store.reader import InfluxQL
from store.schema import Measurement

ROOT = Path(__file__).resolve().parent.parent
HOST, PORT = "127.0.0.1", int(os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883"))
INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
STALL_S = 15.0  # no new point for this long: the rest is lost


def free_port() -> int:
    """A loopback port nobody listens on right now (for each ingester's /metrics)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user+sys) and peak RSS bytes of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    return cpu, int(hwm.split()[1]) * 1024


def subscribed(port: int) -> bool:
    """Whether the ingester behind this metrics port has its subscription (publishing earlier loses data)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            return 'oxyfleet_ingest_mqtt_subscribed{instance="bench"} 1' in resp.read().decode()
    except OSError:
        return False


def count(reader: InfluxQL) -> int:
    """Telemetry points stored so far."""
    rows = reader.rows(f"SELECT count(purity_pct) FROM {Measurement.TELEMETRY}")  # noqa: S608 - constants
    return int(rows[0]["count"]) if rows else 0


@dataclass
class Ingesters:
    """N `oxyfleet run` processes on one (shared) subscription, writing to a fresh database."""

    processes: int
    qos: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cpu_at_start: float = 0.0

    def __post_init__(self) -> None:
        self.prefix, self.db = f"bench{self.tag}/oxygen", f"bench_{self.tag}"
        self.reader = InfluxQL(INFLUX, self.db)
        self.reader.execute(f'CREATE DATABASE "{self.db}"')
        self.spool = Path(tempfile.mkdtemp(prefix="oxyfleet-bench-spool-"))

    def start(self) -> None:
        """Start the processes and wait until every one is subscribed; CPU is counted from there."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
        ports = []
        for i in range(self.processes):
            port = free_port()
            ports.append(port)
            env = {
                **base,
                "OXYFLEET_MQTT__PORT": str(PORT),
                "OXYFLEET_MQTT__CLIENT_ID": f"bench-ingest-{self.tag}-{i}",
                "OXYFLEET_MQTT__TOPIC_PREFIX": self.prefix,
                "OXYFLEET_MQTT__QOS": str(self.qos),
                "OXYFLEET_INFLUX__URL": INFLUX,
                "OXYFLEET_INFLUX__DATABASE": self.db,
                "OXYFLEET_METRICS_PORT": str(port),
                "OXYFLEET_LOG_LEVEL": "warning",
                "OXYFLEET_INSTANCE": "bench",
                "OXYFLEET_SPOOL__DIR": str(self.spool / str(i)),  # the spool is on, as shipped; one each
            }
            if self.processes > 1:
                env["OXYFLEET_MQTT__SHARED_GROUP"] = "bench"
            self.procs.append(subprocess.Popen([sys.executable, "-m", "oxyfleet", "run"], env=env, cwd=ROOT))
        deadline = time.monotonic() + 60
        while not all(subscribed(p) for p in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                sys.exit("bench: an ingester did not start")
            time.sleep(0.1)
        self.cpu_at_start = sum(proc_stats(p.pid)[0] for p in self.procs)

    def cpu_and_rss(self) -> tuple[float, int]:
        """CPU seconds since start-up, summed, and the largest peak RSS of the processes."""
        stats = [proc_stats(p.pid) for p in self.procs]
        return sum(c for c, _ in stats) - self.cpu_at_start, max(r for _, r in stats)

    def wait_stored(self, expected: int, limit_s: float = 900) -> tuple[int, float]:
        """(stored, time when the last point became queryable): stops early when nothing new comes."""
        stored, last_change, last = 0, time.perf_counter(), -1
        deadline = time.perf_counter() + limit_s
        while stored < expected and time.perf_counter() < deadline:
            stored = count(self.reader)
            now = time.perf_counter()
            if stored != last:
                last, last_change = stored, now
            elif now - last_change > STALL_S:
                break
            time.sleep(0.05)
        return stored, last_change

    def close(self) -> None:
        """Stop the processes, drop the database and the spool."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)
        self.reader.execute(f'DROP DATABASE "{self.db}"')
        self.reader.close()
        shutil.rmtree(self.spool, ignore_errors=True)


def run_ingester(messages: int, units: int, qos: int, processes: int) -> dict[str, float]:
    """Publish M readings at full speed into running ingesters; until all are queryable."""
    ingesters = Ingesters(processes, qos)
    try:
        ingesters.start()
        started = time.perf_counter()
        publish = run_load(
            host=HOST, port=PORT, prefix=ingesters.prefix, messages=messages, units=units, qos=qos
        )
        stored, done_at = ingesters.wait_stored(messages)
        cpu, rss = ingesters.cpu_and_rss()
    finally:
        ingesters.close()
    return {
        "msgs_per_s": stored / (done_at - started),
        "lost": messages - stored,
        "cpu_us_per_msg": cpu / max(stored, 1) * 1e6,
        "peak_rss_mb": rss / 2**20,
        "publish_per_s": publish.rate,
    }


def run_bare(messages: int, units: int, qos: int) -> float:
    """The same load into a bare paho subscriber (MQTT 5, like the ingester): msg/s until all received."""
    tag = uuid.uuid4().hex[:8]
    prefix = f"bare{tag}/oxygen"
    received = 0
    done = threading.Event()
    ready = threading.Event()

    def on_message(*_args: object) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{tag}", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(f"{prefix}/#", qos=qos)
    client.connect(HOST, PORT)
    client.loop_start()
    ready.wait(10)
    started = time.perf_counter()
    run_load(host=HOST, port=PORT, prefix=prefix, messages=messages, units=units, qos=qos)
    done.wait(600)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return received / elapsed


def run_latency(rate: float, seconds: float, units: int, processes: int) -> dict[str, float]:
    """Publish live-stamped readings at ``rate`` for ``seconds``; latency publish -> queryable per reading."""
    ingesters = Ingesters(processes, 1)
    polls: list[tuple[float, int]] = []
    stop = threading.Event()
    messages = int(rate * seconds)
    try:
        ingesters.start()
        poller_reader = InfluxQL(INFLUX, ingesters.db)

        def poll() -> None:
            while not stop.is_set():
                n = count(poller_reader)
                polls.append((time.time() * 1000, n))
                if n >= messages:
                    return
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        run_load(
            host=HOST,
            port=PORT,
            prefix=ingesters.prefix,
            messages=messages,
            units=units,
            qos=1,
            rate=rate,
            live_ts=True,
        )
        poller.join(120)
        stop.set()
        poller_reader.close()
        times = sorted(
            int(r["time"])
            for r in ingesters.reader.rows(f"SELECT purity_pct FROM {Measurement.TELEMETRY}")  # noqa: S608
        )
    finally:
        stop.set()
        ingesters.close()
    latencies, k = [], 0
    for at_ms, n in polls:
        while k < min(n, len(times)):
            latencies.append(at_ms - times[k])
            k += 1
    latencies.sort()
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "lost": messages}
    return {
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "lost": messages - len(times),
    }


def machine() -> str:
    """What the figures were measured on."""
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores, {cpu_model}, {mem_kb / 2**20:.0f} GiB RAM; Linux {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def spread(values: list[float], digits: int = 0) -> str:
    """Median (min, max)."""
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values)):>9} (min {fmt.format(min(values))}, max {fmt.format(max(values))})"


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qos", type=int, nargs="+", choices=[0, 1], default=[1, 0])
    parser.add_argument("--processes", type=int, default=1, help="Ingester processes (shared subscription).")
    parser.add_argument("--latency-rate", type=float, default=2000.0)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"load: {args.messages:,} readings from {args.units:,} units per measurement; "
        f"{args.processes} ingester process(es); {args.runs} runs",
        flush=True,
    )
    results: dict[int, list[dict[str, float]]] = {q: [] for q in args.qos}
    bare: dict[int, list[float]] = {q: [] for q in args.qos}
    latency: list[dict[str, float]] = []
    for i in range(args.runs):
        for qos in args.qos:
            r = run_ingester(args.messages, args.units, qos, args.processes)
            b = run_bare(args.messages, args.units, qos)
            results[qos].append(r)
            bare[qos].append(b)
            print(
                f"run {i + 1} QoS {qos}: ingester {r['msgs_per_s']:8,.0f} msg/s  lost {r['lost']:.0f}  "
                f"cpu {r['cpu_us_per_msg']:5.1f} us/msg  peak rss {r['peak_rss_mb']:5.1f} MB  | "
                f"bare paho {b:8,.0f} msg/s  ratio {r['msgs_per_s'] / b:4.2f}",
                flush=True,
            )
        if args.latency_seconds > 0:
            lat = run_latency(args.latency_rate, args.latency_seconds, args.units, args.processes)
            latency.append(lat)
            print(
                f"run {i + 1} latency at {args.latency_rate:,.0f} msg/s: p50 {lat['p50_ms']:.0f} ms  "
                f"p99 {lat['p99_ms']:.0f} ms  lost {lat['lost']:.0f}",
                flush=True,
            )

    print(f"\nmedian over {args.runs} runs (min, max):")
    for qos in args.qos:
        rs, bs = results[qos], bare[qos]
        ratios = [r["msgs_per_s"] / b for r, b in zip(rs, bs, strict=True)]
        print(
            f"  QoS {qos}  end-to-end ingester, first publish -> all queryable   msg/s  {spread([r['msgs_per_s'] for r in rs])}"
        )
        print(f"  QoS {qos}  bare paho subscriber, first publish -> all received    msg/s  {spread(bs)}")
        print(
            f"  QoS {qos}  ratio ingester / bare (same run)                              {spread(ratios, 2)}"
        )
        print(
            f"  QoS {qos}  points lost                                                   {sum(r['lost'] for r in rs):9,.0f}"
        )
        print(
            f"  QoS {qos}  ingester CPU per message                            us     {spread([r['cpu_us_per_msg'] for r in rs], 1)}"
        )
        print(
            f"  QoS {qos}  ingester peak RSS                                   MB     {spread([r['peak_rss_mb'] for r in rs], 1)}"
        )
    if latency:
        rate = f"{args.latency_rate:,.0f} msg/s"
        print(
            f"  QoS 1  publish -> queryable p50 at {rate:>11}                    ms     {spread([x['p50_ms'] for x in latency])}"
        )
        print(
            f"  QoS 1  publish -> queryable p99 at {rate:>11}                    ms     {spread([x['p99_ms'] for x in latency])}"
        )
        print(
            f"  QoS 1  points lost in the latency runs                             {sum(x['lost'] for x in latency):9,.0f}"
        )


if __name__ == "__main__":
    main()
