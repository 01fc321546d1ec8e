"""Write line protocol to InfluxDB, v1 ``/write`` or v2 ``/api/v2/write``, behind one interface.

The transports only send bytes and translate every failure into :mod:`core.errors`; the
:class:`InfluxSink` above them decides what a failure means for the points:

- 2xx: written.
- 400/422: some points are bad. Bisect down to single lines; the bad ones come back as rejected with the
  server's message, the rest are written. Writes are idempotent (same series + time overwrites), so
  re-sending the good half of a partially written batch is harmless.
- 413: split the body and send the halves.
- 429/503/5xx/network: :class:`~core.errors.SinkRetryableError` goes up to the caller, which keeps
  the batch, waits (``Retry-After`` when given) and tries again; this is where the on-disk spool slots in.
- 401/403/404: :class:`~core.errors.SinkFatalError` goes up and stops the ingester with the message.

The sink never knows about MQTT.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlencode

import structlog
import urllib3

from core.errors import (
    SinkAuthError,
    SinkError,
    SinkNotFoundError,
    SinkRejectedError,
    SinkRetryableError,
    SinkTooLargeError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from core.settings import InfluxSettings

__all__ = [
    "InfluxSink",
    "Transport",
    "V1Transport",
    "V2Transport",
    "WriteReport",
    "auth_headers",
    "classify_response",
    "make_transport",
    "map_transport_errors",
    "prepare_database",
]

log = structlog.get_logger("store.writer")

_MAX_RETRY_AFTER: Final = 300.0


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        from datetime import UTC, datetime  # noqa: PLC0415 - rare path

        delta = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        return min(max(delta, 0.0), _MAX_RETRY_AFTER)
    return None


def _short(body: bytes | str | None) -> str:
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:300]


def classify_response(
    status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None
) -> None:
    """Raise the :mod:`core.errors` class for a non-2xx write response; return for 2xx."""
    if 200 <= status < 300:
        return
    message = _short(body) or f"HTTP {status}"
    retry_after = _retry_after((headers or {}).get("Retry-After"))
    if status in (401, 403):
        raise SinkAuthError(
            f"InfluxDB refused the credentials (HTTP {status}: {message}); check OXYFLEET_INFLUX__TOKEN or "
            "OXYFLEET_INFLUX__USERNAME/PASSWORD and that they may write to the database/bucket",
            status,
        )
    if status == 404:
        raise SinkNotFoundError(
            f"InfluxDB answered 404 ({message}): the database/bucket does not exist or the URL/API flavour "
            "is wrong; check OXYFLEET_INFLUX__URL, OXYFLEET_INFLUX__API and OXYFLEET_INFLUX__DATABASE/BUCKET",
            status,
        )
    if status == 413:
        raise SinkTooLargeError(f"request too large: {message}", status)
    if status in (400, 422):
        raise SinkRejectedError(message, status)
    if status == 429 or status >= 500:
        raise SinkRetryableError(f"HTTP {status}: {message}", status, retry_after)
    # Anything else (3xx, odd 4xx) is not something waiting fixes; but dropping data is worse than
    # stalling, so treat it as retryable and let the operator see the repeated warning.
    raise SinkRetryableError(f"unexpected HTTP {status}: {message}", status, retry_after)


@contextlib.contextmanager
def map_transport_errors() -> Iterator[None]:
    """Translate urllib3 and influxdb-client exceptions into :mod:`core.errors` (the one place that does)."""
    try:
        yield
    except SinkError:
        raise
    except urllib3.exceptions.HTTPError as exc:  # connection refused, reset, timeout, TLS...
        raise SinkRetryableError(f"network error talking to InfluxDB: {exc}") from exc
    except OSError as exc:
        raise SinkRetryableError(f"network error talking to InfluxDB: {exc}") from exc
    except Exception as exc:
        from influxdb_client.rest import ApiException  # noqa: PLC0415 - keep the v1 path free of it

        if isinstance(exc, ApiException) and exc.status is not None:
            headers = {"Retry-After": exc.headers.get("Retry-After")} if exc.headers else None
            classify_response(int(exc.status), exc.body, headers)  # type: ignore[arg-type]
        raise


def auth_headers(username: str | None, password: str | None, token: str | None) -> dict[str, str]:
    """The Authorization header for InfluxDB: a token (2.x, 3 Core, 1.8+) wins over v1 Basic credentials."""
    if token:
        return {"Authorization": f"Token {token}"}
    if username:
        cred = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        return {"Authorization": f"Basic {cred}"}
    return {}


class Transport(Protocol):
    """Sends one body of newline-separated line protocol at nanosecond precision."""

    def write(self, body: bytes) -> None:
        """Send ``body``; return on 2xx, raise an :class:`~core.errors.SinkError` otherwise."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class V1Transport:
    """``POST /write?db=&rp=&precision=ns``: InfluxDB 1.x, 2.x (v1 compatibility, DBRP mapping) and 3 Core."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        use_gzip: bool = False,
        ca_file: str | None = None,
        verify_tls: bool = True,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        self._write_url = f"{self.url}/write?{urlencode(params)}"
        self.headers = {
            "Content-Type": "text/plain; charset=utf-8",
            **auth_headers(username, password, token),
        }
        self.use_gzip = use_gzip
        if use_gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        self.pool = pool or urllib3.PoolManager(
            num_pools=2,
            maxsize=4,
            retries=False,
            ca_certs=ca_file,
            cert_reqs="CERT_REQUIRED" if verify_tls else "CERT_NONE",
        )

    def write(self, body: bytes) -> None:
        """Send ``body`` to ``/write``."""
        data = gzip.compress(body, compresslevel=1) if self.use_gzip else body
        with map_transport_errors():
            resp = self.pool.request(
                "POST", self._write_url, body=data, headers=self.headers, timeout=self.timeout, retries=False
            )
        classify_response(resp.status, resp.data, resp.headers)

    def query(self, q: str, database: str | None = None) -> urllib3.BaseHTTPResponse:
        """POST an InfluxQL statement (used to create the database); errors are the caller's to read."""
        fields = {"q": q}
        if database:
            fields["db"] = database
        with map_transport_errors():
            return self.pool.request(
                "POST",
                f"{self.url}/query",
                fields=fields,
                encode_multipart=False,
                headers={k: v for k, v in self.headers.items() if k == "Authorization"},
                timeout=self.timeout,
                retries=False,
            )

    def close(self) -> None:
        """Release connections."""
        self.pool.clear()


class V2Transport:
    """``/api/v2/write`` through influxdb-client: InfluxDB 2.x, 3 Core, and 1.8+ (``db/rp`` as bucket)."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        org: str,
        bucket: str,
        timeout_s: float = 10.0,
        use_gzip: bool = False,
        ca_file: str | None = None,
        verify_tls: bool = True,
    ) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415 - v2 users only
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        # Synchronous writes under our own batching: influxdb-client's batching mode drops a batch when
        # its retries run out, and we must decide that ourselves (keep, split or reject). retries=False
        # because retrying is the sink's job, with Retry-After.
        self.client = InfluxDBClient(
            url=url,
            token=token,
            org=org,
            timeout=int(timeout_s * 1000),
            enable_gzip=use_gzip,
            verify_ssl=verify_tls,
            ssl_ca_cert=ca_file,
            retries=False,
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.bucket = bucket
        self.org = org
        self.precision = WritePrecision.NS

    def check(self) -> str | None:
        """None when the bucket is reachable with the token; else what is wrong (for ``oxyfleet check``)."""
        try:
            with map_transport_errors():
                found = self.client.buckets_api().find_bucket_by_name(self.bucket)  # type: ignore[no-untyped-call]
        except SinkError as exc:
            return str(exc)
        return None if found else f"bucket {self.bucket!r} not found (or the token cannot see it)"

    def write(self, body: bytes) -> None:
        """Send ``body`` to ``/api/v2/write``."""
        with map_transport_errors():
            self.write_api.write(
                bucket=self.bucket,
                org=self.org,
                record=body,
                write_precision=self.precision,  # type: ignore[arg-type]  # WritePrecision.NS is the str "ns"
            )

    def close(self) -> None:
        """Release connections."""
        self.client.close()  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class WriteReport:
    """Outcome of :meth:`InfluxSink.write`: which lines the server refused, and how many requests it took."""

    rejected: dict[int, str] = field(default_factory=dict)  # line index -> server message
    requests: int = 0


class InfluxSink:
    """Writes a batch of lines, isolating refused lines and splitting oversized bodies."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def write(self, lines: Sequence[str]) -> WriteReport:
        """Write ``lines``.

        Returns which lines were refused (400/422, or 413 on a single line); everything else is written.
        Raises :class:`~core.errors.SinkRetryableError` (nothing can be assumed written: retry the whole
        batch, which is safe because writes are idempotent) or :class:`~core.errors.SinkFatalError`.
        """
        report = WriteReport()
        if lines:
            self._write(lines, 0, len(lines), report)
        return report

    def _write(self, lines: Sequence[str], lo: int, hi: int, report: WriteReport) -> None:
        report.requests += 1
        try:
            self.transport.write("\n".join(lines[lo:hi]).encode())
        except (SinkRejectedError, SinkTooLargeError) as exc:
            if hi - lo == 1:
                report.rejected[lo] = str(exc) or type(exc).__name__
                return
            mid = (lo + hi) // 2
            self._write(lines, lo, mid, report)
            self._write(lines, mid, hi, report)

    def close(self) -> None:
        """Release the transport."""
        self.transport.close()


def make_transport(influx: InfluxSettings) -> Transport:
    """The transport for the configured API flavour."""
    ca = str(influx.ca_file) if influx.ca_file else None
    if influx.api == "v2":
        token = influx.token_value()
        assert token is not None  # validated in InfluxSettings
        return V2Transport(
            influx.url,
            token=token,
            org=influx.org or "",
            bucket=influx.bucket_name(),
            timeout_s=influx.timeout_s,
            use_gzip=influx.gzip,
            ca_file=ca,
            verify_tls=influx.verify_tls,
        )
    return V1Transport(
        influx.url,
        influx.database,
        retention_policy=influx.retention_policy,
        username=influx.username,
        password=influx.password_value(),
        token=influx.token_value(),
        timeout_s=influx.timeout_s,
        use_gzip=influx.gzip,
        ca_file=ca,
        verify_tls=influx.verify_tls,
    )


def prepare_database(transport: Transport, influx: InfluxSettings) -> None:
    """v1: create the database when allowed (idempotent in InfluxDB 1.x); auth problems stop here, early."""
    if not isinstance(transport, V1Transport) or not influx.create_database:
        return
    name = influx.database.replace("\\", "\\\\").replace('"', '\\"')
    # Unreachable InfluxDB raises SinkRetryableError: `oxyfleet run` exits 1 and its supervisor restarts
    # it; meanwhile the broker holds our messages in the persistent session.
    resp = transport.query(f'CREATE DATABASE "{name}"')
    if resp.status in (401, 403):
        classify_response(resp.status, resp.data)
    if resp.status >= 300:
        log.warning(
            "store.create_database_failed",
            status=resp.status,
            body=resp.data[:200].decode(errors="replace"),
            hint="create it yourself or set OXYFLEET_INFLUX__CREATE_DATABASE=false",
        )
