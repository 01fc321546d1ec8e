"""Composition of the ingester: settings in, a ready-to-run :class:`Ingester` out.

``oxyfleet run``, the demo and the tests build the ingester here, the same way; the shell only parses
arguments and maps errors to exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from core.errors import ConfigError, SinkRetryableError
from ingest.decode import Decoder
from ingest.pipeline import Pipeline
from ingest.source_mqtt import MqttSource
from ingest.spool import Spool
from store.lineproto import LineBuilder
from store.writer import InfluxSink, make_transport, prepare_database

if TYPE_CHECKING:
    import threading

    from core.settings import Settings
    from store.lineproto import TagLookup

__all__ = ["Ingester", "build_ingester"]

log = structlog.get_logger("ingest.service")


@dataclass
class Ingester:
    """Everything ``oxyfleet run`` starts, so the CLI, the demo and tests start it the same way."""

    settings: Settings
    source: MqttSource
    sink: InfluxSink
    pipeline: Pipeline
    metrics_server: Any = None

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Connect, ingest until stopped, then disconnect and release everything."""
        self.source.start()
        try:
            self.pipeline.run(stop, duration_s)
        finally:
            self.pipeline.keep_stats()  # stats points an outage kept from InfluxDB go to the spool
            self.source.stop()
            self.sink.close()
            if self.pipeline.spool is not None:
                self.pipeline.spool.close()
            if self.metrics_server is not None:
                self.metrics_server.shutdown()


def build_ingester(settings: Settings, tags: TagLookup | None = None, *, serve: bool = True) -> Ingester:
    """Build (but do not start) an ingester from settings; checks InfluxDB access on the way."""
    if tags is None and settings.inventory_file is not None:
        from devices.inventory import InventoryError  # noqa: PLC0415
        from ingest.inventory_tags import InventoryTags  # noqa: PLC0415

        try:
            tags = InventoryTags(settings.inventory_file, settings.inventory_check_s)
        except InventoryError as exc:
            raise ConfigError(f"OXYFLEET_INVENTORY_FILE: the inventory has problems:\n{exc}") from exc
    transport = make_transport(settings.influx)
    try:
        prepare_database(transport, settings.influx)
    except SinkRetryableError as exc:
        if not settings.spool.enabled:
            raise
        # A site's power comes back before its InfluxDB does: with a spool there is no reason to wait.
        log.warning(
            "ingest.influx_unreachable_at_start",
            error=str(exc),
            note="starting anyway; batches go to the spool until InfluxDB answers",
        )
    payload = settings.payload
    source = MqttSource(
        settings.mqtt,
        max_pending=settings.buffer.max_pending,
        max_pending_bytes=settings.buffer.max_bytes,
        max_payload_bytes=payload.max_bytes,
    )
    decoder = Decoder(
        settings.mqtt.topic_prefix,
        max_bytes=payload.max_bytes,
        max_readings=payload.max_readings,
        max_future_ms=payload.max_future_s * 1000,
        backfill_ms=payload.backfill_s * 1000,
    )
    sink = InfluxSink(transport)
    spool = None
    if settings.spool.enabled:
        spool = Spool(settings.spool.dir, settings.spool.max_bytes, fsync=settings.spool.fsync)
    pipeline = Pipeline(
        source,
        sink,
        decoder,
        LineBuilder(tags, settings.instance),
        settings.buffer,
        stats_interval_s=settings.stats_interval_s,
        spool=spool,
        replay_budget_s=settings.spool.replay_budget_s,
    )
    server = None
    if serve and settings.metrics_port:
        from ingest.stats import serve_metrics  # noqa: PLC0415

        server = serve_metrics(
            settings.metrics_host,
            settings.metrics_port,
            pipeline.snapshot,
            settings.instance,
            pipeline.health,
        )
    return Ingester(settings, source, sink, pipeline, server)
