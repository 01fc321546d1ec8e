"""The v2 write path (influxdb-client -> /api/v2/write) against a local stand-in HTTP server.

No InfluxDB 2.x or 3 Core can run on these machines (Debian ships InfluxDB 1.6.7, whose /api/v2/write
answers 404; it arrived in 1.8), so this stand-in enforces the documented contract of
``POST /api/v2/write`` instead: query parameters ``org``, ``bucket`` and ``precision``; header
``Authorization: Token <token>``; a ``text/plain`` line-protocol body (gzip when Content-Encoding says
so). It answers 204 on success and, as scripted per test, 400 (with the JSON error body 2.x sends) for
bad lines, 401 for a wrong token, 404 for an unknown bucket, 413 above a size limit, and 429/503 with
Retry-After. The v1 path is tested against the real InfluxDB 1.6.7 in test_ingest.py.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest

from core.errors import SinkAuthError, SinkNotFoundError, SinkRetryableError, SourceAuthError
from core.settings import BufferSettings
from ingest.decode import Decoder, Inbound
from ingest.pipeline import Pipeline
from store.lineproto import LineBuilder
from store.writer import InfluxSink, V2Transport

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

TOKEN = "test-token-not-a-secret"
ORG = "oxyfleet-org"
BUCKET = "oxyfleet"


@dataclass
class StandIn:
    url: str = ""
    stored: list[str] = field(default_factory=list)
    requests: list[dict[str, object]] = field(default_factory=list)
    contract_violations: list[str] = field(default_factory=list)
    scripted: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    max_lines: int = 1_000_000


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - the contract, check by check
    class Handler(BaseHTTPRequestHandler):
        def _answer(
            self, status: int, body: dict[str, str] | None = None, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode() if body else b""
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            state.requests.append(
                {"path": url.path, "params": params, "headers": dict(self.headers), "body": body}
            )
            if url.path != "/api/v2/write":
                state.contract_violations.append(f"path {url.path}")
                self._answer(404, {"code": "not found", "message": "path not found"})
                return
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self._answer(401, {"code": "unauthorized", "message": "unauthorized access"})
                return
            if params.get("org") != ORG:
                state.contract_violations.append(f"org {params.get('org')!r}")
            if params.get("precision") not in ("ns", "us", "ms", "s"):
                state.contract_violations.append(f"precision {params.get('precision')!r}")
            if not self.headers.get("Content-Type", "").startswith("text/plain"):
                state.contract_violations.append(f"content type {self.headers.get('Content-Type')!r}")
            if params.get("bucket") != BUCKET:
                self._answer(
                    404, {"code": "not found", "message": f'bucket "{params.get("bucket")}" not found'}
                )
                return
            if state.scripted:
                status, headers = state.scripted.popleft()
                self._answer(status, {"code": "scripted", "message": f"scripted {status}"}, headers)
                return
            lines = body.decode().split("\n")
            if len(lines) > state.max_lines:
                self._answer(413, {"code": "request too large", "message": "too many lines"})
                return
            bad = [line for line in lines if " " not in line]
            good = [line for line in lines if " " in line]
            if bad:
                # 2.x rejects the whole request on a parse error and says which line.
                self._answer(
                    400, {"code": "invalid", "message": f"unable to parse '{bad[0]}': missing fields"}
                )
                return
            state.stored.extend(good)
            self._answer(204)

        def log_message(self, *_args: object) -> None:
            return

    return Handler


@pytest.fixture
def standin() -> Iterator[StandIn]:
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    assert state.contract_violations == []


def sink(state: StandIn, *, token: str = TOKEN, bucket: str = BUCKET, use_gzip: bool = False) -> InfluxSink:
    return InfluxSink(
        V2Transport(state.url, token=token, org=ORG, bucket=bucket, use_gzip=use_gzip, timeout_s=5)
    )


LINES = [f"telemetry,unit_id=U{i} purity_pct=93.0 {1764140400000000000 + i}" for i in range(20)]


@pytest.mark.parametrize("use_gzip", [False, True])
def test_204_writes_with_the_documented_request(standin: StandIn, use_gzip: bool) -> None:
    report = sink(standin, use_gzip=use_gzip).write(LINES)
    assert report.rejected == {}
    assert standin.stored == LINES
    request = standin.requests[0]
    assert request["params"] == {"org": ORG, "bucket": BUCKET, "precision": "ns"}
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["Authorization"] == f"Token {TOKEN}"
    assert (headers.get("Content-Encoding") == "gzip") is use_gzip


def test_400_isolates_the_bad_line(standin: StandIn) -> None:
    lines = [*LINES[:7], "garbage", *LINES[7:]]
    report = sink(standin).write(lines)
    assert list(report.rejected) == [7]
    assert "unable to parse" in report.rejected[7]
    assert sorted(standin.stored) == sorted(LINES)


def test_413_splits(standin: StandIn) -> None:
    standin.max_lines = 6
    report = sink(standin).write(LINES)
    assert report.rejected == {}
    assert sorted(standin.stored) == sorted(LINES)


def test_401_is_fatal_and_says_what_to_fix(standin: StandIn) -> None:
    with pytest.raises(SinkAuthError, match="TOKEN"):
        sink(standin, token="wrong").write(LINES)


def test_404_unknown_bucket_is_fatal(standin: StandIn) -> None:
    with pytest.raises(SinkNotFoundError, match="BUCKET"):
        sink(standin, bucket="nope").write(LINES)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_retryable_with_retry_after(standin: StandIn, status: int) -> None:
    standin.scripted.append((status, {"Retry-After": "3"}))
    with pytest.raises(SinkRetryableError) as info:
        sink(standin).write(LINES)
    assert info.value.retry_after == 3.0
    assert info.value.status == status


def test_pipeline_over_v2_waits_out_throttling_and_loses_nothing(standin: StandIn) -> None:
    standin.scripted.extend([(429, {"Retry-After": "0.2"}), (503, {}), (500, {})])
    payloads = [json.dumps({"ts": 1764140400000 + i, "purity_pct": 93.0}).encode() for i in range(25)]
    messages = deque(
        Inbound("oxygen/concentrator/U1/telemetry", p, 1764140400000 * 1_000_000, 1, False, i)
        for i, p in enumerate(payloads)
    )
    acked: list[object] = []

    class Source:
        fatal: SourceAuthError | None = None
        reconnects = 0

        def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
            return [messages.popleft() for _ in range(min(limit, len(messages)))]

        def ack(self, batch: Iterable[Inbound]) -> int:
            tokens = [m.ack_token for m in batch]
            acked.extend(tokens)
            return len(tokens)

        def pending(self) -> int:
            return len(messages)

    pipeline = Pipeline(
        Source(),
        sink(standin),
        Decoder(check_time=False),
        LineBuilder(),
        BufferSettings(batch_size=100, batch_age_s=0.05, retry_initial_s=0.01),
        stats_interval_s=3600,
    )
    stop = threading.Event()
    pipeline.handle(pipeline._collect(stop), stop)
    assert acked == list(range(25))
    assert len(standin.stored) == 25
    assert pipeline.stats.write_retries == 3
