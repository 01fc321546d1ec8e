"""paho's receive path made cheaper for the ingester, keeping paho for everything else.

paho-mqtt costs most of the ingester's CPU per message (py-spy, docs/benchmarks.md): per packet it runs
``select``, two or three ``recv`` calls and keepalive bookkeeping, and walks its per-topic callback
matcher. These three pieces change only how bytes reach paho's own packet handling: connecting,
subscribing, acks, reconnects and TLS stay paho's. They use two private names of paho 2.x (``_sock`` and
``_on_message_filtered``); without them paho runs as it ships.
"""

from __future__ import annotations

from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["IngestClient", "NoFilteredCallbacks", "ReadAheadSocket"]


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
    """

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read packets; go on while the chunk of this same connection has bytes left (one socket read)."""
        sock: object = self._sock
        if not isinstance(sock, ReadAheadSocket):
            return super().loop_read(max_packets)
        ahead: ReadAheadSocket = sock
        reads = ahead.reads
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is ahead and ahead.reads <= reads + 1:
            if not ahead.buffered():
                break
            rc = super().loop_read(1)
        return rc
