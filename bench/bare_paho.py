"""A bare paho-mqtt subscriber with an empty callback: the ceiling for any paho-based consumer here.

Runs in its own process (a subscriber sharing a process with the load generator measures the GIL, not
paho). Protocol: prints ``ready`` once subscribed, then ``done <received> <monotonic time of the last
message> <peak RSS, KiB>`` when it has ``--expect`` messages or nothing new came for ``--stall`` seconds.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def peak_rss_kib() -> int:
    """VmHWM of this process (``ru_maxrss`` would include the parent's, inherited through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def main() -> None:
    """Subscribe, count, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1)
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--stall", type=float, default=15.0)
    args = parser.parse_args()

    received = 0
    last = time.monotonic()
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(*_args: object) -> None:
        nonlocal received, last
        received += 1
        if received >= args.expect:
            last = time.monotonic()
            done.set()

    v5 = args.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-bare-{time.time_ns() % 10**9}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(args.topic, qos=args.qos)
    client.connect(args.host, args.port)
    client.loop_start()
    if not subscribed.wait(30):
        raise SystemExit("bare paho: not subscribed within 30 s")
    print("ready", flush=True)
    seen = 0
    while not done.wait(1.0):
        if received != seen:
            seen, last = received, time.monotonic()
        elif time.monotonic() - last > args.stall:
            break
    print(f"done {received} {last} {peak_rss_kib()}", flush=True)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
