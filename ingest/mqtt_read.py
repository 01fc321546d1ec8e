"""paho's receive path made cheaper for the ingester, keeping paho for everything else.

paho-mqtt costs most of the ingester's CPU per message (py-spy, docs/benchmarks.md): per packet it runs
``select``, two or three ``recv`` calls and keepalive bookkeeping, and walks its per-topic callback
matcher. These pieces change only how bytes reach paho's own packet handling: connecting,
subscribing, acks, reconnects and TLS stay paho's. They use private names of paho 2.x (``_sock``,
``_on_message_filtered``, ``_in_packet``, ``_protocol``, ``_msgtime_mutex``, ``_last_bytes_received``);
without them paho runs as it ships.

With MQTT 3.1.1 (the default), complete QoS 0/1 PUBLISH packets already read ahead are decoded here and
handed to :attr:`IngestClient.on_publish_bytes` without paho's ``MQTTMessage``, ``MQTTMessageInfo`` and
per-packet dispatch (about a third of the ingester's CPU per message in the profile, issue 16). With
``manual_ack`` paho does nothing else for such a packet: no state, no reply. Anything else (another
packet type, QoS 2, MQTT 5, a packet that is incomplete or looks malformed) stays with paho.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["IngestClient", "NoFilteredCallbacks", "Publish", "ReadAheadSocket"]

# A PUBLISH as it came off the wire: topic, payload, QoS, retain, packet id.
Publish = tuple[bytes, bytes, int, bool, int]


class ReadAheadSocket:
    """The broker connection read in 64 KiB chunks, for paho's network loop.

    paho reads each packet with two or three ``recv`` calls (command byte, length bytes, body) and runs
    ``select`` before every packet: a few syscalls and about a fifth of the ingester's CPU per message
    (py-spy, docs/benchmarks.md). This wrapper serves those reads from one large ``recv`` and reports the
    bytes it holds through ``pending()``, the method paho already asks TLS sockets for (it then skips
    ``select``), so no buffered packet waits for the socket to become readable again. Everything else
    (send, fileno, close, TLS) goes to the socket unchanged; a new connection gets a new wrapper.
    """

    __slots__ = ("_buf", "_pos", "_sock", "reads")

    CHUNK: Final = 65536

    def __init__(self, sock: Any) -> None:  # noqa: ANN401 - a socket or paho's SSL/websocket wrapper
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.reads = 0  # reads of the socket itself

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes: from what was read ahead, else one large read of the socket."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(max(bufsize, self.CHUNK))  # BlockingIOError/EOF reach paho as before
            self.reads += 1
            if len(buf) <= bufsize:
                self._buf, self._pos = b"", 0
                return bytes(buf)
            pos = 0
            self._buf = buf
        chunk = buf[pos : pos + bufsize]
        self._pos = pos + len(chunk)
        return chunk

    def take_publishes(self) -> list[Publish]:
        """Complete MQTT 3.1.1 QoS 0/1 PUBLISH packets at the front of the read-ahead, taken out of it.

        Stops at the first packet that is anything else or not complete yet, leaving it for paho. Must
        only be called at a packet boundary (paho holds no part of a packet).
        """
        buf, pos = self._buf, self._pos
        end = len(buf)
        taken: list[Publish] = []
        while pos < end:
            first = buf[pos]
            qos = (first >> 1) & 3
            if first >> 4 != 3 or qos > 1:  # not a PUBLISH, or QoS 2 (paho keeps its state)
                break
            length = shift = 0
            i = pos + 1
            while i < end and shift <= 21:  # remaining length: at most 4 bytes
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
            else:
                break  # incomplete, or too long a length (paho reports that)
            body_end = i + length
            if body_end > end or length < 2:
                break
            topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
            start = topic_end + 2 if qos else topic_end
            if topic_end == i + 2 or start > body_end:  # empty topic or too short: malformed, paho's
                break
            mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
            taken.append((buf[i + 2 : topic_end], buf[start:body_end], qos, bool(first & 1), mid))
            pos = body_end
        self._pos = pos
        return taken

    def buffered(self) -> int:
        """Bytes read ahead and not yet handed to paho."""
        return len(self._buf) - self._pos

    def pending(self) -> int:
        """Bytes readable without the socket: read ahead here, plus what TLS decrypted already."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - delegation
        return getattr(self._sock, name)


class NoFilteredCallbacks:
    """Stands in for paho's per-topic callback matcher, which the ingester never uses (one on_message).

    paho walks that trie for every message before calling on_message: about a tenth of its time here.
    """

    @staticmethod
    def iter_match(_topic: str) -> tuple[()]:
        """No filtered callbacks: paho calls on_message."""
        return ()


class IngestClient(mqtt.Client):
    """paho's client handling a whole chunk read ahead per pass of its loop, not one packet.

    paho reads one packet per pass (then ``select``, writes, keepalive bookkeeping, and again); with
    :class:`ReadAheadSocket` the rest of a 64 KiB chunk is already in memory. One pass goes on until the
    chunk is used up and stops at the next read of the socket, so acks and PINGREQs still go out at
    least once per chunk (a pass never runs on while the broker keeps sending).

    ``on_publishes``, when set, receives the QoS 0/1 PUBLISH packets of MQTT 3.1.1 connections instead
    of ``on_message`` (see the module docstring), all of one chunk at once; it must not raise.
    """

    on_publishes: Callable[[list[Publish]], None] | None = None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read packets; go on while the chunk of this same connection has bytes left (one socket read)."""
        sock: object = self._sock
        if not isinstance(sock, ReadAheadSocket):
            return super().loop_read(max_packets)
        ahead: ReadAheadSocket = sock
        reads = ahead.reads
        handler = self.on_publishes if self._protocol != mqtt.MQTTv5 else None
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is ahead and ahead.reads <= reads + 1:
            if handler is not None and self._in_packet["command"] == 0:
                publishes = ahead.take_publishes()
                if publishes:
                    with self._msgtime_mutex:  # what paho's keepalive check reads, as paho sets it
                        self._last_bytes_received = mqtt.time_func()
                    handler(publishes)  # may block while the inbox is full (backpressure)
            if not ahead.buffered():
                break
            rc = super().loop_read(1)
        return rc
