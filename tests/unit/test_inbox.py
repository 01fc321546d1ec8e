"""The inbox between paho's thread and the pipeline: order, bulk takes, backpressure without loss."""

from __future__ import annotations

import threading
import time

from ingest.decode import Inbound
from ingest.source_mqtt import Inbox


def item(i: int) -> Inbound:
    return Inbound("oxygen/concentrator/U1/telemetry", b"{}", i, 1, False, (1, i))


def test_take_returns_what_waits_in_order_up_to_the_limit() -> None:
    box = Inbox(100)
    for i in range(10):
        box.put(item(i))
    assert [m.received_ns for m in box.take(4, 0)] == [0, 1, 2, 3]
    assert [m.received_ns for m in box.take(100, 0)] == [4, 5, 6, 7, 8, 9]
    assert box.take(100, 0.01) == []
    assert len(box) == 0


def test_take_waits_for_the_first_item() -> None:
    box = Inbox(10)
    threading.Timer(0.05, box.put, args=(item(7),)).start()
    started = time.monotonic()
    got = box.take(10, 5)
    assert [m.received_ns for m in got] == [7]
    assert time.monotonic() - started < 2


def test_a_full_inbox_blocks_the_producer_until_taken_and_loses_nothing() -> None:
    box = Inbox(5)
    produced = threading.Event()

    def produce() -> None:
        for i in range(50):
            box.put(item(i))
        produced.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.05)
    assert not produced.is_set()  # blocked at the bound (backpressure: paho stops reading the socket)
    assert len(box) == 5
    taken: list[int] = []
    deadline = time.monotonic() + 5
    while len(taken) < 50 and time.monotonic() < deadline:
        taken += [m.received_ns for m in box.take(3, 0.1)]
    assert taken == list(range(50))
    assert produced.wait(1)


def test_a_batch_of_acks_is_one_write_of_exactly_the_pubacks_of_the_current_connection() -> None:
    from core.settings import MqttSettings
    from ingest.source_mqtt import MqttSource

    source = MqttSource(MqttSettings())
    queued: list[tuple[int, bytes, int, int]] = []
    source.client._packet_queue = lambda command, packet, mid, qos: queued.append((command, packet, mid, qos))  # type: ignore[method-assign,assignment,misc]
    current = source._generation
    batch = [
        Inbound("t", b"", 0, 1, False, (current, 1)),
        Inbound("t", b"", 0, 0, False, (current, 0)),  # QoS 0: nothing to ack
        Inbound("t", b"", 0, 1, False, (current - 1, 2)),  # an earlier connection: redelivered instead
        Inbound("t", b"", 0, 1, False, (current, 0x1234)),
    ]
    assert source.ack(batch) == 2
    assert queued == [(0x40, b"\x40\x02\x00\x01" + b"\x40\x02\x12\x34", 0, 1)]

    acked: list[int] = []
    source.client = type("NoPrivateApi", (), {"ack": lambda _self, mid, _qos: acked.append(mid)})()
    assert source.ack(batch) == 2  # a client without the private method: the public per-message path
    assert acked == [1, 0x1234]


def test_session_taken_over_is_named_as_a_client_id_conflict() -> None:
    """MQTT 5 brokers that say why (EMQX, HiveMQ, newer Mosquitto) send DISCONNECT 142 to the older twin."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode
    from structlog.testing import capture_logs

    from core.settings import MqttSettings
    from ingest.source_mqtt import MqttSource

    source = MqttSource(MqttSettings(client_id="ingest-a"))
    source.connected.set()
    with capture_logs() as logs:
        for _ in range(5):
            source._on_disconnect(
                source.client, None, None, ReasonCode(PacketTypes.DISCONNECT, identifier=142), None
            )
            source.connected.set()
        source._on_disconnect(
            source.client, None, None, ReasonCode(PacketTypes.DISCONNECT, identifier=0), None
        )
    conflicts = [e for e in logs if e["event"] == "ingest.mqtt_client_id_conflict"]
    assert len(conflicts) == 1  # logged once, counted every time
    assert source.client_id_conflicts == 5
    assert "Session taken over" in conflicts[0]["reason"]
    assert "OXYFLEET_MQTT__CLIENT_ID=ingest-a" in conflicts[0]["hint"]


def test_a_lone_disconnect_long_after_connecting_is_not_a_conflict() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode
    from structlog.testing import capture_logs

    from core.settings import MqttSettings
    from ingest.source_mqtt import MqttSource

    source = MqttSource(MqttSettings(client_id="ingest-a"))
    unspecified = ReasonCode(PacketTypes.DISCONNECT, identifier=128)
    with capture_logs() as logs:
        for _ in range(4):
            source.connected.set()
            source._connected_at = time.monotonic() - 60  # each connection lived a minute: a flaky link
            source._on_disconnect(source.client, None, None, unspecified, None)
    assert not [e for e in logs if e["event"] == "ingest.mqtt_client_id_conflict"]
    with capture_logs() as logs:
        for _ in range(3):
            source.connected.set()
            source._connected_at = time.monotonic()  # dropped right after each CONNACK: a twin
            source._on_disconnect(source.client, None, None, unspecified, None)
    assert [e["event"] for e in logs].count("ingest.mqtt_client_id_conflict") == 1


def test_close_releases_a_blocked_producer_and_refuses_more() -> None:
    """Issue 19: a stop must not wait for room; what could not be queued stays unacked (redelivered)."""
    box = Inbox(2)
    box.put(item(0))
    box.put(item(1))
    results: list[bool] = []
    producer = threading.Thread(target=lambda: results.append(box.put(item(2))), daemon=True)
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive()  # waiting for room
    box.close()
    producer.join(2)
    assert results == [False]
    assert not box.put(item(3))
    assert [m.received_ns for m in box.take(10, 0)] == [0, 1]  # what was queued is still handed out


def test_a_producer_waiting_longer_than_stall_s_is_reported_and_its_resume_too() -> None:
    events: list[str] = []
    box = Inbox(
        1, stall_s=0.1, on_stall=lambda: events.append("stall"), on_resume=lambda s: events.append(f"{s:.1f}")
    )
    box.put(item(0))
    producer = threading.Thread(target=box.put, args=(item(1),), daemon=True)
    producer.start()
    time.sleep(0.5)
    assert events == ["stall"]
    box.take(1, 0)
    producer.join(2)
    assert events[0] == "stall" and float(events[1]) >= 0.4


def big(i: int, size: int) -> Inbound:
    return Inbound("oxygen/concentrator/U1/telemetry", b"x" * size, i, 1, False, (1, i))


def test_the_inbox_is_bounded_in_payload_bytes_and_always_lets_one_message_in() -> None:
    box = Inbox(1000, max_bytes=10_000)
    box.put(big(0, 50_000))  # larger than the budget on its own: admitted, or it would block forever
    blocked = threading.Event()
    done = threading.Event()

    def produce() -> None:
        blocked.set()
        for i in range(1, 6):
            box.put(big(i, 4_000))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert blocked.wait(1)
    time.sleep(0.05)
    assert len(box) == 1  # the budget is spent: the producer waits (backpressure)
    assert [m.received_ns for m in box.take(10, 0)] == [0]
    taken: list[int] = []
    deadline = time.monotonic() + 5
    while len(taken) < 5 and time.monotonic() < deadline:
        assert box.bytes <= 10_000 + 4_000  # below the budget, plus the one message that crossed it
        taken += [m.received_ns for m in box.take(2, 0.1)]
    assert taken == [1, 2, 3, 4, 5]
    assert done.wait(1)
    assert box.bytes == 0


def test_an_oversize_payload_is_held_only_as_the_prefix_the_rejected_record_stores() -> None:
    from core.settings import MqttSettings
    from ingest.decode import Decoder, Reason
    from ingest.source_mqtt import MqttSource
    from store.lineproto import MAX_STORED_PAYLOAD

    source = MqttSource(MqttSettings(), max_payload_bytes=65_536)

    class Message:
        topic = "oxygen/concentrator/U1/telemetry"
        payload = b"{" + b" " * (1024 * 1024)
        qos, retain, mid = 1, False, 9

    source._on_message(source.client, None, Message())  # type: ignore[arg-type]
    (held,) = source.queue.take(10, 0)
    assert len(held.payload) == MAX_STORED_PAYLOAD
    assert held.payload == Message.payload[:MAX_STORED_PAYLOAD]
    assert held.size == len(Message.payload)
    decoded = Decoder(max_bytes=65_536).decode(held)
    assert [r.reason for r in decoded.rejections] == [Reason.TOO_LARGE]
    assert str(len(Message.payload)) in decoded.rejections[0].detail
    from store.lineproto import LineBuilder

    assert f"payload_bytes={len(Message.payload)}i" in LineBuilder().rejected(decoded.rejections[0])


def test_the_read_ahead_serves_paho_small_reads_from_one_socket_read_and_reports_what_it_holds() -> None:
    import socket

    from ingest.mqtt_read import ReadAheadSocket

    a, b = socket.socketpair()
    a.setblocking(False)
    wrapped = ReadAheadSocket(a)
    b.sendall(b"\x30\x05hello" + b"\x30\x02hi")
    assert wrapped.recv(1) == b"\x30"
    assert (wrapped.reads, wrapped.pending()) == (1, 10)  # the rest is read ahead: paho skips select
    assert wrapped.recv(1) == b"\x05"
    assert wrapped.recv(100) == b"hello\x30\x02hi"  # a short read, as a socket may give
    assert wrapped.pending() == 0
    try:
        wrapped.recv(1)
        raise AssertionError("an empty non-blocking socket must raise BlockingIOError, as paho expects")
    except BlockingIOError:
        pass
    assert wrapped.fileno() == a.fileno()  # everything else is the socket's
    b.close()
    assert wrapped.recv(1) == b""  # end of stream reaches paho unchanged
    a.close()


def test_take_stops_at_a_byte_bound_with_at_least_one_item_and_keeps_the_count_right() -> None:
    box = Inbox(100)
    for i in range(10):
        box.put(Inbound("t", b"x" * 100, i, 1, False, (1, i)))
    assert [m.received_ns for m in box.take(100, 0, max_bytes=250)] == [0, 1, 2]  # the third crosses it
    assert [m.received_ns for m in box.take(100, 0, max_bytes=1)] == [3]
    assert box.bytes == 600
    assert [m.received_ns for m in box.take(100, 0, max_bytes=10_000)] == [4, 5, 6, 7, 8, 9]
    assert box.bytes == 0


def publish_packet(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 7, *, retain: bool = False
) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + length + body


def test_complete_qos_0_and_1_publishes_are_taken_off_the_read_ahead_and_the_rest_is_left_to_paho() -> None:
    """MQTT 3.1.1 PUBLISH packets decoded without paho (ingest.mqtt_read), exactly as paho decodes them."""
    import socket

    from paho.mqtt._packet import decode_publish
    from paho.mqtt.enums import MQTTProtocolVersion

    from ingest.mqtt_read import ReadAheadSocket

    big = b"{" + b"x" * 20_000 + b"}"  # a three-byte remaining length
    packets = [
        publish_packet(b"oxygen/concentrator/U1/telemetry", b'{"ts":1}', qos=1, mid=65_535),
        publish_packet(b"oxygen/concentrator/U2/status", b"online", qos=0, retain=True),
        publish_packet("oxygen/concentrator/Ü3/telemetry".encode(), big, qos=1, mid=1),
        publish_packet(b"a/b", b"", qos=1, mid=2),
    ]
    stop_at = [
        bytes([0x40, 2, 0, 9]),  # a PUBACK: paho's
        publish_packet(b"q2", b"{}", qos=2),  # QoS 2: paho keeps its state
        bytes([0x30, 2, 0, 0]),  # empty topic: malformed, paho reports it
        publish_packet(b"t", b"abc")[:-1],  # not complete yet
    ]
    for tail in stop_at:
        a, b = socket.socketpair()
        a.setblocking(False)
        wrapped = ReadAheadSocket(a)
        b.sendall(b"".join(packets) + tail)
        assert wrapped.recv(1) == packets[0][:1]  # paho read the first byte: not a boundary any more
        wrapped._pos = 0  # back to the boundary, as after a packet paho finished
        got = wrapped.take_publishes()
        expected = []
        for packet in packets:
            # paho's own decoding of the same bytes, after its fixed header
            header_len = 2 if packet[1] < 0x80 else (3 if packet[2] < 0x80 else 4)
            p = decode_publish(packet[0], packet[header_len:], MQTTProtocolVersion.MQTTv311)
            expected.append((p.topic, p.payload, p.qos, p.retain, p.mid))
        assert got == expected
        assert wrapped.buffered() == len(tail)  # what paho must handle is still there, untouched
        assert wrapped.recv(len(tail)) == tail
        a.close()
        b.close()


def test_a_publish_taken_off_the_wire_is_queued_as_paho_would_hand_it_over() -> None:
    from core.settings import MqttSettings
    from ingest.source_mqtt import MqttSource

    source = MqttSource(MqttSettings(), max_payload_bytes=65_536)
    assert source.client.on_publishes == source._on_publishes  # type: ignore[attr-defined]
    source._generation = 3
    source._on_publishes(
        [
            (b"oxygen/concentrator/U\xff/telemetry", b"{}", 1, True, 42),
            (b"oxygen/concentrator/U2/telemetry", b"{" + b" " * 70_000, 0, False, 0),
        ]
    )
    first, second = source.queue.take(10, 0)
    # An invalid UTF-8 topic is kept readable for the rejected record, as from paho's on_message.
    assert first.topic == "oxygen/concentrator/U\\xff/telemetry"
    assert (first.payload, first.qos, first.retain, first.ack_token) == (b"{}", 1, True, (3, 42))
    assert (second.qos, second.ack_token, second.size, len(second.payload)) == (0, (3, 0), 70_001, 1024)
    assert source.callback_errors == 0


def test_put_many_keeps_order_waits_at_the_bound_and_stops_when_closed() -> None:
    box = Inbox(3)
    done: list[int] = []
    producer = threading.Thread(target=lambda: done.append(box.put_many([item(i) for i in range(5)])))
    producer.start()
    time.sleep(0.05)
    assert (len(box), done) == (3, [])  # blocked at the bound: backpressure, nothing dropped
    assert [m.received_ns for m in box.take(2, 0)] == [0, 1]
    producer.join(2)
    assert done == [5]
    assert [m.received_ns for m in box.take(10, 0)] == [2, 3, 4]

    closing = Inbox(1)
    producer = threading.Thread(target=lambda: done.append(closing.put_many([item(i) for i in range(3)])))
    producer.start()
    time.sleep(0.05)
    closing.close()  # a stop: the rest is not queued (never acked, so redelivered)
    producer.join(2)
    assert done == [5, 1]
    assert [m.received_ns for m in closing.take(10, 0)] == [0]
