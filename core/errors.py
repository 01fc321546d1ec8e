"""The exceptions oxyfleet raises, and what each means for an operator.

::

    OxyfleetError
    ├── ConfigError              settings are invalid or point at something unusable; exit 2
    ├── SourceError              the MQTT side
    │   └── SourceAuthError      the broker refused our credentials; fatal, exit 3
    └── SinkError                the InfluxDB side (raised only by store.writer)
        ├── SinkFatalError       retrying cannot help; stop and tell the operator; exit 3
        │   ├── SinkAuthError        401/403: token or user/password wrong, or lacks write permission
        │   └── SinkNotFoundError    404: database/bucket (or the API itself) does not exist
        ├── SinkRejectedError    400/422: the server refused (some of) the points - the data is bad
        ├── SinkTooLargeError    413: the body is too large; split it
        └── SinkRetryableError   429/503/5xx/network: keep the data, wait (Retry-After) and retry

HTTP and library exceptions are translated into this tree in one place
(:func:`store.writer.classify_response` and :func:`store.writer.map_transport_errors`), so the
pipeline decides what to do from the class alone, the way Telegraf's influxdb_v2 output does.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "OxyfleetError",
    "SinkAuthError",
    "SinkError",
    "SinkFatalError",
    "SinkNotFoundError",
    "SinkRejectedError",
    "SinkRetryableError",
    "SinkTooLargeError",
    "SourceAuthError",
    "SourceError",
]


class OxyfleetError(Exception):
    """Base of everything oxyfleet raises on purpose."""


class ConfigError(OxyfleetError):
    """The configuration cannot work; the message says which setting to change."""


class SourceError(OxyfleetError):
    """Trouble on the MQTT side."""


class SourceAuthError(SourceError):
    """The broker refused the connection for a reason retrying will not fix (credentials, ACL, TLS)."""


class SinkError(OxyfleetError):
    """Trouble on the InfluxDB side."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SinkFatalError(SinkError):
    """Retrying cannot help; the operator must change something."""


class SinkAuthError(SinkFatalError):
    """401/403 from InfluxDB."""


class SinkNotFoundError(SinkFatalError):
    """404 from InfluxDB: the database or bucket is missing, or the URL/API flavour is wrong."""


class SinkRejectedError(SinkError):
    """400/422: the server refused points as malformed or conflicting. Resending the same body fails again."""


class SinkTooLargeError(SinkError):
    """413: the request body is larger than the server accepts."""


class SinkRetryableError(SinkError):
    """Transient: throttled, unavailable, server error or network trouble."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after
