"""The ingester's own counters (Telegraf's vocabulary), written to ``oxyfleet_ingest`` and served at /metrics.

Counters are plain ints updated from the pipeline thread (the MQTT thread only touches its own
``reconnects``), so no locks are needed; readers may see a value a moment old, which is fine for metrics.
"""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from core.metrics import registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

__all__ = ["METRICS", "PREFIX", "IngestCollector", "Stats", "scrape", "serve_metrics"]

PREFIX = "oxyfleet_ingest_"

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


# Snapshot key -> (Prometheus name after ``oxyfleet_ingest_``, type, scale, HELP). The stored field names
# (the snapshot keys) stay as they are for the dashboards; the exposition follows Prometheus' conventions
# (base units, ``_total`` on counters, which prometheus_client appends). Keys missing here (a gauge added
# to the pipeline later) are still exported, as gauges under their own name.
_COUNTER, _GAUGE = "counter", "gauge"
METRICS: dict[str, tuple[str, str, float, str]] = {
    "messages_received": ("messages_received", _COUNTER, 1, "MQTT messages taken from the inbox."),
    "messages_acked": ("messages_acked", _COUNTER, 1, "MQTT messages acknowledged to the broker."),
    "points_written": ("points_written", _COUNTER, 1, "Points InfluxDB accepted."),
    "points_rejected": ("points_rejected", _COUNTER, 1, "Messages or points rejected (dead-lettered)."),
    "unknown_fields": ("unknown_fields", _COUNTER, 1, "Payload fields the contract does not know (ignored)."),
    "write_requests": ("write_requests", _COUNTER, 1, "HTTP write requests sent to InfluxDB."),
    "write_retries": ("write_retries", _COUNTER, 1, "Write requests retried after a retryable failure."),
    "batches_written": ("batches_written", _COUNTER, 1, "Batches InfluxDB accepted."),
    "points_spooled": ("points_spooled", _COUNTER, 1, "Points put in the on-disk spool."),
    "batches_spooled": ("batches_spooled", _COUNTER, 1, "Batches put in the on-disk spool."),
    "points_replayed": ("points_replayed", _COUNTER, 1, "Spooled points written to InfluxDB afterwards."),
    "batches_replayed": ("batches_replayed", _COUNTER, 1, "Spooled batches written to InfluxDB afterwards."),
    "reconnects": ("reconnects", _COUNTER, 1, "Reconnections to the MQTT broker."),
    "points_unregistered": ("points_unregistered", _COUNTER, 1, "Points of units not in the inventory."),
    "spool_corrupt": ("spool_corrupt", _COUNTER, 1, "Damaged spool segments set aside (should stay 0)."),
    "last_batch_ms": ("last_batch_seconds", _GAUGE, 1e-3, "Duration of the last batch transaction."),
    "backlog": ("backlog", _GAUGE, 1, "Messages in the inbox: received, not yet taken."),
    "mqtt_subscribed": ("mqtt_subscribed", _GAUGE, 1, "1 while the MQTT subscription is in place."),
    "oldest_unwritten_age_s": (
        "oldest_unwritten_age_seconds",
        _GAUGE,
        1,
        "Age of the oldest point received and not yet written or spooled.",
    ),
    "spool_batches": ("spool_batches", _GAUGE, 1, "Batches waiting in the spool."),
    "spool_bytes": ("spool_bytes", _GAUGE, 1, "Bytes waiting in the spool."),
    "spool_max_bytes": ("spool_max_bytes", _GAUGE, 1, "The spool's bound in bytes."),
    "spool_oldest_age_s": (
        "spool_oldest_age_seconds",
        _GAUGE,
        1,
        "Age of the oldest spooled batch: how far behind InfluxDB is.",
    ),
    "spool_full": ("spool_full", _GAUGE, 1, "1 while acks are stopped because the spool is full."),
    "spool_replay_points_per_s": (
        "spool_replay_points_per_second",
        _GAUGE,
        1,
        "Spool replay rate over the last 10 s.",
    ),
    "broker_stored_messages": (
        "broker_stored_messages",
        _GAUGE,
        1,
        "Messages the broker holds besides the inbox (-1: the broker does not say).",
    ),
    "broker_stored_bytes": (
        "broker_stored_bytes",
        _GAUGE,
        1,
        "Bytes the broker holds besides the inbox (-1: the broker does not say).",
    ),
    "stats_pending": ("stats_pending", _GAUGE, 1, "The ingester's own points waiting for InfluxDB."),
}
_REJECTED = "rejected_"


class IngestCollector(Collector):
    """Reads the pipeline's ``snapshot()`` at scrape time.

    The hot path keeps incrementing plain ints (no locks, no per-message metric objects); the
    exposition is built only when Prometheus asks, from the same numbers that are stored.
    """

    def __init__(self, snapshot: Callable[[], dict[str, int | float]], ingester: str) -> None:
        self.snapshot = snapshot
        self.ingester = ingester

    def collect(self) -> Iterator[Metric]:
        """The identity as an info metric, then one family per snapshot value.

        An info metric rather than a label on every series: Prometheus' own ``instance`` target label
        says which endpoint was scraped, and a join on this one gives the configured name.
        """
        yield InfoMetricFamily(
            f"{PREFIX}ingester",
            "The ingester's configured identity (OXYFLEET_INSTANCE).",
            {"ingester": self.ingester},
        )
        values = self.snapshot()
        by_reason = CounterMetricFamily(
            f"{PREFIX}points_rejected_by_reason", "Rejected messages or points per reason.", labels=["reason"]
        )
        for key, value in sorted(values.items()):
            if key.startswith(_REJECTED):
                by_reason.add_metric([key.removeprefix(_REJECTED)], value)
                continue
            name, kind, scale, text = METRICS.get(key, (key, _GAUGE, 1, f"Snapshot value {key}."))
            family = CounterMetricFamily if kind == _COUNTER else GaugeMetricFamily
            yield family(f"{PREFIX}{name}", text, value=value * scale)
        yield by_reason


def serve_metrics(
    host: str,
    port: int,
    snapshot: Callable[[], dict[str, int | float]],
    instance: str,
    health: Callable[[], str | None] = lambda: None,
) -> ThreadingHTTPServer | None:
    """Serve ``/metrics`` (Prometheus text) and ``/healthz`` in a daemon thread; None if the port is taken.

    ``/metrics`` comes from prometheus_client over a registry of this server's own (HELP, TYPE,
    ``_total``, process metrics; OpenMetrics when the scraper asks for it). ``instance`` becomes the
    ``ingester`` label of ``oxyfleet_ingest_ingester_info``.

    ``/healthz`` answers 200 ``ok`` or, while ``health()`` gives a reason (InfluxDB cannot be written),
    503 ``degraded: <reason>``: a container healthcheck or a load balancer then sees an ingester that is
    only spooling. A busy metrics port must not stop ingestion, so it is a warning, not an exit.
    """
    metrics = registry(IngestCollector(snapshot, instance))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200
            if self.path.split("?", 1)[0] == "/metrics":
                encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(metrics)
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


def scrape(url: str, timeout: float = 2) -> dict[str, float]:
    """The /metrics of an ingester in another process, as short name -> value; ``{}`` when none answers.

    For `oxyfleet check`, the benchmarks and the tests: the text is read with prometheus_client's
    parser, as Prometheus reads it. Keys are the names after ``oxyfleet_ingest_`` (counters without
    ``_total``, i.e. the names of :data:`METRICS`); per-reason rejections are ``rejected_<reason>``.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            text = resp.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX) or family.type not in (_COUNTER, _GAUGE):
            continue
        name = family.name.removeprefix(PREFIX)
        for sample in family.samples:
            if not sample.labels:
                values[name] = sample.value
            elif list(sample.labels) == ["reason"]:
                values[f"{_REJECTED}{sample.labels['reason']}"] = sample.value
    return values
