"""Load mode of the simulator: publish M readings from N units as fast as possible (or at a target rate).

The publisher must never be the bottleneck when the ingester is measured, and paho-mqtt spends tens of
microseconds per message. So this speaks MQTT 3.1.1 directly over a socket: payloads are formatted from a
byte template, packets are written in large chunks, and PUBACKs (QoS 1) are counted by a reader thread
that also caps the messages in flight. Several processes can share the work (``processes``).

Every reading has a distinct (unit, ts), so "M published" means "M points expected" downstream.
"""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["LoadResult", "connect_packet", "publish_packet", "run_load"]

_CHUNK: Final = 256
_MAX_IN_FLIGHT: Final = 2000


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def connect_packet(
    client_id: str, username: str | None = None, password: str | None = None, keepalive: int = 60
) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session (a publisher needs no session); shared with bench/."""
    flags = 0x02  # clean session: a load generator needs no session
    payload = _string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    variable = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int) -> bytes:
    """One PUBLISH; ``packet_id`` is ignored at QoS 0."""
    variable = _string(topic) + (struct.pack("!H", packet_id) if qos else b"")
    return bytes([0x30 | (qos << 1)]) + _varint(len(variable) + len(payload)) + variable + payload


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run achieved."""

    messages: int
    seconds: float
    processes: int

    @property
    def rate(self) -> float:
        """Messages per second, first publish to last broker acknowledgement (QoS 1) or last write (QoS 0)."""
        return self.messages / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class _Job:
    host: str
    port: int
    prefix: str
    units: list[str]
    first: int
    count: int
    qos: int
    rate: float
    base_ts: int
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None
    live_ts: bool = False


def _open(job: _Job, client_id: str) -> socket.socket:
    sock: socket.socket = socket.create_connection((job.host, job.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if job.tls:
        context = ssl.create_default_context(cafile=job.ca_file)
        sock = context.wrap_socket(sock, server_hostname=job.host)
    sock.sendall(connect_packet(client_id, job.username, job.password))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        code = connack[3] if len(connack) >= 4 else "none"
        raise ConnectionError(f"broker refused the load generator (CONNACK return code {code})")
    return sock


def _worker(job: _Job) -> tuple[float, float]:  # noqa: C901, PLR0915 - connect, publish, count acks in one place
    """Publish ``job.count`` readings; return (start, end) wall times."""
    sock = _open(job, f"oxyfleet-load-{job.first}-{time.time_ns() % 10**6}")
    acked = 0
    in_flight = threading.Semaphore(_MAX_IN_FLIGHT)
    done = threading.Event()

    def read_acks() -> None:
        nonlocal acked
        buffer = b""
        while acked < job.count:
            data = sock.recv(65536)
            if not data:
                break
            buffer += data
            while len(buffer) >= 4 and buffer[0] == 0x40:  # PUBACK: 40 02 id id
                buffer = buffer[4:]
                acked += 1
                in_flight.release()
        done.set()

    if job.qos:
        threading.Thread(target=read_acks, daemon=True).start()
    topics = [f"{job.prefix}/concentrator/{u}/telemetry".encode() for u in job.units]
    template = (
        b'{"ts":%d,"seq":%d,"purity_pct":93.1,"flow_lpm":5.02,"setpoint_lpm":5.0,"outlet_kpa":55.2,'
        b'"temp_c":36.5,"running":true,"power":"mains"}'
    )
    # Paced runs send about 10 ms worth at a time, so latency measurements see a steady stream, not bursts.
    chunk = max(1, min(_CHUNK, int(job.rate / 100))) if job.rate else _CHUNK
    last_ts = [0] * len(topics)  # live timestamps: still distinct per unit when a unit repeats within 1 ms
    started = time.perf_counter()
    sent = 0
    while sent < job.count:
        n = min(chunk, job.count - sent)
        packets = []
        now_ms = time.time_ns() // 1_000_000
        for k in range(sent, sent + n):
            index = job.first + k
            unit = index % len(topics)
            if job.live_ts:
                ts = last_ts[unit] = max(now_ms, last_ts[unit] + 1)
            else:
                ts = job.base_ts + index
            if job.qos:
                in_flight.acquire()
            packets.append(publish_packet(topics[unit], template % (ts, index), job.qos, k % 65535 + 1))
        sock.sendall(b"".join(packets))
        sent += n
        if job.rate:
            ahead = sent / job.rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    if job.qos:
        done.wait(120)
    ended = time.perf_counter()
    sock.sendall(b"\xe0\x00")
    sock.close()
    if job.qos and acked < job.count:
        raise RuntimeError(f"only {acked} of {job.count} publishes were acknowledged")
    return started + time.time() - time.perf_counter(), ended + time.time() - time.perf_counter()


def run_load(
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    prefix: str = "oxygen",
    messages: int = 100_000,
    units: int = 1000,
    qos: int = 1,
    rate: float = 0.0,
    processes: int = 1,
    unit_prefix: str = "LOAD",
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
    live_ts: bool = False,
) -> LoadResult:
    """Publish ``messages`` readings round-robin over ``units`` units; ``rate`` 0 means as fast as possible.

    Timestamps are distinct past ones 1 ms apart (a backlog being uploaded), or with ``live_ts`` the
    publish time (a fleet reporting live; what latency and soak measurements need). Either way every
    (unit, ts) is distinct: with live timestamps and several processes, each process publishes for its
    own share of the units, so no two processes stamp the same unit.
    """
    names = [f"{unit_prefix}-{i:06d}" for i in range(units)]
    base_ts = time.time_ns() // 1_000_000 - messages - 1000  # distinct past timestamps, 1 ms apart
    share, extra = divmod(messages, processes)
    jobs, first = [], 0
    for p in range(processes):
        count = share + (1 if p < extra else 0)
        jobs.append(
            _Job(
                host,
                port,
                prefix,
                names[p::processes] if live_ts and processes > 1 else names,
                first,
                count,
                qos,
                rate / processes,
                base_ts,
                username,
                password,
                tls,
                ca_file,
                live_ts,
            )
        )
        first += count
    if processes == 1:
        spans = [_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            spans = pool.map(_worker, jobs)
    return LoadResult(messages, max(e for _, e in spans) - min(s for s, _ in spans), processes)
