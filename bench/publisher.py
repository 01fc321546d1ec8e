"""The benchmark's publisher: the whole stream encoded before the clock starts, sent from its own process.

A consumer can only be measured if the publisher is never the bottleneck and leaves the two cores to the
consumer, Mosquitto and InfluxDB. So every MQTT 3.1.1 PUBLISH packet (topic, payload, packet id) is
built first and joined into chunks; the timed part only writes chunks and counts PUBACKs. One thread does
both (no lock or semaphore per message): it sends a chunk whenever the publishes outstanding (sent, not
yet acknowledged) stay within ``max_in_flight``, otherwise it reads acknowledgements. The cap matters:
with far more QoS 1 publishes outstanding than Mosquitto's in-flight window, the broker's work grows
quadratically (see shared NOTES), and the benchmark would measure that instead of the consumer.

Readings: M readings round-robin over U units, reading i from unit ``i % U`` with ``ts = base + i // U``
(ms), so every (unit, ts) is distinct and "M published" means "M points expected". ``live`` stamps them
a minute ahead of the encoding time, so that none turns late (older than the ingester's 30 s late
threshold) during a run; ``backlog`` stamps them an hour old, as after an outage: every one is late.

Run as a script it prints one JSON line: the monotonic times (system-wide clock, comparable with the
harness's) of the first publish and of the last acknowledgement, and its CPU time while publishing and in all.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from dataclasses import dataclass
from typing import Final, Literal

from fleetsim.loadgen import connect_packet, publish_packet

__all__ = ["AckCounter", "EncodedStream", "encode_stream", "publish"]

TsMode = Literal["live", "backlog"]
_LIVE_AHEAD_MS: Final = 60_000  # the ingester accepts readings up to 5 minutes ahead
_BACKLOG_AGE_MS: Final = 3_600_000
_PAYLOAD: Final = (
    b'{"ts":%d,"seq":%d,"purity_pct":93.1,"flow_lpm":5.02,"setpoint_lpm":5.0,"outlet_kpa":55.2,'
    b'"temp_c":36.5,"running":true,"power":"mains"}'
)
_PUBACK: Final = 0x40


def unit_name(index: int) -> str:
    """Unit ids of the benchmark fleet (the same as the simulator's load mode)."""
    return f"LOAD-{index:06d}"


@dataclass(frozen=True, slots=True)
class EncodedStream:
    """Chunks of PUBLISH packets ready to write, and how many messages each holds."""

    chunks: list[bytes]
    counts: list[int]
    first_ts: int
    last_ts: int

    @property
    def messages(self) -> int:
        """Messages in the whole stream."""
        return sum(self.counts)


def encode_stream(
    prefix: str,
    messages: int,
    units: int,
    qos: int,
    *,
    mode: TsMode = "live",
    now_ms: int | None = None,
    chunk: int = 250,
) -> EncodedStream:
    """Every PUBLISH of the run, built before anything is sent (see the module docstring for the readings)."""
    if messages < 1 or units < 1 or chunk < 1:
        raise ValueError("messages, units and chunk must be at least 1")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    base = now + _LIVE_AHEAD_MS if mode == "live" else now - _BACKLOG_AGE_MS
    topics = [f"{prefix}/concentrator/{unit_name(u)}/telemetry".encode() for u in range(units)]
    chunks: list[bytes] = []
    counts: list[int] = []
    for start in range(0, messages, chunk):
        end = min(start + chunk, messages)
        chunks.append(
            b"".join(
                publish_packet(
                    topics[i % units], _PAYLOAD % (base + i // units, i // units), qos, i % 65535 + 1
                )
                for i in range(start, end)
            )
        )
        counts.append(end - start)
    return EncodedStream(chunks, counts, base, base + (messages - 1) // units)


class AckCounter:
    """Counts PUBACKs in the byte stream from the broker (4 bytes each: 0x40, 2, packet id)."""

    def __init__(self) -> None:
        self.acked = 0
        self._rest = b""

    def feed(self, data: bytes) -> int:
        """Count the complete PUBACKs in ``data`` (a packet may straddle two reads); return the total."""
        buffer = self._rest + data
        whole = len(buffer) - len(buffer) % 4
        if buffer[0:whole:4].count(_PUBACK) != whole // 4:
            raise ConnectionError(f"the broker sent something other than PUBACKs: {buffer[:16].hex()}")
        self.acked += whole // 4
        self._rest = buffer[whole:]
        return self.acked


def publish(host: str, port: int, stream: EncodedStream, qos: int, max_in_flight: int) -> tuple[float, float]:
    """Send the stream; return the monotonic times of the first write and of the last PUBACK (or write)."""
    if qos and max(stream.counts) > max_in_flight:
        raise ValueError("max_in_flight must hold at least one chunk")
    sock = socket.create_connection((host, port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"bench-pub-{time.time_ns() % 10**9}"))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"the broker refused the publisher: {connack.hex()}")
    acks = AckCounter()
    sent = 0
    first = time.monotonic()
    for data, count in zip(stream.chunks, stream.counts, strict=True):
        while qos and sent + count - acks.acked > max_in_flight:
            received = sock.recv(65536)
            if not received:
                raise ConnectionError("the broker closed the connection")
            acks.feed(received)
        sock.sendall(data)
        sent += count
    while qos and acks.acked < sent:
        received = sock.recv(65536)
        if not received:
            raise ConnectionError(f"the broker closed the connection after {acks.acked} of {sent} PUBACKs")
        acks.feed(received)
    last = time.monotonic()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return first, last


def main() -> None:
    """Encode, then publish, then print the JSON result line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--units", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1)
    parser.add_argument("--mode", choices=["live", "backlog"], default="live")
    parser.add_argument("--max-in-flight", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    stream = encode_stream(args.prefix, args.messages, args.units, args.qos, mode=args.mode)
    encode_s = time.perf_counter() - started
    cpu_before = time.process_time()
    first, last = publish(args.host, args.port, stream, args.qos, args.max_in_flight)
    cpu_s = time.process_time() - cpu_before
    cpu_total_s = time.process_time()  # start-up and encoding included
    result = {"first": first, "last": last, "cpu_s": cpu_s, "cpu_total_s": cpu_total_s, "encode_s": encode_s}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
