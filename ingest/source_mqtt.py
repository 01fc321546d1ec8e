"""MQTT source: a paho-mqtt 2.x client on a persistent session that hands messages over and acks later.

The broker keeps our QoS 1 messages while we are away because the session is persistent (stable client
id, clean start off, session expiry). We ack a message only when the pipeline says it is durably
handled (``manual_ack``), so a crash between receiving and writing means redelivery, not loss.

The paho callback only wraps the message and enqueues it (as aiomqtt's ``_on_message`` does); nothing
it raises can reach paho, which would otherwise re-raise it in its network thread. With MQTT 3.1.1 most
PUBLISH packets skip paho's message objects and arrive as bytes, a chunk at a time (``_on_publishes``,
from :mod:`ingest.mqtt_read`), in paho's network thread all the same, and are queued the same way. When the queue is
full the callback blocks, which stops paho reading the socket: backpressure to the broker, never a drop.
A network thread blocked that way is reported as disconnected, and a stop releases it (see :class:`Inbox`).
The pipeline takes messages in bulk (:meth:`MqttSource.take`) and acks a whole batch with one write.

Acks and reconnects: packet ids are per connection. A message received on an earlier connection must not
be acked on the current one (its id may now belong to another message); the broker redelivers it
instead, and because writes are idempotent the second write changes nothing. A lock makes "is this the
current connection? then ack" atomic with respect to reconnects.

Long module: the inbox, the source and the broker-store reader share one concern, what the MQTT side
holds and when it lets go of it (backpressure, stop, redelivery), and read best side by side.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import SourceAuthError
from core.mqtt import FATAL_CONNACK, connect_properties, make_client
from ingest.decode import Inbound
from ingest.mqtt_read import IngestClient, NoFilteredCallbacks, Publish, ReadAheadSocket
from store.lineproto import MAX_STORED_PAYLOAD

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from paho.mqtt.reasoncodes import ReasonCode

    from core.settings import MqttSettings

__all__ = ["BrokerStore", "Inbox", "MqttSource"]

log = structlog.get_logger("ingest.source")

_PUBACK: Final = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id
# DISCONNECT reason 142 (MQTT 5): another client connected with our client id and took the session.
_SESSION_TAKEN_OVER: Final = 142
# MQTT 3.1.1 has no reason on the wire: the broker just closes the older connection. A connection that
# the broker drops this soon after CONNACK, this many times in a row, is most likely a twin with our id.
_QUICK_DROP_S: Final = 5.0
_QUICK_DROPS_SUSPECT: Final = 3
_CONFLICT_LOG_EVERY_S: Final = 60.0
_CLIENT_ID_HINT: Final = (
    "another MQTT client uses the same client id (OXYFLEET_MQTT__CLIENT_ID={client_id}) and the broker "
    "keeps only one of them connected: give each ingester its own OXYFLEET_MQTT__CLIENT_ID (several "
    "ingesters share the load with the same OXYFLEET_MQTT__SHARED_GROUP)"
)


class Inbox:
    """Bounded FIFO between paho's thread (one message at a time) and the pipeline (many at a time).

    ``queue.Queue`` costs a lock round trip and a condition notify per item on both sides; here the
    consumer takes everything waiting in one call, and each side wakes the other only when it may be
    waiting (the queue was empty, or full).

    Bounded twice: by count (``maxsize``) and by payload bytes (``max_bytes``), because a count alone
    lets a burst of large messages take hundreds of MiB (issue 16: 500 one-MiB messages, 439 MiB RSS).
    One message is always let in, whatever its size, so a single large one cannot block forever.

    A full inbox blocks paho's network thread (backpressure), and a blocked network thread is a dead
    connection: it sends no PINGREQ and reads nothing, so the broker drops it after 1.5 keepalives. Two
    things follow (issue 19). ``put`` waits in slices and gives up once the inbox is closed, so a stop
    never waits for the pipeline to make room (the message stays unacked and the broker redelivers it).
    And after ``stall_s`` of waiting it tells the source (``on_stall``), which reports itself
    disconnected; ``on_resume`` gets the seconds blocked when room appears.
    """

    def __init__(
        self,
        maxsize: int,
        max_bytes: int = 1 << 62,
        *,
        stall_s: float = 2.0,
        on_stall: Callable[[], None] | None = None,
        on_resume: Callable[[float], None] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stall_s = stall_s
        self.on_stall = on_stall
        self.on_resume = on_resume
        self.closed = False
        self._items: deque[Inbound] = deque()
        self._cond = threading.Condition()

    def _full(self) -> bool:
        return len(self._items) >= self.maxsize or (self.bytes >= self.max_bytes and bool(self._items))

    def put(self, item: Inbound) -> bool:
        """Append; blocks while full (backpressure). False, without appending, once the inbox is closed."""
        with self._cond:
            if self._full() and not self.closed:
                self._wait_for_room()
            if self.closed:
                return False
            self._items.append(item)
            self.bytes += len(item.payload)
            if len(self._items) == 1:
                self._cond.notify_all()
            return True

    def put_many(self, items: list[Inbound]) -> int:
        """``put`` for each, in order, under one lock round trip; returns how many went in (fewer: closed)."""
        with self._cond:
            queue = self._items
            for n, item in enumerate(items):
                if self._full() and not self.closed:
                    self._wait_for_room()
                if self.closed:
                    return n
                queue.append(item)
                self.bytes += len(item.payload)
                if len(queue) == 1:
                    self._cond.notify_all()
            return len(items)

    def _wait_for_room(self) -> None:
        """The slow path of ``put`` (lock held): wait in slices, report a stall, give up when closed."""
        started = time.monotonic()
        stalled = False
        while self._full() and not self.closed:
            self._cond.wait(0.25)
            if not stalled and time.monotonic() - started >= self.stall_s:
                stalled = True
                if self.on_stall is not None:
                    self.on_stall()
        if stalled and not self.closed and self.on_resume is not None:
            self.on_resume(time.monotonic() - started)

    def close(self) -> None:
        """Refuse further items and release a blocked ``put``; what is queued stays for ``take``."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
        """Up to ``limit`` items, waiting at most ``timeout`` for the first one.

        With ``max_bytes``, items stop once their payloads reach it (at least one item is taken), so a
        batch stays within its share of the byte budget even when one take empties a full inbox.
        """
        with self._cond:
            if not self._items and not self._cond.wait(timeout):
                return []
            was_full = self._full()
            items = self._items
            n = min(limit, len(items))
            if max_bytes is None or self.bytes <= max_bytes:  # all of it fits: no per-item count
                out = [items.popleft() for _ in range(n)]
                taken = sum([len(m.payload) for m in out])
            else:
                out, taken = [], 0
                while n and (not out or taken < max_bytes):
                    item = items.popleft()
                    out.append(item)
                    taken += len(item.payload)
                    n -= 1
            self.bytes = self.bytes - taken if items else 0
            if was_full:
                self._cond.notify_all()
            return out

    def __len__(self) -> int:
        return len(self._items)


class BrokerStore:
    """What the broker holds in its store, from Mosquitto's ``$SYS/broker/store/messages/{count,bytes}``.

    The backlog that matters during an outage is the one the broker keeps for us (issue 19: the inbox
    said 8,900 while Mosquitto held 64,197). Its own connection (clean session, QoS 0), because the
    ingester's connection stops reading exactly then (backpressure). Mosquitto's figures cover the
    whole broker (every session's queue plus retained messages), published every ``sys_interval``
    (default 10 s). ``-1`` means unknown: another broker, ``$SYS`` denied by the ACL, or not yet heard.
    EMQX, HiveMQ and VerneMQ report queue depths through their HTTP APIs and metrics endpoints instead
    (docs/operations.md).
    """

    TOPIC: Final = "$SYS/broker/store/messages/+"

    def __init__(self, settings: MqttSettings) -> None:
        self.messages = -1
        self.bytes = -1
        self.client = make_client(settings, f"{settings.client_id}-sys", persistent=False, manual_ack=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._settings = settings

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.TOPIC, qos=0)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            value = int(msg.payload)
        except ValueError:
            return
        if msg.topic.endswith("/count"):
            self.messages = value
        elif msg.topic.endswith("/bytes"):
            self.bytes = value

    def start(self) -> None:
        """Connect in the background (paho retries on its own)."""
        s = self._settings
        self.client.connect_async(
            s.host, s.port, keepalive=s.keepalive_s, properties=connect_properties(s, persistent=False)
        )
        self.client.loop_start()

    def stop(self, timeout_s: float) -> None:
        """Disconnect, waiting at most ``timeout_s``."""
        self.client.disconnect()
        _join(self.client, timeout_s)


def _join(client: mqtt.Client, timeout_s: float) -> bool:
    """``loop_stop`` with a bound: it has no timeout of its own, so it runs in a daemon helper thread."""
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    return not stopper.is_alive()


class MqttSource:
    """Subscribes, queues messages for the pipeline, and acks them when told to."""

    def __init__(
        self,
        settings: MqttSettings,
        max_pending: int = 50_000,
        *,
        max_pending_bytes: int = 1 << 62,
        max_payload_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.queue = Inbox(max_pending, max_pending_bytes, on_stall=self._on_stall, on_resume=self._on_resume)
        # Payloads above this are kept only as the prefix the rejected record stores (the decoder
        # rejects them as too_large from ``Inbound.size``); None keeps every payload whole.
        self.max_payload_bytes = max_payload_bytes
        self.client = make_client(
            settings, settings.client_id, persistent=True, manual_ack=True, client_class=IngestClient
        )
        if hasattr(self.client, "_on_message_filtered"):
            self.client._on_message_filtered = NoFilteredCallbacks()  # type: ignore[assignment]  # noqa: SLF001
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if isinstance(self.client, IngestClient):
            self.client.on_publishes = self._on_publishes  # MQTT 3.1.1: without MQTTMessage
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = self._on_socket_open
        self._ack_lock = threading.Lock()
        self._generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.fatal: SourceAuthError | None = None
        self.broker = BrokerStore(settings)
        self.reconnects = 0
        self.callback_errors = 0
        self.client_id_conflicts = 0
        self._stopping = False
        self._connected_at = 0.0
        self._quick_drops = 0
        self._conflict_logged_at = 0.0
        self._stalled_generation: int | None = None

    # --- paho callbacks (paho's network thread) -------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        try:
            if reason.is_failure:
                if reason.value in FATAL_CONNACK:
                    hint = FATAL_CONNACK[reason.value]
                    if reason.value != 132:
                        hint += " - check OXYFLEET_MQTT__USERNAME/PASSWORD, the broker's ACL and CLIENT_ID"
                    self.fatal = SourceAuthError(
                        f"broker {self.settings.host}:{self.settings.port} refused the connection: {reason} ({hint})"
                    )
                    log.error("ingest.mqtt_refused", reason=str(reason))
                    client.disconnect()
                else:
                    log.warning("ingest.mqtt_connect_failed", reason=str(reason))
                return
            with self._ack_lock:
                self._generation += 1
            if self._generation > 1:
                self.reconnects += 1
            self._connected_at = time.monotonic()
            self.connected.set()
            log.info(
                "ingest.mqtt_connected",
                host=self.settings.host,
                port=self.settings.port,
                session_present=bool(getattr(flags, "session_present", False)),
            )
            # Subscribe on every connect: cheap, and correct when the broker lost our session.
            if self.settings.protocol == "5":
                # Retained status messages only with a new subscription: resubscribing on a kept session
                # would otherwise replay every unit's last status as if it had just been published.
                options = SubscribeOptions(qos=self.settings.qos, retainHandling=1)
                client.subscribe(self.settings.subscription(), options=options)
            else:
                client.subscribe(self.settings.subscription(), qos=self.settings.qos)
        except Exception:
            self.callback_errors += 1
            log.exception("ingest.callback_failed", callback="on_connect")

    def _on_socket_open(self, client: mqtt.Client, _userdata: object, sock: object) -> None:
        # Before CONNECT is sent, so every read of this connection goes through the read-ahead. paho
        # has no public way to swap its socket; without the private attribute it reads as before.
        if getattr(client, "_sock", None) is sock and not isinstance(sock, ReadAheadSocket):
            client._sock = ReadAheadSocket(sock)  # noqa: SLF001

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        with self._ack_lock:
            self._generation += 1  # from now on, acks for messages of that connection are dropped
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            log.info("ingest.mqtt_disconnected", reason=str(reason))
        elif self.fatal is None:
            self._check_client_id_conflict(reason, was_connected=was_connected)
            log.warning("ingest.mqtt_disconnected", reason=str(reason))

    def _check_client_id_conflict(self, reason: ReasonCode, *, was_connected: bool) -> None:
        """Name a twin ingester as such: the broker's own words are only "Unspecified error" on 3.1.1."""
        hint = _CLIENT_ID_HINT.format(client_id=self.settings.client_id)
        if reason.value == _SESSION_TAKEN_OVER:
            self._report_conflict(str(reason), hint)
            return
        if not was_connected:
            return
        if time.monotonic() - self._connected_at < _QUICK_DROP_S:
            self._quick_drops += 1
        else:
            self._quick_drops = 0
        if self._quick_drops >= _QUICK_DROPS_SUSPECT:
            reason_text = (
                f"{self._quick_drops} disconnects in a row, each within {_QUICK_DROP_S:g} s of connecting"
            )
            self._report_conflict(reason_text, "probably " + hint)

    def _report_conflict(self, reason: str, hint: str) -> None:
        """Count every conflict; log the first and then at most once a minute (they come every second)."""
        self.client_id_conflicts += 1
        now = time.monotonic()
        if self.client_id_conflicts == 1 or now - self._conflict_logged_at >= _CONFLICT_LOG_EVERY_S:
            self._conflict_logged_at = now
            log.error(
                "ingest.mqtt_client_id_conflict", reason=reason, hint=hint, conflicts=self.client_id_conflicts
            )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        codes: list[ReasonCode],
        _props: object,
    ) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            log.error("ingest.subscribe_refused", topic=self.settings.subscription(), reason=failed)
        else:
            log.info("ingest.subscribed", topic=self.settings.subscription(), qos=self.settings.qos)
            self.subscribed.set()

    def _on_stall(self) -> None:
        """The inbox is full and paho's thread has waited: it pings nobody, so count it as disconnected."""
        self._stalled_generation = self._generation
        self.connected.clear()
        self.subscribed.clear()
        log.warning(
            "ingest.mqtt_disconnected",
            reason="backpressure",
            pending=len(self.queue),
            note="the inbox is full, so paho's network thread waits and the broker holds the messages",
        )

    def _on_resume(self, blocked_s: float) -> None:
        """Room again: within 1.5 keepalives the broker has kept the connection (MQTT 3.1.2.10).

        After longer, it has closed it; paho's next read finds out, reconnects and resubscribes.
        """
        generation, self._stalled_generation = self._stalled_generation, None
        if generation == self._generation and blocked_s < 1.5 * self.settings.keepalive_s:
            self.connected.set()
            self.subscribed.set()
            log.info("ingest.mqtt_resumed", blocked_s=round(blocked_s, 1))

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:  # a broker should refuse these; if not, the decoder rejects it
                topic = msg._topic.decode("utf-8", "backslashreplace")  # noqa: SLF001
            self._enqueue(topic, msg.payload, msg.qos, bool(msg.retain), msg.mid)
        except Exception:
            # Not acked, so the broker redelivers it after the next reconnect: counted, not lost.
            self.callback_errors += 1
            log.exception("ingest.callback_failed", callback="on_message")

    def _on_publishes(self, publishes: list[Publish]) -> None:
        """``_on_message`` for the PUBLISH packets of one read-ahead chunk (ingest.mqtt_read, MQTT 3.1.1).

        One receive time and one inbox lock round trip for the chunk: its packets arrived in one read.
        """
        try:
            received_ns, generation, limit = time.time_ns(), self._generation, self.max_payload_bytes
            items = []
            for topic, payload, qos, retain, mid in publishes:
                try:
                    text = topic.decode()
                except UnicodeDecodeError:  # as paho's MQTTMessage.topic would raise
                    text = topic.decode("utf-8", "backslashreplace")
                if limit is not None and len(payload) > limit:
                    items.append(self._oversize(text, payload, received_ns, qos, retain, (generation, mid)))
                else:
                    items.append(Inbound(text, payload, received_ns, qos, retain, (generation, mid)))
            # Fewer only when stopping: the rest is not queued, not acked, so the broker redelivers it.
            self.queue.put_many(items)
        except Exception:
            self.callback_errors += 1
            log.exception("ingest.callback_failed", callback="on_publishes")

    def _enqueue(self, topic: str, payload: bytes | bytearray, qos: int, retain: bool, mid: int) -> None:
        if not isinstance(payload, bytes):  # paho hands out bytes; bytearray is in its type only
            payload = bytes(payload)
        token = (self._generation, mid)
        if self.max_payload_bytes is not None and len(payload) > self.max_payload_bytes:
            item = self._oversize(topic, payload, time.time_ns(), qos, retain, token)
        else:
            item = Inbound(topic, payload, time.time_ns(), qos, retain, token)
        # False only when stopping: not queued, not acked, so the broker redelivers it.
        self.queue.put(item)

    @staticmethod
    def _oversize(
        topic: str, payload: bytes, received_ns: int, qos: int, retain: bool, token: object
    ) -> Inbound:
        """Only the part the rejected record shows is held; paho (or the read-ahead) drops the rest."""
        return Inbound(
            topic, bytes(payload[:MAX_STORED_PAYLOAD]), received_ns, qos, retain, token, len(payload)
        )

    # --- used by the pipeline (its own thread) --------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff on its own."""
        s = self.settings
        self.client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive_s,
            clean_start=False if s.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties(s, persistent=True),
        )
        self.client.loop_start()
        self.broker.start()

    def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
        """Up to ``limit`` waiting messages (payloads up to ``max_bytes``); waits at most ``timeout``."""
        return self.queue.take(limit, timeout, max_bytes)

    def ack(self, messages: Iterable[Inbound]) -> int:
        """Acknowledge handled messages in arrival order; skip those from an earlier connection.

        All PUBACKs of a batch go out as one queued write. paho's public ``ack()`` queues each one as a
        separate packet and wakes its network thread with a syscall each time (about a tenth of the
        ingester's CPU in the profile, see docs/benchmarks.md). The bytes on the wire are identical:
        ``0x40 0x02 <packet id>``, which MQTT 5 allows for success without properties (3.3.4 / 3.4.2.1).
        If a paho release drops the private ``_packet_queue``, the public path is used instead.
        """
        with self._ack_lock:
            current = self._generation
            mids = [m.ack_token[1] for m in messages if m.qos == 1 and m.ack_token[0] == current]
            if mids:
                queue_packet = getattr(self.client, "_packet_queue", None)
                if queue_packet is None:
                    for mid in mids:
                        self.client.ack(mid, 1)
                else:
                    queue_packet(0x40, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 1)
        return len(mids)

    def pending(self) -> int:
        """Messages received but not yet taken by the pipeline."""
        return len(self.queue)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect; the broker keeps the session and anything not acked. Returns within ``timeout_s``.

        Closing the inbox first releases paho's thread if it waits for room; messages it could not queue
        are not acked, so the broker redelivers them. ``loop_stop`` has no timeout, so it runs in a
        helper thread: if paho still does not finish (a TLS write to a dead peer), give up waiting - its
        thread is a daemon and dies with the process.
        """
        self._stopping = True
        self.queue.close()
        self.client.disconnect()
        self.broker.stop(1.0)
        if not _join(self.client, timeout_s):
            log.warning(
                "ingest.mqtt_stop_timeout", timeout_s=timeout_s, note="messages not acked are redelivered"
            )
