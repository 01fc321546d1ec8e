"""Composition of the health process: settings in, a ready :class:`HealthEngine` (and its API) out.

``oxyfleet health``, ``oxyfleet run --with-health``, ``status`` and the demo build the engine here, the
same way; the alerter is wired to the engine's ``on_change`` callback so the engine never imports it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog

from core.errors import ConfigError
from core.mqtt import connect_properties, make_client
from devices.inventory import SAMPLE_INVENTORY, InventoryError, load_inventory
from health.alerts import Alerter
from health.engine import HealthEngine
from health.rollup import Rollup
from store.reader import InfluxQL
from store.retention import apply_retention, results_policy
from store.writer import InfluxSink, make_transport, prepare_database

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from zoneinfo import ZoneInfo

    from fastapi import APIRouter

    from core.settings import Settings

__all__ = ["build_engine", "build_rollup", "serve_api"]

log = structlog.get_logger("health.service")


def _alerter(settings: Settings) -> Alerter | None:
    h = settings.health
    if not (h.alerts_mqtt or h.webhooks):
        return None
    client = None
    if h.alerts_mqtt:
        client = make_client(
            settings.mqtt, f"{settings.mqtt.client_id}-health", persistent=False, manual_ack=False
        )
        client.connect_async(
            settings.mqtt.host,
            settings.mqtt.port,
            keepalive=settings.mqtt.keepalive_s,
            properties=connect_properties(settings.mqtt, persistent=False),
        )
        client.loop_start()
    return Alerter(client, h.webhooks, topic_prefix=h.alert_topic_prefix, retries=h.webhook_retries)


def build_engine(settings: Settings, *, writing: bool) -> HealthEngine:
    """The engine for ``settings``; ``writing=False`` for read-only use (no sink, no alerts).

    Raises:
        ConfigError: the inventory has problems (the message names ``OXYFLEET_INVENTORY_FILE``).
    """
    inventory = settings.inventory_file or SAMPLE_INVENTORY
    try:  # a configuration error, found before anything touches the database
        load_inventory(inventory)
    except InventoryError as exc:
        raise ConfigError(f"OXYFLEET_INVENTORY_FILE: the inventory has problems:\n{exc}") from exc
    sink = None
    long_rp = results_policy(settings.influx)
    if writing:
        # The engine's results go to the long-term policy; raw telemetry stays in the bounded default one.
        transport = make_transport(settings.influx.model_copy(update={"retention_policy": long_rp}))
        prepare_database(transport, settings.influx)
        apply_retention(transport, settings.influx)
        sink = InfluxSink(transport)
    alerter = _alerter(settings) if writing else None
    h = settings.health
    try:
        return HealthEngine(
            InfluxQL.from_settings(settings.influx),
            sink,
            inventory,
            sustain_s=h.sustain_s,
            lookback_s=h.lookback_s,
            cycle_s=h.cycle_s,
            on_change=None if alerter is None else alerter.notify,
            on_history=None if alerter is None else alerter.history,
            long_rp=long_rp,
        )
    except InventoryError as exc:
        raise ConfigError(f"OXYFLEET_INVENTORY_FILE: the inventory has problems:\n{exc}") from exc


def build_rollup(engine: HealthEngine, settings: Settings, zone_of: Callable[[str, str], ZoneInfo]) -> Rollup:
    """The daily rollups of ``engine``'s fleet, with their own reader and sink (they run in their own thread).

    ``zone_of(hospital, province)`` is the report's zone rule, passed in by the shell (health imports no
    report). A day is complete once the engine's trailing window, the late threshold and two cycles passed.
    """
    long_rp = results_policy(settings.influx)
    sink = InfluxSink(make_transport(settings.influx.model_copy(update={"retention_policy": long_rp})))

    def write(lines: list[str]) -> int:
        refused = 0
        for i in range(0, len(lines), 5000):
            refused += len(sink.write(lines[i : i + 5000]).rejected)
        if refused:
            log.error("health.rollup_points_refused", count=refused)
        return refused

    return Rollup(
        InfluxQL.from_settings(settings.influx),
        write,
        lambda: engine.inventory,
        zone_of,
        long_rp=long_rp,
        settle_ms=engine.lookback_ms + round(2 * engine.cycle_s * 1000) + 60_000,
    )


def serve_api(engine: HealthEngine, settings: Settings, routers: Sequence[APIRouter] = ()) -> None:
    """Serve the read-only API in a daemon thread; a busy port is a warning, not a reason to stop.

    ``routers`` come from the shell (the reports), which health does not import.
    """
    import uvicorn  # noqa: PLC0415 - FastAPI and uvicorn load only when the API is served

    from health.api import create_app  # noqa: PLC0415
    from health.tokens import TokenStore  # noqa: PLC0415

    host = settings.health.api_host
    config = uvicorn.Config(
        create_app(
            engine,
            engine.reader,
            tokens=TokenStore(settings.health.api_tokens_file),
            loopback=host in {"127.0.0.1", "::1", "localhost"},
            routers=routers,
        ),
        host=settings.health.api_host,
        port=settings.health.api_port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread; in this thread the CLI keeps them.
    threading.Thread(target=server.run, name="api", daemon=True).start()
    log.info("health.api_listening", host=settings.health.api_host, port=settings.health.api_port)
