"""A small InfluxQL client (``GET /query``): what the demo, ``check``, the tests and the health engine read with.

InfluxQL over ``/query`` is the one query interface InfluxDB 1.x, 2.x (v1 compatibility, token auth) and
3 Core all serve; influxdb-client has no InfluxQL API, hence this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import urllib3
from pydantic_core import from_json

from core.errors import SinkError
from store.writer import auth_headers, classify_response, map_transport_errors

if TYPE_CHECKING:
    from core.settings import InfluxSettings

__all__ = ["InfluxQL", "quote", "quote_any_case"]


def quote(value: str) -> str:
    """An InfluxQL string literal (single-quoted, backslash and quote escaped) for tag values in WHERE."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_any_case(value: str) -> str:
    r"""An InfluxQL regex literal matching a tag value equal to ``value`` whatever its case ("papua").

    For names people type (hospital, province). Every printable ASCII character but letters and digits is
    escaped (RE2 takes ``\`` before any of them, and InfluxQL's regex literal needs ``\/``), control
    characters are written as ``\x{..}``, so the name is matched as written, never as a pattern.
    """

    def escape(ch: str) -> str:
        if not ch.isascii() or ch.isalnum():
            return ch
        return f"\\x{{{ord(ch):x}}}" if not ch.isprintable() else f"\\{ch}"

    return "/(?i)^" + "".join(map(escape, value)) + "$/"


class InfluxQL:
    """Runs InfluxQL and returns rows as dicts; raises :mod:`core.errors` sink errors on failure."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.headers = auth_headers(username, password, token)
        # Several threads may share a reader (the API's workers, the engine): room for a connection each,
        # so none is discarded from a full pool without being closed, and close() closes them all.
        self.pool = urllib3.PoolManager(
            maxsize=8, retries=False, timeout=urllib3.Timeout(connect=5, read=timeout_s)
        )

    @classmethod
    def from_settings(cls, influx: InfluxSettings) -> InfluxQL:
        """Reader for the configured InfluxDB."""
        return cls(
            influx.url,
            influx.database,
            username=influx.username,
            password=influx.password_value(),
            token=influx.token_value(),
            timeout_s=influx.timeout_s,
        )

    def raw(self, q: str, *, epoch: str = "ms", method: str = "GET") -> dict[str, Any]:
        """The parsed JSON answer of one request (possibly several statements)."""
        fields = {"db": self.database, "q": q, "epoch": epoch}
        extra: dict[str, Any] = {} if method == "GET" else {"encode_multipart": False}
        with map_transport_errors():
            resp = self.pool.request(
                method, f"{self.url}/query", fields=fields, headers=self.headers, **extra
            )
        classify_response(resp.status, resp.data, resp.headers)
        # pydantic-core's Rust parser: answers of ~100,000 rows are a third of a health cycle's time, and it
        # decodes them about twice as fast as the json module.
        answer: dict[str, Any] = from_json(resp.data)
        for result in answer.get("results", []):
            if "error" in result:
                raise SinkError(f"InfluxQL error: {result['error']} (query: {q[:200]})")
        return answer

    def rows(self, q: str, *, epoch: str = "ms") -> list[dict[str, Any]]:
        """Rows of the first statement; tags of grouped series are merged into each row."""
        out: list[dict[str, Any]] = []
        results = self.raw(q, epoch=epoch).get("results", [])
        for series in results[0].get("series", []) if results else []:
            tags = series.get("tags", {})
            for values in series.get("values", []):
                row = dict(zip(series["columns"], values, strict=True))
                row.update(tags)
                out.append(row)
        return out

    def execute(self, q: str) -> None:
        """Run a statement that changes something (CREATE/DROP), with POST as InfluxDB requires."""
        self.raw(q, method="POST")

    def close(self) -> None:
        """Release connections."""
        self.pool.clear()
