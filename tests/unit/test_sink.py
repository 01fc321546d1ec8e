"""Sink error classification and isolation of bad points, with a fake transport (like httpx MockTransport)."""

from __future__ import annotations

import pytest

from core.errors import (
    SinkAuthError,
    SinkNotFoundError,
    SinkRejectedError,
    SinkRetryableError,
    SinkTooLargeError,
)
from store.writer import InfluxSink, classify_response


class FakeTransport:
    """Refuses any body containing a 'bad' line (400) or more than max_lines lines (413)."""

    def __init__(self, max_lines: int = 10_000) -> None:
        self.max_lines = max_lines
        self.bodies: list[bytes] = []
        self.stored: set[str] = set()

    def write(self, body: bytes) -> None:
        self.bodies.append(body)
        lines = body.decode().split("\n")
        if len(lines) > self.max_lines:
            raise SinkTooLargeError("too large", 413)
        # Like InfluxDB 1.x: a partial write stores the good lines and still answers 400.
        self.stored.update(line for line in lines if "bad" not in line)
        if any("bad" in line for line in lines):
            raise SinkRejectedError("partial write: unable to parse", 400)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, SinkRejectedError),
        (422, SinkRejectedError),
        (401, SinkAuthError),
        (403, SinkAuthError),
        (404, SinkNotFoundError),
        (413, SinkTooLargeError),
        (429, SinkRetryableError),
        (500, SinkRetryableError),
        (503, SinkRetryableError),
    ],
)
def test_classification(status: int, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        classify_response(status, b'{"error":"x"}')


def test_2xx_is_success() -> None:
    classify_response(204, b"")


def test_retry_after_seconds_and_date() -> None:
    with pytest.raises(SinkRetryableError) as info:
        classify_response(429, b"", {"Retry-After": "7"})
    assert info.value.retry_after == 7.0
    with pytest.raises(SinkRetryableError) as info:
        classify_response(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert info.value.retry_after == 0.0  # a date in the past means "now"


def test_auth_error_says_what_to_fix() -> None:
    with pytest.raises(SinkAuthError, match="OXYFLEET_INFLUX__TOKEN"):
        classify_response(401, b"unauthorized")


def test_bad_lines_are_isolated_and_the_rest_written() -> None:
    lines = [f"m v={i}i {i}" for i in range(100)]
    lines[13] = "bad line"
    lines[77] = "another bad line"
    transport = FakeTransport()
    report = InfluxSink(transport).write(lines)
    assert sorted(report.rejected) == [13, 77]
    assert transport.stored == {line for i, line in enumerate(lines) if i not in (13, 77)}
    assert report.requests == len(transport.bodies) < 30  # bisection, not one request per line


def test_413_splits_until_it_fits() -> None:
    lines = [f"m v={i}i {i}" for i in range(64)]
    transport = FakeTransport(max_lines=10)
    report = InfluxSink(transport).write(lines)
    assert not report.rejected
    assert transport.stored == set(lines)


def test_retryable_errors_go_up_untouched() -> None:
    class Down(FakeTransport):
        def write(self, body: bytes) -> None:
            raise SinkRetryableError("503", 503, 2.0)

    with pytest.raises(SinkRetryableError):
        InfluxSink(Down()).write(["m v=1i 1"])


def test_empty_batch_sends_nothing() -> None:
    transport = FakeTransport()
    assert InfluxSink(transport).write([]).requests == 0
    assert transport.bodies == []
