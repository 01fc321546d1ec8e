"""The ingester's own counters (Telegraf's vocabulary), written to ``oxyfleet_ingest`` and served at /metrics.

Counters are plain ints updated from the pipeline thread (the MQTT thread only touches its own
``reconnects``), so no locks are needed; readers may see a value a moment old, which is fine for metrics.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Stats", "serve_metrics"]

log = structlog.get_logger("ingest.stats")


@dataclass
class Stats:
    """Counters since start. ``snapshot()`` is what gets stored and exported."""

    messages_received: int = 0
    messages_acked: int = 0
    points_written: int = 0
    points_rejected: int = 0
    unknown_fields: int = 0
    write_requests: int = 0
    write_retries: int = 0
    batches_written: int = 0
    points_spooled: int = 0
    batches_spooled: int = 0
    points_replayed: int = 0
    batches_replayed: int = 0
    last_batch_ms: float = 0.0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    # Filled in by the pipeline when a snapshot is taken.
    gauges: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, int | float]:
        """Flat name -> value, with per-reason rejection counts as ``rejected_<reason>``."""
        values: dict[str, int | float] = {
            "messages_received": self.messages_received,
            "messages_acked": self.messages_acked,
            "points_written": self.points_written,
            "points_rejected": self.points_rejected,
            "unknown_fields": self.unknown_fields,
            "write_requests": self.write_requests,
            "write_retries": self.write_retries,
            "batches_written": self.batches_written,
            "points_spooled": self.points_spooled,
            "batches_spooled": self.batches_spooled,
            "points_replayed": self.points_replayed,
            "batches_replayed": self.batches_replayed,
            "last_batch_ms": float(self.last_batch_ms),
        }
        for reason, n in self.rejected_by_reason.items():
            values[f"rejected_{reason}"] = n
        values.update(self.gauges)
        return values


def _prometheus(values: dict[str, int | float], instance: str) -> str:
    out = []
    for name, value in sorted(values.items()):
        if name.startswith("rejected_"):
            continue
        metric = f"oxyfleet_ingest_{name}"
        out.append(f'{metric}{{instance="{instance}"}} {value}')
    for name, value in sorted(values.items()):
        if name.startswith("rejected_"):
            reason = name.removeprefix("rejected_")
            out.append(
                f'oxyfleet_ingest_points_rejected_by_reason{{instance="{instance}",reason="{reason}"}} {value}'
            )
    return "\n".join(out) + "\n"


def serve_metrics(
    host: str,
    port: int,
    snapshot: Callable[[], dict[str, int | float]],
    instance: str,
    health: Callable[[], str | None] = lambda: None,
) -> ThreadingHTTPServer | None:
    """Serve ``/metrics`` (Prometheus text) and ``/healthz`` in a daemon thread; None if the port is taken.

    ``/healthz`` answers 200 ``ok`` or, while ``health()`` gives a reason (InfluxDB cannot be written),
    503 ``degraded: <reason>``: a container healthcheck or a load balancer then sees an ingester that is
    only spooling. A busy metrics port must not stop ingestion, so it is a warning, not an exit.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200
            if self.path == "/metrics":
                body = _prometheus(snapshot(), instance).encode()
                ctype = "text/plain; version=0.0.4"
            elif self.path == "/healthz":
                reason = health()
                status = 200 if reason is None else 503
                body, ctype = (b"ok\n" if reason is None else f"degraded: {reason}\n".encode()), "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log.warning("ingest.metrics_unavailable", host=host, port=port, error=str(exc))
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
