"""The batch loop with a fake source and a fake transport: what gets written, rejected and acked, and when."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import capture_logs

from core.errors import SinkAuthError, SinkRejectedError, SinkRetryableError, SourceAuthError
from core.settings import BufferSettings
from ingest.decode import Decoder, Inbound
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from store.lineproto import LineBuilder
from store.writer import InfluxSink

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

NOW_MS = 1764140400000


def msg(i: int, payload: bytes | None = None, unit: str = "U1", qos: int = 1) -> Inbound:
    body = (
        payload if payload is not None else json.dumps({"ts": NOW_MS - 1000 + i, "purity_pct": 93.0}).encode()
    )
    return Inbound(f"oxygen/concentrator/{unit}/telemetry", body, NOW_MS * 1_000_000, qos, False, i)


class FakeSource:
    def __init__(self, messages: Iterable[Inbound]) -> None:
        self.messages = deque(messages)
        self.acked: list[object] = []
        self.fatal: SourceAuthError | None = None
        self.reconnects = 0

    def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
        out: list[Inbound] = []
        held = 0
        while self.messages and len(out) < limit and (max_bytes is None or held < max_bytes):
            out.append(self.messages.popleft())
            held += len(out[-1].payload)
        return out

    def ack(self, messages: Iterable[Inbound]) -> int:
        tokens = [m.ack_token for m in messages]
        self.acked.extend(tokens)
        return len(tokens)

    def pending(self) -> int:
        return len(self.messages)


class RecordingTransport:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = deque(failures or [])
        self.lines: list[str] = []
        self.attempts = 0

    def write(self, body: bytes) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.popleft()
        lines = body.decode().split("\n")
        if any(line.startswith("telemetry,") and "unit_id=conflict" in line for line in lines):
            raise SinkRejectedError("field type conflict", 400)
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def make(
    source: FakeSource, transport: RecordingTransport, spool: Spool | None = None, **buffer: float
) -> Pipeline:
    settings = BufferSettings(
        batch_size=int(buffer.get("batch_size", 100)),
        batch_age_s=0.05,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )
    return Pipeline(
        source,
        InfluxSink(transport),
        Decoder(check_time=False),
        LineBuilder(instance="t"),
        settings,
        stats_interval_s=3600,
        spool=spool,
    )


def run_until_drained(pipeline: Pipeline, source: FakeSource) -> None:
    stop = threading.Event()
    while source.messages:
        batch = pipeline._collect(stop)
        pipeline.handle(batch, stop)


def test_every_message_is_written_or_rejected_and_acked_in_order() -> None:
    messages = [msg(i) for i in range(10)]
    messages[3] = msg(3, b"not json")
    messages[6] = msg(6, json.dumps({"ts": NOW_MS, "purity_pct": 140}).encode())
    source, transport = FakeSource(messages), RecordingTransport()
    pipeline = make(source, transport, batch_size=4)
    run_until_drained(pipeline, source)
    assert source.acked == list(range(10))
    telemetry = [line for line in transport.lines if line.startswith("telemetry,")]
    rejected = [line for line in transport.lines if line.startswith("rejected,")]
    assert len(telemetry) == 8
    assert [line.split(",")[2].split(" ")[0] for line in rejected] == [
        "reason=not_json",
        "reason=out_of_range",
    ]
    assert pipeline.stats.points_written == 8
    assert pipeline.stats.rejected_by_reason == {"not_json": 1, "out_of_range": 1}


def test_transient_failures_are_retried_honouring_retry_after_and_nothing_is_acked_before() -> None:
    source = FakeSource([msg(i) for i in range(3)])
    transport = RecordingTransport([SinkRetryableError("503", 503, 0.01), SinkRetryableError("network")])
    pipeline = make(source, transport)
    with capture_logs() as logs:
        run_until_drained(pipeline, source)
    assert source.acked == [0, 1, 2]
    assert len(transport.lines) == 3
    assert pipeline.stats.write_retries == 2
    events = [e["event"] for e in logs]
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings.count("ingest.write_failing") == 1  # warned once per outage, not per attempt
    assert "ingest.write_resumed" in events


def test_stop_during_outage_leaves_the_batch_unacked() -> None:
    source = FakeSource([msg(i) for i in range(3)])
    transport = RecordingTransport([SinkRetryableError("down")] * 100)
    pipeline = make(source, transport)
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    pipeline.run(stop)
    timer.join()
    assert source.acked == []


def test_points_refused_by_influxdb_become_sink_rejected_records() -> None:
    # The unit id "conflict" makes the fake transport refuse that point, as InfluxDB does on a type conflict.
    source = FakeSource([msg(0), msg(1, unit="conflict"), msg(2)])
    transport = RecordingTransport()
    pipeline = make(source, transport)
    run_until_drained(pipeline, source)
    assert source.acked == [0, 1, 2]
    assert len([line for line in transport.lines if line.startswith("telemetry,")]) == 2
    refused = [line for line in transport.lines if "reason=sink_rejected" in line]
    assert len(refused) == 1
    assert 'unit_id="conflict"' in refused[0]


def test_fatal_sink_error_stops_the_loop_without_acking() -> None:
    source = FakeSource([msg(0)])
    pipeline = make(source, RecordingTransport([SinkAuthError("401", 401)]))
    with pytest.raises(SinkAuthError):
        pipeline.run(threading.Event())
    assert source.acked == []


def test_fatal_source_error_stops_the_loop() -> None:
    source = FakeSource([])
    source.fatal = SourceAuthError("not authorized")
    with pytest.raises(SourceAuthError):
        make(source, RecordingTransport()).run(threading.Event())


def test_stats_are_written_to_oxyfleet_ingest() -> None:
    source, transport = FakeSource([msg(0), msg(1, b"{")]), RecordingTransport()
    pipeline = make(source, transport)
    run_until_drained(pipeline, source)
    pipeline.write_stats()
    stats_line = transport.lines[-1]
    assert stats_line.startswith("oxyfleet_ingest,instance=t ")
    assert "messages_received=2i" in stats_line
    assert "points_written=1i" in stats_line
    assert "rejected_not_json=1i" in stats_line


# --- with the spool ------------------------------------------------------------------------------------


def telemetry_units(lines: list[str]) -> list[str]:
    return [
        line.split("unit_id=")[1].split(",")[0].split(" ")[0]
        for line in lines
        if line.startswith("telemetry,")
    ]


def test_an_outage_spools_and_acks_then_replays_everything_in_order(tmp_path: Path) -> None:
    source = FakeSource([msg(i, unit=f"U{i}") for i in range(6)])
    transport = RecordingTransport([SinkRetryableError("down")])
    spool = Spool(tmp_path, 1 << 20)
    pipeline = make(source, transport, spool, batch_size=2)
    pipeline.buffer = pipeline.buffer.model_copy(update={"retry_initial_s": 60.0})
    pipeline._delay = 60.0
    stop = threading.Event()
    with capture_logs() as logs:
        for _ in range(3):
            pipeline.handle(pipeline._collect(stop), stop)
    # One failed attempt, then the outage is not hammered: the next batches go straight to disk.
    assert transport.attempts == 1
    assert source.acked == [0, 1, 2, 3, 4, 5]
    assert (spool.batches, pipeline.stats.points_spooled, pipeline.stats.points_written) == (3, 6, 0)
    assert pipeline.snapshot()["spool_batches"] == 3
    assert pipeline.replay(stop, 10) == 0  # still inside the backoff window
    pipeline._retry_at = 0.0  # the window passes
    assert pipeline.replay(stop, 10) == 3
    assert telemetry_units(transport.lines) == [f"U{i}" for i in range(6)]
    assert (spool.batches, pipeline.stats.points_written, pipeline.stats.points_replayed) == (0, 6, 6)
    assert pipeline.snapshot()["spool_replay_points_per_s"] == 0.6
    assert [e["event"] for e in logs].count("ingest.write_failing") == 1


def test_replay_interleaves_with_live_batches_within_its_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for i in range(4):
        assert spool.put([f"telemetry,unit_id=old{i} purity_pct=90 {NOW_MS * 1_000_000 + i}"], 1)
    source = FakeSource([msg(i, unit=f"new{i}") for i in range(2)])
    transport = RecordingTransport()
    pipeline = make(source, transport, spool, batch_size=1)
    stop = threading.Event()
    for _ in range(2):
        pipeline.handle(pipeline._collect(stop), stop)
        pipeline.replay(stop, 0.0)  # a zero budget still replays one batch per live batch
    assert telemetry_units(transport.lines) == ["new0", "old0", "new1", "old1"]
    assert spool.batches == 2


def test_a_full_spool_stops_acking_until_influxdb_takes_the_batch(tmp_path: Path) -> None:
    source = FakeSource([msg(i, unit=f"U{i}") for i in range(3)])
    acked_at_failure: list[int] = []

    class Outage(RecordingTransport):
        def write(self, body: bytes) -> None:
            if self.failures:
                acked_at_failure.append(len(source.acked))
            super().write(body)

    transport = Outage([SinkRetryableError("down")] * 5)
    spool = Spool(tmp_path, 4096)
    assert spool.put([f"telemetry,unit_id=old{i} purity_pct=90 {i}" for i in range(90)], 90)
    assert spool.bytes > 3500  # nothing of the size of a batch fits any more
    pipeline = make(source, transport, spool, batch_size=3)
    with capture_logs() as logs:
        run_until_drained(pipeline, source)
    assert acked_at_failure == [0] * 5  # every failed attempt happened with nothing acked
    assert spool.batches == 1
    assert source.acked == [0, 1, 2]
    assert telemetry_units(transport.lines) == ["U0", "U1", "U2"]
    assert "ingest.spool_full" in [e["event"] for e in logs]


def test_points_refused_on_replay_are_kept_as_rejected_with_their_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    good = f"telemetry,unit_id=ok purity_pct=93 {NOW_MS * 1_000_000}"
    bad = f"telemetry,unit_id=conflict purity_pct=93 {NOW_MS * 1_000_000}"
    assert spool.put([good, bad], n_data=2)
    transport = RecordingTransport()
    pipeline = make(FakeSource([]), transport, spool)
    assert pipeline.replay(threading.Event(), 1.0) == 1
    assert good in transport.lines
    rejected = [line for line in transport.lines if line.startswith("rejected,")]
    assert len(rejected) == 1
    assert "reason=sink_rejected" in rejected[0]
    assert "unit_id=conflict" in rejected[0]
    assert (pipeline.stats.points_written, pipeline.stats.rejected_by_reason["sink_rejected"]) == (1, 1)


def test_health_reports_an_unwritable_influxdb_until_a_write_succeeds(tmp_path: Path) -> None:
    """/healthz's source: a batch that went to the spool, or failing counters while idle, say why."""
    source = FakeSource([msg(0)])
    # Retry-After 60 s: the batch surely goes to the spool instead of a quick second attempt.
    transport = RecordingTransport(
        [SinkRetryableError("InfluxDB unreachable: connection refused", None, 60.0)]
    )
    spool = Spool(tmp_path / "spool", 1 << 20, fsync=False)
    pipeline = make(source, transport, spool)
    assert pipeline.health() is None
    stop = threading.Event()
    pipeline.handle(pipeline._collect(stop), stop)  # the write fails: spooled and acked
    assert source.acked == [0] and spool.batches == 1
    reason = pipeline.health()
    assert reason is not None and "spooling to disk" in reason and "connection refused" in reason
    pipeline._retry_at = 0.0
    pipeline.replay(stop, 1.0)  # InfluxDB is back: the spool drains and the ingester is healthy again
    assert spool.batches == 0 and pipeline.health() is None
    # An idle ingester learns it from its counters, which it writes every stats interval.
    transport.failures.append(SinkRetryableError("InfluxDB unreachable: timed out"))
    pipeline.write_stats()
    assert "timed out" in (pipeline.health() or "")
    pipeline.write_stats()
    assert pipeline.health() is None


def test_healthz_answers_503_with_the_reason_and_200_again() -> None:
    import urllib.error
    import urllib.request

    from ingest.stats import serve_metrics

    reason: list[str | None] = ["cannot write to InfluxDB (spooling to disk): connection refused"]
    server = serve_metrics("127.0.0.1", 0, dict, "t", lambda: reason[0])
    assert server is not None
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        assert info.value.code == 503
        assert info.value.read().decode() == f"degraded: {reason[0]}\n"
        info.value.close()
        reason[0] = None
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
    finally:
        server.shutdown()
        server.server_close()


def test_stats_points_of_an_outage_are_kept_with_their_times_and_written_afterwards(tmp_path: Path) -> None:
    """Issue 19: the ingester's own numbers survive the outage they describe (memory, then the spool)."""
    source = FakeSource([msg(i, unit=f"U{i}") for i in range(2)])
    transport = RecordingTransport([SinkRetryableError("down")] * 4)
    spool = Spool(tmp_path, 1 << 20)
    pipeline = make(source, transport, spool, batch_size=1)
    stop = threading.Event()
    pipeline.write_stats()  # InfluxDB down: kept in memory
    pipeline.write_stats()
    assert pipeline.snapshot()["stats_pending"] == 2
    pipeline.handle(pipeline._collect(stop), stop)  # spooled, and the stats points ride along
    assert (spool.batches, pipeline.snapshot()["stats_pending"]) == (1, 0)
    pipeline._retry_at = 0.0
    pipeline.write_stats()  # the third failure: kept again
    pipeline.keep_stats()  # stopping during the outage: to the spool, with a last point
    assert spool.batches == 2
    pipeline._retry_at = 0.0
    assert pipeline.replay(stop, 10) == 2
    stats = [line for line in transport.lines if line.startswith("oxyfleet_ingest,")]
    assert len(stats) == 4
    times = [int(line.rsplit(" ", 1)[1]) for line in stats]
    assert times == sorted(times)  # original times, in order
    assert "spool_batches=0i" in stats[0]
    assert "spool_batches=1i" in stats[2]


def late_msg(i: int, unit: str, readings: list[int]) -> Inbound:
    body = json.dumps({"readings": [{"ts": ts, "purity_pct": 93.0} for ts in readings]}).encode()
    return Inbound(f"oxygen/concentrator/{unit}/telemetry", body, NOW_MS * 1_000_000 + i, 1, False, i)


def test_a_backlog_gets_one_late_marker_per_unit_per_batch_and_a_redelivery_overwrites_it() -> None:
    hour_ago = NOW_MS - 3600_000
    batch = [late_msg(i, f"U{i % 3}", [hour_ago + 10 * i, hour_ago + 10 * i + 1]) for i in range(30)]
    batch.append(msg(30))  # a fresh reading: no marker for it
    first, second = RecordingTransport(), RecordingTransport()
    for transport in (first, second):  # the same batch again: a redelivery after a crash before the ack
        source = FakeSource(list(batch))
        run_until_drained(make(source, transport), source)
    markers = [line for line in first.lines if line.startswith("late_data,")]
    assert len(markers) == 3  # 30 messages, 60 late readings, 3 units
    by_unit = {line.split("unit_id=")[1].split(",")[0].split(" ")[0]: line for line in markers}
    assert set(by_unit) == {"U0", "U1", "U2"}
    assert f"from_ms={hour_ago}i,to_ms={hour_ago + 271}i,count=20i" in by_unit["U0"]
    telemetry = [line for line in first.lines if line.startswith("telemetry,")]
    assert len(telemetry) == 61
    # Same series and time on redelivery (InfluxDB overwrites), and in the minute of arrival.
    assert sorted(markers) == sorted(line for line in second.lines if line.startswith("late_data,"))
    minute_ns = NOW_MS * 1_000_000 - (NOW_MS * 1_000_000) % 60_000_000_000
    for line in markers:
        assert minute_ns <= int(line.rsplit(" ", 1)[1]) < minute_ns + 60_000_000_000


def test_later_batches_of_a_drain_add_a_point_only_when_the_unit_starts_earlier() -> None:
    hour_ago = NOW_MS - 3600_000
    source, transport = FakeSource([]), RecordingTransport()
    pipeline = make(source, transport)
    stop = threading.Event()
    for batch in (
        [late_msg(0, "U1", [hour_ago + 100]), late_msg(1, "U2", [hour_ago])],
        [late_msg(2, "U1", [hour_ago + 200]), late_msg(3, "U2", [hour_ago])],  # U1 wider, U2 covered
        [late_msg(4, "U1", [hour_ago + 50])],  # earlier than U1's marker says: a new point
    ):
        pipeline.handle(batch, stop)
    markers = [line for line in transport.lines if line.startswith("late_data,")]

    def field(line: str, name: str) -> int:
        return int(line.split(f"{name}=", maxsplit=1)[1].split("i", maxsplit=1)[0])

    assert [(field(m, "from_ms") - hour_ago, field(m, "to_ms") - hour_ago) for m in markers] == [
        (100, 100),
        (0, 0),
        (100, 200),  # the same point rewritten with the wider range (the engine reads to_ms too)
        (50, 50),
    ]
    points = {(m.split(" ")[0], m.rsplit(" ", 1)[1]) for m in markers}
    assert len(points) == 3  # series and time: the rewrite overwrites, only U1's earlier start adds one
    assert markers[0].rsplit(" ", 1)[1] == markers[2].rsplit(" ", 1)[1]
    assert len([line for line in transport.lines if line.startswith("telemetry,")]) == 5


# --- one write in flight while the next batch is decoded (overlap_writes, issue 16) --------------------


class WaitingSource(FakeSource):
    """Like the MQTT inbox: an empty take waits (briefly), so the loop idles as it does in production."""

    def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
        if not self.messages:
            time.sleep(min(timeout, 0.005))
        return super().take(limit, timeout, max_bytes)


class GatedTransport(RecordingTransport):
    """The first write waits until the test opens the gate, then fails or succeeds as scripted.

    Records, for every attempt, how many messages had been acked and decoded when it started.
    """

    def __init__(self, source: FakeSource, failures: list[Exception] | None = None) -> None:
        super().__init__(failures)
        self.source = source
        self.gate = threading.Event()
        self.at_attempt: list[tuple[int, list[str]]] = []  # (acked, units written in this body)
        self.pipeline: Pipeline | None = None

    def write(self, body: bytes) -> None:
        self.at_attempt.append((len(self.source.acked), telemetry_units(body.decode().split("\n"))))
        if self.attempts == 0:
            assert self.gate.wait(10)
        super().write(body)


def run_in_thread(pipeline: Pipeline) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop, errors = threading.Event(), []

    def target() -> None:
        try:
            pipeline.run(stop)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, stop, errors


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_the_next_batch_is_decoded_while_one_is_written_and_acks_wait_for_its_answer() -> None:
    source = WaitingSource([msg(i, unit=f"U{i}") for i in range(6)])
    transport = GatedTransport(source)
    pipeline = make(source, transport, batch_size=2)
    assert pipeline.buffer.overlap_writes  # the default
    thread, stop, errors = run_in_thread(pipeline)
    # The first write is held by InfluxDB; meanwhile the second batch is decoded, and nothing is acked.
    wait_until(lambda: pipeline.stats.messages_received == 4)
    time.sleep(0.05)
    assert (source.acked, pipeline.stats.messages_received, len(transport.at_attempt)) == ([], 4, 1)
    assert pipeline.snapshot()["oldest_unwritten_age_s"] > 0
    transport.gate.set()
    wait_until(lambda: len(source.acked) == 6)
    stop.set()
    thread.join(5)
    assert not errors
    assert source.acked == list(range(6))
    # One write at a time, each batch sent only after the one before it was answered and acked.
    assert transport.at_attempt == [(0, ["U0", "U1"]), (2, ["U2", "U3"]), (4, ["U4", "U5"])]
    assert telemetry_units(transport.lines) == [f"U{i}" for i in range(6)]
    assert pipeline.snapshot()["oldest_unwritten_age_s"] == 0.0


def test_a_failed_write_while_the_next_batch_waits_spools_both_in_order_and_acks_after(
    tmp_path: Path,
) -> None:
    source = WaitingSource([msg(i, unit=f"U{i}") for i in range(4)])
    # InfluxDB fails the first write after holding it (a timeout, a 503), asking for 60 s of quiet.
    transport = GatedTransport(source, [SinkRetryableError("503", 503, 60.0)])
    spool = Spool(tmp_path, 1 << 20)
    pipeline = make(source, transport, spool, batch_size=2)
    thread, stop, errors = run_in_thread(pipeline)
    wait_until(lambda: pipeline.stats.messages_received == 4)
    assert source.acked == []
    transport.gate.set()
    wait_until(lambda: len(source.acked) == 4)
    stop.set()
    thread.join(5)
    assert not errors
    # The decoded second batch was never sent: it followed the first into the spool, behind it.
    assert transport.attempts == 1
    assert source.acked == [0, 1, 2, 3]
    assert (spool.batches, pipeline.stats.points_spooled, pipeline.stats.points_written) == (2, 4, 0)
    pipeline._retry_at = 0.0
    assert pipeline.replay(threading.Event(), 10) == 2
    assert telemetry_units(transport.lines) == ["U0", "U1", "U2", "U3"]
    assert spool.batches == 0


def test_without_a_spool_a_failed_write_is_retried_before_the_next_batch_is_sent() -> None:
    source = WaitingSource([msg(i, unit=f"U{i}") for i in range(4)])
    transport = GatedTransport(source, [SinkRetryableError("503", 503), SinkRetryableError("down")])
    pipeline = make(source, transport, batch_size=2)
    thread, stop, errors = run_in_thread(pipeline)
    wait_until(lambda: pipeline.stats.messages_received == 4)
    transport.gate.set()
    wait_until(lambda: len(source.acked) == 4)
    stop.set()
    thread.join(5)
    assert not errors
    # Three attempts for the first batch (two failures), with nothing acked; then the second batch.
    assert transport.at_attempt == [
        (0, ["U0", "U1"]),
        (0, ["U0", "U1"]),
        (0, ["U0", "U1"]),
        (2, ["U2", "U3"]),
    ]
    assert source.acked == [0, 1, 2, 3]
    assert telemetry_units(transport.lines) == ["U0", "U1", "U2", "U3"]


def test_stop_waits_for_the_answer_of_the_write_in_flight_and_acks_it() -> None:
    source = WaitingSource([msg(i, unit=f"U{i}") for i in range(2)])
    transport = GatedTransport(source)
    pipeline = make(source, transport, batch_size=2)
    thread, stop, errors = run_in_thread(pipeline)
    wait_until(lambda: len(transport.at_attempt) == 1)
    stop.set()
    time.sleep(0.05)
    assert source.acked == []
    transport.gate.set()
    thread.join(5)
    assert not errors and not thread.is_alive()
    assert source.acked == [0, 1]


def test_stop_while_the_write_in_flight_fails_without_a_spool_leaves_both_batches_unacked() -> None:
    source = WaitingSource([msg(i, unit=f"U{i}") for i in range(4)])
    transport = GatedTransport(source, [SinkRetryableError("down")] * 100)
    pipeline = make(source, transport, batch_size=2)
    thread, stop, errors = run_in_thread(pipeline)
    wait_until(lambda: pipeline.stats.messages_received == 4)
    with capture_logs() as logs:
        stop.set()
        transport.gate.set()
        thread.join(5)
    assert not errors and not thread.is_alive()
    assert source.acked == []
    stopped = [e for e in logs if e["event"] == "ingest.stopped_unacked"]
    assert [e["messages"] for e in stopped] == [4]


def test_with_a_write_in_flight_a_batch_is_cut_at_half_the_byte_budget() -> None:
    payload = b"x" * 10_000
    source = FakeSource([msg(i, payload) for i in range(20)])
    pipeline = make(source, RecordingTransport(), batch_size=100)
    pipeline.buffer = pipeline.buffer.model_copy(update={"max_bytes": 64 * 1024})
    stop = threading.Event()
    assert len(pipeline._collect(stop)) == 7  # serial: up to the budget (the last one crosses it)
    pipeline._writer = ThreadPoolExecutor(1)
    try:
        assert len(pipeline._collect(stop)) == 4  # two batches in hand: half of it each
    finally:
        pipeline._writer.shutdown()


def test_unknown_fields_are_counted_per_reading() -> None:
    one = json.dumps({"ts": NOW_MS, "purity_pct": 93.0, "rssi_dbm": -70, "fw": "1.2"}).encode()
    many = json.dumps(
        {
            "readings": [{"ts": NOW_MS + 1, "flow_lpm": 5.0, "x": 1}, {"ts": NOW_MS + 2, "running": True}],
            "note": 1,
        }
    ).encode()
    known = json.dumps({"ts": NOW_MS + 3, "seq": 4, "unit_id": "U1", "purity_pct": 93.0}).encode()
    source = FakeSource([msg(0, one), msg(1, many), msg(2, known)])
    pipeline = make(source, RecordingTransport())
    run_until_drained(pipeline, source)
    assert (pipeline.stats.points_written, pipeline.stats.unknown_fields) == (4, 4)


def test_batches_in_hand_across_a_reconnect_are_not_acked_on_the_new_connection() -> None:
    """The MQTT source's own inbox and acks: a batch decoded (or being written) when the connection drops
    is written but never acked on the next connection, whose packet ids mean other messages; the
    broker redelivers it and the rewrite overwrites the same points."""
    from core.settings import MqttSettings
    from ingest.source_mqtt import MqttSource

    source = MqttSource(MqttSettings())
    pubacks: list[bytes] = []
    source.client._packet_queue = lambda _c, packet, _m, _q: pubacks.append(packet)  # type: ignore[method-assign,assignment,misc]

    def deliver(first: int, n: int) -> None:
        source._on_publishes(
            [
                (
                    f"oxygen/concentrator/U{i}/telemetry".encode(),
                    json.dumps({"ts": NOW_MS - 1000 + i, "purity_pct": 93.0}).encode(),
                    1,
                    False,
                    i,
                )
                for i in range(first, first + n)
            ]
        )

    transport = GatedTransport(FakeSource([]))
    pipeline = Pipeline(
        source,
        InfluxSink(transport),
        Decoder(check_time=False),
        LineBuilder(instance="t"),
        BufferSettings(batch_size=2, batch_age_s=0.05),
        stats_interval_s=3600,
    )
    deliver(1, 4)
    thread, stop, errors = run_in_thread(pipeline)
    wait_until(lambda: pipeline.stats.messages_received == 4)  # one batch written, the next decoded
    source._on_disconnect(source.client, None, None, ReasonCode(PacketTypes.DISCONNECT), None)
    transport.gate.set()
    wait_until(lambda: pipeline.stats.batches_written == 2)
    assert (pubacks, pipeline.stats.messages_acked) == ([], 0)  # written, not acked
    deliver(1, 2)  # the broker redelivers on the new connection: these are acked
    wait_until(lambda: pipeline.stats.batches_written == 3)
    stop.set()
    thread.join(5)
    assert not errors
    assert pubacks == [b"\x40\x02\x00\x01\x40\x02\x00\x02"]
    assert telemetry_units(transport.lines) == ["U1", "U2", "U3", "U4", "U1", "U2"]
