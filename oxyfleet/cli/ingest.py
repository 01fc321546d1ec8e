"""``oxyfleet run``, ``check`` and ``check-config``: the ingester and what it needs to start."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

import click

from core.settings import redacted_lines
from oxyfleet.cli.common import (
    STOP_BOUND_S,
    health_engine,
    serve_health_api,
    settings,
    start_rollups,
    stop_on_signals,
)
from oxyfleet.cli.errors import EXIT_CONFIG, EXIT_FAILED, describe, fail, handled, readable

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["check", "check_config", "run"]


@click.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until signalled).",
)
@click.option("--with-health", is_flag=True, help="Also run the health engine (and its API) in this process.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help=(
        "Ingest processes on one shared subscription (one core each): client ids, spool directories, "
        "metrics ports and instance names get the suffix -0, -1, ... (see oxyfleet/workers.py)."
    ),
)
@handled
def run(duration: float | None, with_health: bool, workers: int) -> None:
    """Run the ingester: MQTT -> validation -> InfluxDB, until Ctrl-C/SIGTERM."""
    from core.logs import configure_logging  # noqa: PLC0415 - keep --help fast
    from ingest.service import build_ingester  # noqa: PLC0415

    loaded = settings()
    configure_logging(loaded.log_level, loaded.log_format)
    if workers > 1:
        # The supervisor waits for its workers (each bounded by STOP_BOUND_S) and kills stragglers itself.
        _run_workers(loaded, workers, duration, stop_on_signals(), with_health=with_health)
        return
    stop = stop_on_signals(STOP_BOUND_S)
    ingester = build_ingester(loaded)
    if with_health:
        # Single-machine setups: one process. The engine only reads what is stored, so it behaves
        # exactly as `oxyfleet health` would next to the ingester.
        engine = health_engine(loaded, writing=True)
        if loaded.health.api_port:
            serve_health_api(engine, loaded)
        start_rollups(engine, loaded, stop)
        threading.Thread(target=engine.run, args=(stop, duration), name="health", daemon=True).start()
    ingester.run(stop, duration)


def _run_workers(
    loaded: Settings, workers: int, duration: float | None, stop: threading.Event, *, with_health: bool
) -> None:
    """The supervisor of ``run --workers N``; the health engine, if asked for, runs here (once)."""
    from oxyfleet.workers import Supervisor  # noqa: PLC0415

    try:
        supervisor = Supervisor(loaded, workers, duration)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    if with_health:
        engine = health_engine(loaded, writing=True)
        if loaded.health.api_port:
            serve_health_api(engine, loaded)
        start_rollups(engine, loaded, stop)
        threading.Thread(target=engine.run, args=(stop, duration), name="health", daemon=True).start()
    supervisor.start()
    code = supervisor.wait(stop)
    if code:
        fail(f"an ingest worker exited with code {code}; the others were stopped", code)


@click.command("check-config")
@handled
def check_config() -> None:
    """Print the effective settings (secrets redacted) and exit 2 if they are invalid."""
    for line in redacted_lines(settings()):
        click.echo(line)


def _check_influx(loaded: Settings) -> str | None:
    from core.errors import SinkError  # noqa: PLC0415
    from store.reader import InfluxQL  # noqa: PLC0415

    influx = loaded.influx
    if influx.api == "v2":
        from store.writer import V2Transport, make_transport  # noqa: PLC0415

        transport = make_transport(influx)
        assert isinstance(transport, V2Transport)
        try:
            problem = transport.check()
        finally:
            transport.close()
        return None if problem is None else readable(problem)
    reader = InfluxQL.from_settings(influx)
    try:
        names = [row["name"] for row in reader.rows("SHOW DATABASES")]
    except SinkError as exc:
        return describe(exc)
    finally:
        reader.close()
    if influx.database not in names and not influx.create_database:
        return f"database {influx.database!r} does not exist (and OXYFLEET_INFLUX__CREATE_DATABASE is false)"
    return None


@click.command()
@handled
def check() -> None:
    """Test connectivity to the broker and InfluxDB with the current settings; say what is wrong."""
    from core.mqtt import probe_broker  # noqa: PLC0415

    loaded = settings()
    ok = True
    problem = probe_broker(loaded.mqtt)
    where = f"{'mqtts' if loaded.mqtt.tls else 'mqtt'}://{loaded.mqtt.host}:{loaded.mqtt.port}"
    click.echo(f"broker   {where}: {'ok' if problem is None else 'FAILED - ' + readable(problem)}")
    ok &= problem is None
    problem = _check_influx(loaded)
    click.echo(
        f"influxdb {loaded.influx.url} ({loaded.influx.api}): {'ok' if problem is None else 'FAILED - ' + problem}"
    )
    ok &= problem is None
    if loaded.spool.enabled:
        line, spool_ok = _spool_report(loaded)
        click.echo(line)
        ok &= spool_ok
    else:
        click.echo("spool    off: batches InfluxDB cannot take stay unacked in the broker")
    sys.exit(0 if ok else EXIT_FAILED)


def _live_metric(loaded: Settings, name: str) -> float | None:
    """One gauge from a running ingester's /metrics on this machine, or None when none answers."""
    from ingest.stats import scrape  # noqa: PLC0415

    if not loaded.metrics_port:
        return None
    host = "127.0.0.1" if loaded.metrics_host in ("0.0.0.0", "::") else loaded.metrics_host  # noqa: S104
    return scrape(f"http://{host}:{loaded.metrics_port}/metrics").get(name)


def _spool_report(loaded: Settings) -> tuple[str, bool]:
    """The spool line of `oxyfleet check`: size against the bound, oldest age, replay rate; and whether ok."""
    from ingest.spool import summarize  # noqa: PLC0415

    spool = loaded.spool
    summary = summarize(spool.dir)
    pct = 100 * summary.bytes / spool.max_bytes
    rate = _live_metric(loaded, "spool_replay_points_per_second")
    parts = [
        f"{summary.batches} batches",
        f"{summary.bytes / 2**20:.1f} of {spool.max_bytes / 2**20:.0f} MiB ({pct:.0f} %)",
        f"oldest {summary.oldest_age_s:.0f} s",
        "replay rate n/a (no ingester answering on the metrics port)"
        if rate is None
        else f"replaying {rate:g} points/s",
    ]
    problems = []
    if not summary.writable:
        problems.append("FAILED - not writable by this user; fix OXYFLEET_SPOOL__DIR or its permissions")
    if summary.corrupt:
        problems.append(
            f"FAILED - {summary.corrupt} damaged segment(s) set aside as *.corrupt; see the ingester log"
        )
    if pct >= 90:
        problems.append("WARNING - nearly full: when full, acks stop and the broker holds new messages")
    status = "ok" if not problems else "; ".join(problems)
    ok = summary.writable and not summary.corrupt
    return f"spool    {spool.dir}: {', '.join(parts)}: {status}", ok
