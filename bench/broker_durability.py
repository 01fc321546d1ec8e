"""Broker durability benchmark: what a Mosquitto SIGKILL loses while it holds the ingester's backlog, per config.

Method (issue 19): a private Mosquitto 2.0 (the configuration of scripts/services and docker/mosquitto,
only the autosave lines varied) holds QoS 1 messages for a persistent MQTT 5 session that is away, which
is the broker's state while the ingester's spool is full or the ingester is down. The load generator
(its own process) publishes ``--seconds`` of readings at ``--rate`` (2,000 msg/s is the fleet of
DESIGN.md). Mosquitto's CPU time and bytes written (psutil: the process's CPU times and I/O counters) are sampled over the run,
then Mosquitto is SIGKILLed right after the last PUBACK, restarted on the same data directory, and the
session is drained: lost = PUBACKed by the broker - delivered after the restart.

A device's view of the cost: a probe publishes one QoS 1 message every 100 ms on its own connection
and records the PUBACK latency (a broker busy saving answers nobody). ``--backlog N`` first fills the
session with N messages at full speed, because a save writes the whole store: its cost grows with what
the broker holds, and the broker holds most exactly when the ingester cannot take anything.

Usage: .venv/bin/python bench/broker_durability.py [--rate 2000] [--seconds 60] [--backlog 0] [--port 51950]
Needs only the mosquitto binary (scripts/services installs it). Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "durability/oxygen"
# The shipped autosave setting first, then saving after N changes (autosave_on_changes true).
VARIANTS: dict[str, list[str]] = {
    "shipped: autosave_interval 30 (seconds)": ["autosave_interval 30"],
    "autosave_interval 10 (seconds)": ["autosave_interval 10"],
    "autosave_interval 5 (seconds)": ["autosave_interval 5"],
    "autosave_interval 1 (seconds)": ["autosave_interval 1"],
    "autosave_on_changes, every 100000 changes": ["autosave_on_changes true", "autosave_interval 100000"],
    "autosave_on_changes, every 10000 changes": ["autosave_on_changes true", "autosave_interval 10000"],
    "autosave_on_changes, every 1000 changes": ["autosave_on_changes true", "autosave_interval 1000"],
}


def mosquitto_conf(data: Path, port: int, autosave: list[str]) -> str:
    """scripts/services' configuration (docker/mosquitto's limits) with the autosave lines under test."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data}/",
        *autosave,
        "max_queued_messages 2000000",
        "max_queued_bytes 0",
        "max_inflight_messages 0",
        "max_inflight_bytes 0",
        "max_packet_size 1048576",
        "persistent_client_expiration 14d",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    return "\n".join(lines) + "\n"


def port_open(port: int) -> bool:
    """Whether something listens, so a stray broker is never measured instead of ours."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_broker(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Mosquitto on ``conf`` and wait until it accepts connections."""
    if port_open(port):
        raise SystemExit(f"port {port} is taken: pick another with --port")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (conf.parent / "mosquitto.log").open("ab")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=log)  # noqa: S603 - our own paths
    deadline = time.monotonic() + 300  # reloading a big store takes a while
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((conf.parent / "mosquitto.log").read_text()[-2000:])
        try:
            c = mqtt.Client(CallbackAPIVersion.VERSION2)
            c.connect("127.0.0.1", port)
        except OSError:
            time.sleep(0.1)
            continue
        c.disconnect()
        return proc
    raise SystemExit("mosquitto did not start:\n" + (conf.parent / "mosquitto.log").read_text()[-2000:])


def cpu_and_writes(pid: int) -> tuple[float, int]:
    """CPU seconds and bytes written to storage so far by ``pid``."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    return times.user + times.system, proc.io_counters().write_bytes


def session(port: int, on_message: mqtt.CallbackOnMessage | None = None) -> mqtt.Client:
    """The away subscriber: a persistent MQTT 5 session, as the ingester has."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durability-sink", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 65535
    if on_message is not None:
        client.on_message = on_message
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    return client


class Probe:
    """PUBACK latency of one QoS 1 message every 100 ms, as a device would see it."""

    def __init__(self, port: int) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durability-probe")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            started = time.monotonic()
            info = self.client.publish("durability/probe", b"x", qos=1)
            info.wait_for_publish(30)
            self.latencies.append(time.monotonic() - started)

    def stop(self) -> dict[str, float]:
        """Stop probing; the p99 and the worst PUBACK latency in ms."""
        self._stop.set()
        self._thread.join(35)
        self.client.disconnect()
        self.client.loop_stop()
        ordered = sorted(self.latencies) or [0.0]
        return {
            "probe_p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
            "probe_max_ms": round(1000 * ordered[-1], 1),
        }


def publish_load(port: int, messages: int, rate: int, unit_prefix: str) -> float:
    """The load generator in its own process; returns the seconds it took (every PUBACK received)."""
    env = {**os.environ, "OXYFLEET_MQTT__PORT": str(port), "OXYFLEET_MQTT__TOPIC_PREFIX": PREFIX}
    started = time.monotonic()
    load = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable, "-m", "oxyfleet", "simulate", "--load", "--qos=1",
            f"--messages={messages}", f"--rate={rate}", "--units=1000", f"--unit-prefix={unit_prefix}",
        ],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert f"published {messages} readings" in load.stdout, load.stdout + load.stderr
    return time.monotonic() - started


def run_variant(
    name: str, autosave: list[str], port: int, rate: int, seconds: int, backlog: int, drain_limit_s: float
) -> dict[str, object]:
    """Fill the away session for ``seconds`` at ``rate``, SIGKILL the broker, restart, count what is left."""
    work = Path(tempfile.mkdtemp(prefix="oxyfleet-durability-"))
    work.chmod(0o755)  # Mosquitto drops root for user mosquitto, which must reach its data directory
    data = work / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "mosquitto")
    conf = work / "mosquitto.conf"
    conf.write_text(mosquitto_conf(data, port, autosave))
    broker = start_broker(conf, port)
    try:
        sink = session(port)
        sink.subscribe(f"{PREFIX}/#", qos=1)
        time.sleep(0.5)
        sink.disconnect()
        sink.loop_stop()
        if backlog:
            publish_load(port, backlog, 0, "PRE")
        messages = rate * seconds
        cpu0, wr0 = cpu_and_writes(broker.pid)
        probe = Probe(port)
        elapsed = publish_load(port, messages, rate, "DUR")
        latency = probe.stop()
        cpu1, wr1 = cpu_and_writes(broker.pid)
        db_bytes = sum(p.stat().st_size for p in data.iterdir())
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        restarted = time.monotonic()
        broker = start_broker(conf, port)
        reload_s = time.monotonic() - restarted
        got: set[tuple[str, bytes]] = set()
        last = [time.monotonic()]
        lock = threading.Lock()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            with lock:
                got.add((msg.topic, bytes(msg.payload)))
                last[0] = time.monotonic()

        # The drain is the recovery a real ingester would do next; a broker busy saving slows it down.
        drain_started = time.monotonic()
        drain = session(port, on_message)
        while time.monotonic() - last[0] < 3 and time.monotonic() - drain_started < drain_limit_s:
            time.sleep(0.2)
        drained_s = last[0] - drain_started
        drain.disconnect()
        drain.loop_stop()
        return {
            "variant": name,
            "rate_target": rate,
            "rate_achieved": round(messages / elapsed),
            "published": messages,
            "backlog_before": backlog,
            "recovered": len(got),
            "lost": messages + backlog - len(got),
            **latency,
            "broker_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "broker_write_mb_per_s": round((wr1 - wr0) / elapsed / 1e6, 1),
            "store_mb_at_kill": round(db_bytes / 1e6, 1),
            "restart_s": round(reload_s, 1),
            "drain_msgs_per_s": round(len(got) / max(drained_s, 0.001)),
            "drain_complete": time.monotonic() - last[0] >= 3,
        }
    finally:
        broker.kill()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Run every variant (or those matching --only) and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--backlog", type=int, default=0, help="messages held before the measured run")
    parser.add_argument("--port", type=int, default=51950)
    parser.add_argument("--drain-limit", type=float, default=600, help="give up draining after this long")
    parser.add_argument("--only", default="", help="run the variants whose name contains this")
    args = parser.parse_args()
    for name, autosave in VARIANTS.items():
        if args.only in name:
            print(
                json.dumps(
                    run_variant(
                        name, autosave, args.port, args.rate, args.seconds, args.backlog, args.drain_limit
                    )
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
