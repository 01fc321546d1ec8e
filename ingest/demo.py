"""``oxyfleet demo``: the ingester, a simulated fleet, and a live per-unit table read back from InfluxDB.

The table is the proof that the whole path works: every number in it was published over MQTT, validated,
written to InfluxDB and queried back with InfluxQL, the same way dashboards will read it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from devices.simulator import FleetPublisher, generate_units
from ingest.pipeline import build_ingester
from ingest.query_influx import InfluxQL

if TYPE_CHECKING:
    from ingest.config import Settings

__all__ = ["run_demo"]


def _table(reader: InfluxQL, since_ns: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    where = f"time >= {int(since_ns)}"  # an int: nothing to inject
    units = reader.rows(
        "SELECT count(purity_pct) AS points, last(purity_pct) AS purity, last(flow_lpm) AS flow "  # noqa: S608
        f"FROM telemetry WHERE {where} GROUP BY unit_id, kind"
    )
    rejected = {
        row["reason"]: int(row["n"])
        for row in reader.rows(
            f"SELECT count(payload_bytes) AS n FROM rejected WHERE {where} GROUP BY reason"  # noqa: S608
        )
    }
    return sorted(units, key=lambda r: r["unit_id"]), rejected


def _render(units: list[dict[str, Any]], rejected: dict[str, int], published: int, elapsed: float) -> str:
    lines = [
        f"oxyfleet demo - {elapsed:5.0f} s - published {published} messages; stored in InfluxDB:",
        f"{'unit':<20} {'kind':<13} {'points':>6} {'purity %':>9} {'flow L/min':>10}",
    ]
    for row in units:
        flag = "  <- below 82 %: worn sieve beds?" if (row.get("purity") or 100) < 82 else ""
        lines.append(
            f"{row['unit_id']:<20} {row['kind']:<13} {row['points']:>6} {row.get('purity') or 0:>9.1f} "
            f"{row.get('flow') or 0:>10.1f}{flag}"
        )
    total = sum(int(r["points"]) for r in units)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) or "none"
    lines.append(f"total points {total}; rejected messages by reason: {shown}")
    return "\n".join(lines)


def run_demo(
    settings: Settings,
    stop: threading.Event,
    *,
    units: int,
    interval_s: float,
    duration_s: float | None,
    refresh_s: float,
    seed: int,
) -> bool:
    """Run until ``stop`` or ``duration_s``; True when what was published equals what was stored or rejected."""
    from ingest.logs import configure_logging  # noqa: PLC0415

    # The table is the demo's output (rejections included); the ingester's own warnings about the
    # deliberately malformed messages would only interleave with it. Errors still show.
    configure_logging("error", settings.log_format)
    mqtt = settings.mqtt.model_copy(update={"client_id": f"{settings.mqtt.client_id}-demo"})
    settings = settings.model_copy(update={"mqtt": mqtt})
    ingester = build_ingester(settings, serve=False)
    ingest_stop = threading.Event()
    ingest_thread = threading.Thread(target=ingester.run, args=(ingest_stop,), name="ingest", daemon=True)
    ingest_thread.start()
    if not ingester.source.subscribed.wait(15):
        click.echo(
            "oxyfleet demo: the ingester did not subscribe within 15 s; is the broker running?", err=True
        )
        ingest_stop.set()
        return False
    since_ns = time.time_ns()
    fleet = generate_units(units, seed=seed)
    publisher = FleetPublisher(
        settings.mqtt.host,
        settings.mqtt.port,
        prefix=settings.mqtt.topic_prefix,
        username=settings.mqtt.username,
        password=settings.mqtt.password_value(),
    )
    pub_stop = threading.Event()
    pub_thread = threading.Thread(
        target=publisher.run,
        args=(fleet, interval_s, pub_stop),
        kwargs={"seed": seed},
        name="publisher",
        daemon=True,
    )
    pub_thread.start()
    reader = InfluxQL.from_settings(settings.influx)
    started = time.monotonic()
    end = None if duration_s is None else started + duration_s
    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while not stop.wait(min(refresh_s, max(0.0, (end or 1e18) - time.monotonic()))):
            rows, rejected = _table(reader, since_ns)
            click.echo(
                clear + _render(rows, rejected, publisher.published, time.monotonic() - started) + "\n"
            )
            if end is not None and time.monotonic() >= end:
                break
            if not ingest_thread.is_alive():
                break
    finally:
        pub_stop.set()
        pub_thread.join(10)
        publisher.close()
        # Let the last batch land before the final count.
        time.sleep(settings.buffer.batch_age_s + 1.0)
        ingest_stop.set()
        ingest_thread.join(30)
    rows, rejected = _table(reader, since_ns)
    stored = sum(int(r["points"]) for r in rows) + sum(rejected.values())
    click.echo(_render(rows, rejected, publisher.published, time.monotonic() - started))
    status = publisher.published - len(fleet)  # the retained 'online' status messages are not in the table
    verdict = (
        "every published message is accounted for"
        if stored == status
        else f"MISMATCH: {status} telemetry messages published, {stored} stored or rejected"
    )
    click.echo(f"oxyfleet demo: {verdict}.")
    return stored == status
