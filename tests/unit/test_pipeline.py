"""The batch loop with a fake source and a fake transport: what gets written, rejected and acked, and when."""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from ingest.config import BufferSettings
from ingest.decode import Decoder, Inbound
from ingest.errors import SinkAuthError, SinkRejectedError, SinkRetryableError, SourceAuthError
from ingest.lineproto import LineBuilder
from ingest.pipeline import Pipeline
from ingest.sink_influx import InfluxSink

if TYPE_CHECKING:
    from collections.abc import Iterable

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

    def get(self, timeout: float) -> Inbound | None:
        return self.messages.popleft() if self.messages else None

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

    def write(self, body: bytes) -> None:
        if self.failures:
            raise self.failures.popleft()
        lines = body.decode().split("\n")
        if any(line.startswith("telemetry,") and "unit_id=conflict" in line for line in lines):
            raise SinkRejectedError("field type conflict", 400)
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def make(source: FakeSource, transport: RecordingTransport, **buffer: float) -> Pipeline:
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
    assert warnings.count("ingest.write_retrying") == 1  # warned once per outage, not per attempt
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
