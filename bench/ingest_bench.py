"""End-to-end ingest benchmark: `oxyfleet run` against its peers, side by side in the same run.

Consumers, each in its own process, measured one after another in every run (default 3 runs):

- ``paho 3.1.1`` / ``paho 5``: a bare paho-mqtt subscriber with an empty callback (bench/bare_paho.py),
  MQTT 3.1.1 and MQTT 5: the ceiling for any paho-based consumer on this machine. Nothing is stored; its
  time ends at the last message received.
- ``naive``: a ~70-line paho -> pydantic -> ``/write`` script (bench/naive_ingester.py). It acks before
  writing: not loss-safe.
- ``node-red``: Node-RED 4.1 with node-red-contrib-influxdb (bench/nodered_flow.json: mqtt in QoS 1 ->
  json -> join 5,000 messages / 200 ms -> influxdb batch), headless, installed by this benchmark with npm
  into ``$OXYFLEET_RUN_DIR/bench-cache/`` (skipped, saying why, if that fails).
- ``oxyfleet``: ``oxyfleet run`` as shipped (default settings: MQTT 3.1.1, manual acks after the write,
  spool on); ``oxyfleet 5``: the same with ``OXYFLEET_MQTT__PROTOCOL=5``; ``oxyfleet w2``: ``oxyfleet
  run --workers 2`` (two ingest processes on one shared subscription; CPU and RSS of all its processes).
- ``base``: ``oxyfleet run`` of another checkout (``--base DIR``, e.g. ``git worktree add DIR main``),
  default settings, run with this checkout's Python: an A/B of two versions of the ingester in one run.
- ``oxyfleet drain``: a backlog drain. ``oxyfleet run`` subscribes (persistent session) and stops; the
  readings, all an hour old (later than the 30 s late threshold, so late markers show), are queued in
  Mosquitto; then ``oxyfleet run`` starts again and the clock runs from its start (Python start-up
  included) until every reading is queryable.

Method: the consumer is started and made ready (subscribed; for the storing peers, a probe reading is
queryable). Then bench/publisher.py, in its own process, encodes the whole stream (M readings from U
units, QoS 1, topics and payloads built before its clock starts) and publishes it with at most
``--max-in-flight`` publishes unacknowledged. Time runs from the first publish until every reading is
queryable in InfluxDB or, for the bare subscribers, received. The end is seen on InfluxDB's own
per-shard write counter (``SHOW STATS``, polled every 50 ms: a ``count`` over 200,000 points costs
InfluxDB a quarter of a second of CPU), as the first poll at which every point of the run was accepted,
and confirmed by an exact InfluxQL ``count`` of the telemetry. Lost = published - counted. CPU per message for each process (the consumer, Mosquitto, InfluxDB, the
publisher) from deltas of its user+system CPU times (psutil) over the measurement; peak RSS (VmHWM) of the consumer.
Points per reading: points in every measurement of the database (telemetry, late_data,
unit_connection, rejected, oxyfleet_ingest) over readings published.
Optionally (``--latency-seconds``), publish -> queryable latency of ``oxyfleet run`` at a fixed fleet
rate, as before: live readings at ``--latency-rate`` from the simulator's load mode, a poller reading
the write counter every 20 ms; the k-th oldest reading is queryable at the first poll that saw k points.

Usage: scripts/bench [--messages 200000] [--units 1000] [--runs 3] [--consumers ...] [--processes 1]
                     [--latency-rate 2000] [--latency-seconds 10] [--json FILE]
Needs the local services (scripts/bench starts them). Prints per-run lines and the summary.

Long module: one file so that it runs as ``python bench/ingest_bench.py`` from a fresh clone without
making bench/ a package; its sections (processes, one measurement, statistics and the summary, setup) are
marked, and the peers live in files of their own (bare_paho.py, naive_ingester.py, publisher.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
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
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from fleetsim.loadgen import run_load
from ingest.stats import scrape
from store.reader import InfluxQL
from store.schema import Measurement

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ROOT: Final = Path(__file__).resolve().parent.parent
BENCH: Final = ROOT / "bench"
HOST: Final = "127.0.0.1"
PORT: Final = int(os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883"))
INFLUX_PORT: Final = int(os.environ.get("OXYFLEET_SERVICES_INFLUX_PORT", "8086"))
INFLUX: Final = f"http://127.0.0.1:{INFLUX_PORT}"
RUN_DIR: Final = Path(os.environ.get("OXYFLEET_RUN_DIR", str(ROOT / ".run")))
CACHE: Final = RUN_DIR / "bench-cache"
NODE_RED_PACKAGES: Final = ("node-red@4.1.8", "node-red-contrib-influxdb@0.7.0")
STALL_S: Final = 30.0  # no new point for this long after the last publish: the rest is lost
POLL_S: Final = 0.05
PROGRESS_POINTS: Final = 100  # growth of the write counter that counts as progress (stats: 1 per 10 s)
PROBE_UNIT: Final = "PROBE-000000"
CONSUMERS: Final = (
    "paho 3.1.1",
    "paho 5",
    "naive",
    "node-red",
    "oxyfleet",
    "oxyfleet 5",
    "oxyfleet drain",
    "oxyfleet w2",
    "base",
)
REFERENCE: Final = "oxyfleet"
DASH: Final = "\u2013"  # ranges read as in the docs: 5,061\u20136,056


# --- processes --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user+sys) a live process has used."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def peak_rss(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0


def service_pid(name: str) -> int | None:
    """Pid of a service started by scripts/services (None if it runs elsewhere: then no CPU figure)."""
    try:
        pid = int((RUN_DIR / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:  # noqa: ANN401 - Popen's keywords
    """Start one of the processes under test: our own scripts, ``node`` and ``npm``; no outside input."""
    return subprocess.Popen(args, **kwargs)  # noqa: S603


def execute(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:  # noqa: ANN401 - run's keywords
    """Run a setup tool (``npm install``, version queries) to completion, text output."""
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a consumer: none of our own OXYFLEET_ settings leak into it."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}, **extra}


# --- one measurement ----------------------------------------------------------------------------------


def shard_points(reader: InfluxQL, db: str) -> int:
    """Points InfluxDB has accepted into the shards of ``db``: its own counter, queryable once counted.

    A ``count`` over 200,000 points takes InfluxDB 1.6 0.2-0.5 s of CPU: polled every 100 ms it would
    take half a core from the consumer and blur the end time. ``SHOW STATS`` costs about a millisecond.
    """
    answer = reader.raw("SHOW STATS FOR 'shard'")
    return sum(
        int(dict(zip(series["columns"], series["values"][0], strict=True))["writePointsOk"])
        for series in answer["results"][0].get("series", [])
        if series.get("tags", {}).get("database") == db
    )


@dataclass
class Target:
    """Where one measurement's readings go: a fresh topic prefix and database."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        self.prefix, self.db = f"bench{self.tag}/oxygen", f"bench_{self.tag}"
        self.reader = InfluxQL(INFLUX, self.db)
        self.reader.execute(f'CREATE DATABASE "{self.db}"')

    def stored(self) -> int:
        """Telemetry points queryable so far."""
        rows = self.reader.rows(f"SELECT count(purity_pct) FROM {Measurement.TELEMETRY}")  # noqa: S608 - constants
        return int(rows[0]["count"]) if rows else 0

    def points(self) -> dict[str, int]:
        """Points per measurement (each has a field present in every point: the largest field count)."""
        out = {}
        for row in self.reader.rows("SHOW MEASUREMENTS"):
            name = str(row["name"])
            counts = self.reader.rows(f'SELECT count(*) FROM "{name}"')  # noqa: S608 - names from InfluxDB
            out[name] = max((int(v) for k, v in counts[0].items() if k.startswith("count_")), default=0)
        return out

    def written(self) -> int:
        """Points InfluxDB has accepted into this database (see :func:`shard_points`)."""
        return shard_points(self.reader, self.db)

    def wait_stored(
        self, expected: int, busy: Callable[[], bool] = lambda: False, limit_s: float = 900
    ) -> tuple[int, list[tuple[float, int]]]:
        """Poll the write counter until ``expected`` telemetry points are queryable (an exact count says so).

        Returns the exact telemetry count and the (monotonic time, points written) history, from which
        :func:`queryable_at` finds the end time. Gives up when fewer than ``PROGRESS_POINTS`` new points
        (the ingester's own stats points are not progress) came for ``STALL_S`` while
        ``busy()`` (the publisher still running) is false: on a loaded machine a consumer may take a
        while to write its first batch, and that is slowness to measure, not loss.
        """
        history: list[tuple[float, int]] = []
        started = last_change = time.monotonic()
        last, next_count = -1, 0.0
        while True:
            now, written = time.monotonic(), self.written()
            history.append((now, written))
            if written > last + PROGRESS_POINTS or busy():  # not the ingester's stats alone
                last, last_change = written, now
            if written >= expected and now >= next_count:
                stored = self.stored()
                if stored >= expected:
                    return stored, history
                next_count = time.monotonic() + 1.0  # other measurements are in the counter too
            if now - last_change > STALL_S or now - started > limit_s:
                return self.stored(), history
            time.sleep(POLL_S)

    def probe(self) -> None:
        """One reading through the consumer: it is ready when the reading is queryable."""
        payload = json.dumps(
            {
                "ts": time.time_ns() // 1_000_000,
                "seq": 0,
                "purity_pct": 93.0,
                "flow_lpm": 5.0,
                "setpoint_lpm": 5.0,
                "outlet_kpa": 55.0,
                "temp_c": 36.0,
                "running": True,
                "power": "mains",
            }
        )
        topic = f"{self.prefix}/concentrator/{PROBE_UNIT}/telemetry"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{self.tag}")
        client.connect(HOST, PORT)
        client.loop_start()
        try:
            self._probe(client, topic, payload)
        finally:
            client.disconnect()
            client.loop_stop()

    def _probe(self, client: mqtt.Client, topic: str, payload: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
            until = time.monotonic() + 3
            while time.monotonic() < until:
                if self.stored() >= 1:
                    return
                time.sleep(0.1)
        raise RuntimeError("the consumer did not store a probe reading within 60 s")

    def close(self) -> None:
        """Drop the database."""
        self.reader.execute(f'DROP DATABASE "{self.db}"')
        self.reader.close()


class Consumer:
    """A process under test: started, made ready, measured, stopped."""

    name = ""
    stores = True  # readings end in InfluxDB (else: the consumer reports what it received)
    probe_readings = 0  # readings stored before the run to prove readiness
    peak_rss = 0  # bytes, for consumers that report it themselves

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, target: Target, messages: int) -> None:
        """Start and return once the consumer would not miss a reading."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The processes whose CPU and memory count as the consumer's."""
        return [p.pid for p in self.procs]

    def received(self) -> tuple[int, float]:
        """For consumers that do not store: (received, monotonic time of the last message)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Terminate the processes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


class BarePaho(Consumer):
    """bench/bare_paho.py: empty callback, own process."""

    stores = False

    def __init__(self, protocol: str) -> None:
        super().__init__()
        self.protocol = protocol
        self.name = f"paho {protocol}"

    def start(self, target: Target, messages: int) -> None:  # noqa: D102
        proc = spawn(
            [
                sys.executable,
                str(BENCH / "bare_paho.py"),
                "--port",
                str(PORT),
                "--topic",
                f"{target.prefix}/#",
                "--protocol",
                self.protocol,
                "--expect",
                str(messages),
                "--stall",
                str(STALL_S),
            ],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bare paho subscriber did not start")

    def received(self) -> tuple[int, float]:  # noqa: D102
        proc = self.procs[0]
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        if len(words) != 4 or words[0] != b"done":
            raise RuntimeError("the bare paho subscriber failed")
        self.peak_rss = int(words[3]) * 1024  # it may have exited before /proc is read
        return int(words[1]), float(words[2])


class Naive(Consumer):
    """bench/naive_ingester.py."""

    name = "naive"
    probe_readings = 1

    def start(self, target: Target, messages: int) -> None:  # noqa: ARG002, D102
        env = child_env(
            BENCH_MQTT_PORT=str(PORT),
            BENCH_TOPIC=f"{target.prefix}/#",
            BENCH_INFLUX_URL=INFLUX,
            BENCH_INFLUX_DB=target.db,
        )
        self.procs.append(spawn([sys.executable, str(BENCH / "naive_ingester.py")], env=env))
        target.probe()


class NodeRed(Consumer):
    """Node-RED with node-red-contrib-influxdb, headless, its own user dir, the flow in bench/."""

    name = "node-red"
    probe_readings = 1

    def __init__(self, red_js: Path) -> None:
        super().__init__()
        self.red_js = red_js
        self.user_dir: Path | None = None

    def start(self, target: Target, messages: int) -> None:  # noqa: ARG002, D102
        self.user_dir = Path(tempfile.mkdtemp(prefix="nodered-", dir=CACHE))
        shutil.copy(BENCH / "nodered_flow.json", self.user_dir / "flows.json")
        env = child_env(
            BENCH_MQTT_PORT=str(PORT),
            BENCH_TOPIC=f"{target.prefix}/#",
            BENCH_INFLUX_PORT=str(INFLUX_PORT),
            BENCH_INFLUX_DB=target.db,
        )
        log = (self.user_dir / "node-red.log").open("wb")
        self.procs.append(
            spawn(
                [
                    "node",
                    str(self.red_js),
                    "--userDir",
                    str(self.user_dir),
                    "--port",
                    str(free_port()),
                    "-D",
                    "uiHost=127.0.0.1",
                    "-D",
                    "httpAdminRoot=false",
                    "-D",
                    "httpNodeRoot=false",
                    "-D",
                    "credentialSecret=false",
                    "flows.json",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while b"Connected to broker" not in (self.user_dir / "node-red.log").read_bytes():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"Node-RED did not connect; see {self.user_dir / 'node-red.log'}")
            time.sleep(0.1)
        target.probe()

    def stop(self) -> None:
        """Stop Node-RED; its log of the last measurement stays in the cache (node-red-last.log)."""
        super().stop()
        if self.user_dir is not None:
            shutil.copy(self.user_dir / "node-red.log", CACHE / "node-red-last.log")
            shutil.rmtree(self.user_dir, ignore_errors=True)


def subscribed(port: int) -> bool:
    """Whether the ingester behind this metrics port has its subscription (publishing earlier loses data)."""
    # One ingester, or a worker of `run --workers N` (each serves its own port).
    return scrape(f"http://127.0.0.1:{port}/metrics", timeout=1).get("mqtt_subscribed") == 1


class Oxyfleet(Consumer):
    """``oxyfleet run`` as shipped, N processes (a shared subscription when N > 1) or ``--workers N``."""

    def __init__(
        self, protocol: str | None = None, processes: int = 1, workers: int = 1, root: Path = ROOT
    ) -> None:
        super().__init__()
        self.protocol, self.processes, self.workers, self.root = protocol, processes, workers, root
        self.name = REFERENCE if protocol is None else f"{REFERENCE} {protocol}"
        if workers > 1:
            self.name = f"{REFERENCE} w{workers}"
        self.spool = Path(tempfile.mkdtemp(prefix="spool-", dir=CACHE))
        self.tag = uuid.uuid4().hex[:8]
        self.startup_s = 0.0

    def client_id(self, i: int) -> str:
        """Stable per measurement: a restart resumes the persistent session (the drain needs that)."""
        return f"bench-ingest-{self.tag}-{i}"

    def launch(self, target: Target) -> list[int]:
        """Start the processes; return their metrics ports."""
        ports = []
        for i in range(self.processes):
            port = free_port()
            ports.append(port)
            env = child_env(
                OXYFLEET_MQTT__PORT=str(PORT),
                OXYFLEET_MQTT__CLIENT_ID=self.client_id(i),
                OXYFLEET_MQTT__TOPIC_PREFIX=target.prefix,
                OXYFLEET_INFLUX__URL=INFLUX,
                OXYFLEET_INFLUX__DATABASE=target.db,
                OXYFLEET_METRICS_PORT=str(port),
                OXYFLEET_LOG_LEVEL="warning",
                OXYFLEET_INSTANCE="bench",
                OXYFLEET_SPOOL__DIR=str(self.spool / str(i)),  # the spool is on, as shipped; one each
            )
            if self.protocol is not None:
                env["OXYFLEET_MQTT__PROTOCOL"] = self.protocol
            if self.processes > 1 or self.workers > 1:
                env["OXYFLEET_MQTT__SHARED_GROUP"] = "bench"
            workers = ["--workers", str(self.workers)] if self.workers > 1 else []
            self.procs.append(
                spawn([sys.executable, "-m", "oxyfleet", "run", *workers], env=env, cwd=self.root)
            )
            ports.extend(port + w for w in range(1, self.workers))  # each worker's metrics: port + w
        return ports

    def pids(self) -> list[int]:
        """The processes, and the workers of a ``--workers`` supervisor."""
        pids = super().pids()
        for pid in list(pids):
            with contextlib.suppress(psutil.Error):
                pids += [c.pid for c in psutil.Process(pid).children()]
        return pids

    def start(self, target: Target, messages: int) -> None:  # noqa: ARG002, D102
        started = time.monotonic()
        ports = self.launch(target)
        deadline = started + 60
        while not all(subscribed(p) for p in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("oxyfleet run did not start")
            time.sleep(0.05)
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop, and remove the persistent sessions from the broker (abandoned ones stall its autosave)."""
        super().stop()
        ids = [self.client_id(i) for i in range(self.processes)]
        if self.workers > 1:
            ids = [f"{self.client_id(0)}-{w}" for w in range(self.workers)]
        for client_id in ids:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
            try:
                client.connect(HOST, PORT)
                client.loop(1.0)
                client.disconnect()
            except OSError:
                pass
        shutil.rmtree(self.spool, ignore_errors=True)


@dataclass
class Result:
    """One consumer in one run."""

    consumer: str
    messages: int
    stored: int
    seconds: float
    cpu_us: dict[str, float | None]
    peak_rss_mb: float
    points: dict[str, int] = field(default_factory=dict)
    startup_s: float | None = None

    @property
    def rate(self) -> float:
        """Readings per second, first publish (or consumer start, for the drain) -> all stored."""
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        """Published and not stored (or not received)."""
        return self.messages - self.stored

    @property
    def points_per_reading(self) -> float | None:
        """Points written, all measurements, per reading published (None for the bare subscribers)."""
        return sum(self.points.values()) / self.messages if self.points else None

    def as_dict(self) -> dict[str, object]:
        """For --json."""
        return {
            **asdict(self),
            "rate": self.rate,
            "lost": self.lost,
            "points_per_reading": self.points_per_reading,
        }


def publisher(
    target: Target, messages: int, units: int, mode: str, max_in_flight: int
) -> subprocess.Popen[bytes]:
    """Start bench/publisher.py (it encodes first, then publishes)."""
    return spawn(
        [
            sys.executable,
            str(BENCH / "publisher.py"),
            "--port",
            str(PORT),
            "--prefix",
            target.prefix,
            "--messages",
            str(messages),
            "--units",
            str(units),
            "--mode",
            mode,
            "--max-in-flight",
            str(max_in_flight),
        ],
        stdout=subprocess.PIPE,
        env=child_env(),
    )


def published(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """The publisher's JSON line (first publish, last ack, its CPU)."""
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("the publisher failed")
    result: dict[str, float] = json.loads(out)
    return result


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


class CpuMeter:
    """CPU seconds of named processes, and of the rest of the machine, between two snapshots.

    "other" is the machine's busy time less every process the benchmark knows (the consumer, Mosquitto,
    InfluxDB, the publisher, this harness): what other users of the machine took during the measurement.
    On a shared machine it says how far a figure can be trusted.
    """

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = {**pids, "harness": [os.getpid()]}
        self.before = self._read()
        self.machine_before = machine_busy_s()

    def _read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in self.pids.items():
            try:
                out[name] = sum(cpu_seconds(p) for p in pids) if pids else None
            except OSError:
                out[name] = None
        return out

    def per_message(self, messages: int, unwatched_s: float = 0.0) -> dict[str, float | None]:
        """µs per message since the first snapshot, per process and "other".

        ``unwatched_s``: CPU seconds of our own processes not watched here (the publisher; the drained
        ingester, started after the first snapshot), kept out of "other".
        """
        after = self._read()
        machine = machine_busy_s() - self.machine_before
        out: dict[str, float | None] = {}
        for name, before in self.before.items():
            now = after[name]
            out[name] = None if before is None or now is None else (now - before) / messages * 1e6
        known = [v for v in out.values() if v is not None]
        out["other"] = None
        if len(known) == len(out) - 1:
            out["other"] = max(0.0, machine / messages * 1e6 - sum(known) - unwatched_s / messages * 1e6)
        return out


def services() -> dict[str, list[int]]:
    """Mosquitto's and InfluxDB's pids (empty when not started by scripts/services)."""
    return {name: [pid] if (pid := service_pid(name)) else [] for name in ("mosquitto", "influxdb")}


def needed(points: dict[str, int]) -> int:
    """Points that must be written before the run is over: all but the ingester's periodic stats."""
    return sum(n for name, n in points.items() if name != Measurement.STATS)


def measure(consumer: Consumer, messages: int, units: int, max_in_flight: int) -> Result:
    """Live readings at full speed into a ready consumer; until all are queryable (or received)."""
    target = Target()
    try:
        consumer.start(target, messages)
        cpu = CpuMeter({"consumer": consumer.pids(), **services()})
        pub = publisher(target, messages, units, "live", max_in_flight)
        if consumer.stores:
            stored, history = target.wait_stored(
                messages + consumer.probe_readings, lambda: pub.poll() is None
            )
        else:
            stored, done_at = consumer.received()
        sent = published(pub)
        cpu_us = {
            **cpu.per_message(messages, sent["cpu_total_s"]),
            "publisher": sent["cpu_s"] / messages * 1e6,
        }
        rss = max(peak_rss(p) for p in consumer.pids()) if consumer.stores else consumer.peak_rss
        points: dict[str, int] = {}
        if consumer.stores:
            points = target.points()
            done_at = queryable_at(history, needed(points))
            stored -= consumer.probe_readings
            points[Measurement.TELEMETRY] -= consumer.probe_readings
    finally:
        consumer.stop()
        target.close()
    startup = consumer.startup_s if isinstance(consumer, Oxyfleet) else None
    return Result(
        consumer.name, messages, stored, done_at - sent["first"], cpu_us, rss / 2**20, points, startup
    )


def measure_drain(messages: int, units: int, max_in_flight: int, processes: int) -> Result:
    """A backlog of late readings queued in the broker, then ``oxyfleet run`` started to drain it."""
    target = Target()
    consumer = Oxyfleet(processes=processes)
    consumer.name = f"{REFERENCE} drain"
    try:
        consumer.start(target, messages)  # creates the persistent session(s)
        Consumer.stop(consumer)  # stop only the processes: the sessions stay
        published(publisher(target, messages, units, "backlog", max_in_flight))
        cpu = CpuMeter(services())
        started = time.monotonic()
        consumer.launch(target)
        stored, history = target.wait_stored(messages)
        consumer_s = sum(cpu_seconds(p) for p in consumer.pids())  # all of it: the processes started here
        cpu_us = {"consumer": consumer_s / messages * 1e6, **cpu.per_message(messages, consumer_s)}
        rss = max(peak_rss(p) for p in consumer.pids())
        points = target.points()
        done_at = queryable_at(history, needed(points))
    finally:
        consumer.stop()
        target.close()
    return Result(consumer.name, messages, stored, done_at - started, cpu_us, rss / 2**20, points)


def measure_latency(rate: float, seconds: float, units: int, processes: int) -> dict[str, float]:
    """Live readings at ``rate`` for ``seconds`` into `oxyfleet run`; latency publish -> queryable."""
    target = Target()
    consumer = Oxyfleet(processes=processes)
    polls: list[tuple[float, int]] = []
    stop = threading.Event()
    messages = int(rate * seconds)
    try:
        consumer.start(target, messages)
        poller_reader = InfluxQL(INFLUX, target.db)

        def poll() -> None:
            # The shard counter includes the ingester's stats points (one per 10 s): the k-th reading is
            # then matched at most a few readings early, about a millisecond at 2,000 msg/s.
            while not stop.is_set():
                polls.append((time.time() * 1000, shard_points(poller_reader, target.db)))
                time.sleep(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        run_load(
            host=HOST,
            port=PORT,
            prefix=target.prefix,
            messages=messages,
            units=units,
            qos=1,
            rate=rate,
            live_ts=True,
        )
        deadline = time.monotonic() + 120
        while target.stored() < messages and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        poller.join(10)
        poller_reader.close()
        query = f"SELECT purity_pct FROM {Measurement.TELEMETRY}"  # noqa: S608 - constants
        times = sorted(int(r["time"]) for r in target.reader.rows(query))
    finally:
        stop.set()
        consumer.stop()
        target.close()
    latencies, k = [], 0
    for at_ms, n in polls:
        while k < min(n, len(times)):
            latencies.append(at_ms - times[k])
            k += 1
    return {**percentiles(latencies), "lost": messages - len(times)}


# --- statistics and the summary ----------------------------------------------------------------------


def queryable_at(history: Sequence[tuple[float, int]], needed: int) -> float:
    """The first poll at which InfluxDB had accepted ``needed`` points (else: when the counter last moved).

    ``needed`` is every point of the run but the ingester's own periodic stats; a stats point written
    before the end can make the counter reach it one point early, which moves the time by nothing
    measurable (points arrive thousands per batch). Duplicate writes would count twice: there are none
    without faults.
    """
    for at, written in history:
        if written >= needed:
            return at
    final = history[-1][1] if history else 0
    return next((at for at, written in history if written == final), history[-1][0] if history else 0.0)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank); NaN when there is nothing."""
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """'median (min-max)' of the values that exist; 'n/a' when none does."""
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    med = fmt.format(statistics.median(present))
    if len(present) == 1:
        return med
    return f"{med} ({fmt.format(min(present))}{DASH}{fmt.format(max(present))})"


def ratios(runs: Sequence[dict[str, Result]], reference: str) -> dict[str, list[float]]:
    """Per peer, reference msg/s / peer msg/s in each run where both were measured (same run).

    oxyfleet's own variants are not peers: they get no ratio.
    """
    out: dict[str, list[float]] = {}
    for run in runs:
        ref = run.get(reference)
        if ref is None or ref.rate <= 0:
            continue
        for name, result in run.items():
            if not name.startswith(REFERENCE) and result.rate > 0:
                out.setdefault(name, []).append(ref.rate / result.rate)
    return out


def summary(
    runs: Sequence[dict[str, Result]], references: Sequence[str] = (REFERENCE, f"{REFERENCE} 3.1.1")
) -> list[list[str]]:
    """The table: one row per consumer (in the order measured), the header first."""
    present = [ref for ref in references if any(ref in run for run in runs)]
    header = [
        "consumer",
        "msg/s",
        *(f"{ref} / it" for ref in present),
        "lost",
        "consumer µs/msg",
        "Mosquitto µs/msg",
        "InfluxDB µs/msg",
        "publisher µs/msg",
        "rest of the machine µs/msg",
        "peak RSS MB",
        "points/reading",
    ]
    names: list[str] = []
    for run in runs:
        names.extend(n for n in run if n not in names)
    rel = {ref: ratios(runs, ref) for ref in present}
    rows = [header]
    for name in names:
        results = [run[name] for run in runs if name in run]

        def cpu(key: str, results: list[Result] = results) -> str:
            return spread([r.cpu_us.get(key) for r in results], 1)

        rows.append(
            [
                name,
                spread([r.rate for r in results]),
                *(spread(rel[ref].get(name, []), 2) if name in rel[ref] else "" for ref in present),
                f"{sum(r.lost for r in results):,}",
                cpu("consumer"),
                cpu("mosquitto"),
                cpu("influxdb"),
                cpu("publisher"),
                cpu("other"),
                spread([r.peak_rss_mb for r in results]),
                spread([r.points_per_reading for r in results], 3),
            ]
        )
    return rows


def markdown(rows: list[list[str]]) -> str:
    """A Markdown table (what docs/benchmarks.md shows)."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines.extend("| " + " | ".join(row) + " |" for row in rows[1:])
    return "\n".join(lines)


# --- setup --------------------------------------------------------------------------------------------


def version(command: list[str]) -> str:
    """First line a tool prints about its version ('?' if it cannot say)."""
    try:
        out = execute(command, timeout=20)
    except OSError:
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> str:
    """What the figures were measured on."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu_model = next(
        (x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), platform.processor()
    )
    mem_kb = psutil.virtual_memory().total / 1024
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return (
        f"{os.cpu_count()} cores, {cpu_model}, {mem_kb / 2**20:.0f} GiB RAM; Linux {platform.release()}; "
        f"Python {platform.python_version()}, paho-mqtt {importlib.metadata.version('paho-mqtt')}; {version([mosquitto, '-h'])}; "
        f"{version(['influxd', 'version'])}; Node.js {version(['node', '--version'])}"
    )


def install_node_red() -> tuple[Path | None, str]:
    """Node-RED and node-red-contrib-influxdb into the cache (once): (red.js or None, what happened)."""
    prefix = CACHE / "node-red"
    red_js = prefix / "node_modules" / "node-red" / "red.js"
    wanted = {p.rsplit("@", 1)[0]: p.rsplit("@", 1)[1] for p in NODE_RED_PACKAGES}

    def installed() -> bool:
        for name, ver in wanted.items():
            try:
                meta = json.loads((prefix / "node_modules" / name / "package.json").read_text())
            except (OSError, ValueError):
                return False
            if meta.get("version") != ver:
                return False
        return True

    if installed():
        return (
            red_js,
            f"Node-RED {wanted['node-red']}, node-red-contrib-influxdb {wanted['node-red-contrib-influxdb']}",
        )
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "Node-RED skipped: node or npm is not installed"
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(NODE_RED_PACKAGES)} into {prefix} (npm)", flush=True)
    out = execute(
        [
            "npm",
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            *NODE_RED_PACKAGES,
        ],
        timeout=900,
    )
    if out.returncode != 0 or not installed():
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return None, f"Node-RED skipped: npm install failed ({' / '.join(tail)})"
    return (
        red_js,
        f"Node-RED {wanted['node-red']}, node-red-contrib-influxdb {wanted['node-red-contrib-influxdb']}",
    )


def factories(
    names: Sequence[str], red_js: Path | None, processes: int, base: Path | None = None
) -> dict[str, Callable[[], Consumer]]:
    """How to make each consumer asked for (Node-RED only if it installed, base only with --base)."""
    known: dict[str, Callable[[], Consumer]] = {
        "paho 3.1.1": lambda: BarePaho("3.1.1"),
        "paho 5": lambda: BarePaho("5"),
        "naive": Naive,
        "oxyfleet": lambda: Oxyfleet(None, processes),
        "oxyfleet 5": lambda: Oxyfleet("5", processes),
        "oxyfleet w2": lambda: Oxyfleet(workers=2),
    }
    if red_js is not None:
        known["node-red"] = lambda: NodeRed(red_js)
    if base is not None:

        def make_base(root: Path = base) -> Consumer:
            consumer = Oxyfleet(None, processes, root=root)
            consumer.name = "base"
            return consumer

        known["base"] = make_base
    return {n: known[n] for n in names if n in known}


def main() -> None:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--consumers", nargs="+", choices=CONSUMERS, default=list(CONSUMERS))
    parser.add_argument(
        "--processes", type=int, default=1, help="oxyfleet processes (a shared subscription)."
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=1000, help="Publisher's unacknowledged QoS 1 cap."
    )
    parser.add_argument("--latency-rate", type=float, default=2000.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="0: no latency measurement.")
    parser.add_argument("--json", type=Path, help="Also write every result to this file.")
    parser.add_argument(
        "--base", type=Path, help="Another checkout of oxyfleet, measured as consumer base (A/B)."
    )
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}", flush=True)
    red_js, red_note = install_node_red() if "node-red" in args.consumers else (None, "")
    if red_note:
        print(red_note, flush=True)
    if "base" in args.consumers and (args.base is None or not (args.base / "oxyfleet").is_dir()):
        parser.error("consumer base needs --base DIR, a checkout of oxyfleet")
    make = factories(args.consumers, red_js, args.processes, args.base and args.base.resolve())
    print(
        f"load: {args.messages:,} QoS 1 readings from {args.units:,} units per measurement, pre-encoded, at most "
        f"{args.max_in_flight:,} unacknowledged; {args.processes} oxyfleet process(es); {args.runs} runs",
        flush=True,
    )
    runs: list[dict[str, Result]] = []
    latency: list[dict[str, float]] = []
    started = time.monotonic()
    for i in range(args.runs):
        run: dict[str, Result] = {}
        for name in args.consumers:
            if name == "oxyfleet drain":
                r = measure_drain(args.messages, args.units, args.max_in_flight, args.processes)
            elif name in make:
                r = measure(make[name](), args.messages, args.units, args.max_in_flight)
            else:
                continue
            run[name] = r
            ppr = f"{r.points_per_reading:.3f}" if r.points_per_reading is not None else "n/a"
            cpu = "  ".join(f"{k} {v:5.1f}" if v is not None else f"{k} n/a" for k, v in r.cpu_us.items())
            print(
                f"run {i + 1} {name:15} {r.rate:8,.0f} msg/s  lost {r.lost:<6,} points/reading {ppr}  "
                f"peak rss {r.peak_rss_mb:5.1f} MB  cpu us/msg: {cpu}"
                + (f"  start-up {r.startup_s:.1f} s" if r.startup_s else ""),
                flush=True,
            )
        runs.append(run)
        if args.latency_seconds > 0:
            lat = measure_latency(args.latency_rate, args.latency_seconds, args.units, args.processes)
            latency.append(lat)
            print(
                f"run {i + 1} latency at {args.latency_rate:,.0f} msg/s: p50 {lat['p50_ms']:.0f} ms  "
                f"p99 {lat['p99_ms']:.0f} ms  lost {lat['lost']:.0f}",
                flush=True,
            )
    print(f"\n{args.runs} runs in {time.monotonic() - started:.0f} s; median (min{DASH}max):\n")
    print(markdown(summary(runs)))
    if latency:
        print(
            f"\noxyfleet publish -> queryable at {args.latency_rate:,.0f} msg/s: p50 "
            f"{spread([x['p50_ms'] for x in latency])} ms, p99 {spread([x['p99_ms'] for x in latency])} ms, "
            f"lost {sum(x['lost'] for x in latency):,.0f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "runs": [{n: r.as_dict() for n, r in run.items()} for run in runs],
                    "latency": latency,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
