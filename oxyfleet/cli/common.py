"""What several command groups share: settings, signals, the inventory option, the health engine."""

from __future__ import annotations

import difflib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from core.settings import Settings, load_settings
from oxyfleet.cli.errors import EXIT_FAILED, fail, remember

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from health.engine import HealthEngine
    from health.rollup import Rollup

__all__ = [
    "STOP_BOUND_S",
    "health_engine",
    "health_rollup",
    "inventory_option",
    "inventory_path",
    "nothing_matched",
    "serve_health_api",
    "settings",
    "start_rollups",
    "stop_on_signals",
]


def settings(**overrides: Any) -> Settings:  # noqa: ANN401 - passed through to Settings
    """The validated settings (a ConfigError becomes exit 2 naming the variable, in the error mapping)."""
    loaded = load_settings(**overrides)
    remember(influx_url=loaded.influx.url)
    return loaded


# A stop must finish in bounded time whatever the broker, InfluxDB and the spool are doing (issue 19):
# the pipeline and the MQTT source stop on their own well inside this, and this watchdog is the backstop
# for what they cannot bound (a request already on the wire, a stuck TLS write). Exiting hard is safe:
# nothing unacked is lost (the broker redelivers it) and the spool survives a SIGKILL by design.
STOP_BOUND_S: Final = 10.0


def _force_exit_after(seconds: float) -> None:
    def force() -> None:
        import structlog  # noqa: PLC0415 - keep --help fast

        structlog.get_logger("ingest.cli").error(
            "ingest.stop_forced", after_s=seconds, note="unacked messages are redelivered by the broker"
        )
        sys.stdout.flush()
        os._exit(EXIT_FAILED)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def stop_on_signals(bound_s: float | None = None) -> threading.Event:
    """An event set by Ctrl-C or SIGTERM; with ``bound_s``, the process exits at the latest that long after."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        if bound_s is not None and not stop.is_set():
            _force_exit_after(bound_s)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def inventory_path(file: Path | None) -> Path:
    """``--file``, else OXYFLEET_INVENTORY_FILE, else the sample inventory (said on stderr)."""
    from devices.inventory import SAMPLE_INVENTORY  # noqa: PLC0415

    if file is not None:
        return file
    configured = settings().inventory_file
    if configured is not None:
        return configured
    click.echo(
        f"(no OXYFLEET_INVENTORY_FILE set: using the sample inventory {SAMPLE_INVENTORY.name})", err=True
    )
    return SAMPLE_INVENTORY


inventory_option = click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Inventory CSV (default: OXYFLEET_INVENTORY_FILE, else the sample).",
)


def health_engine(loaded: Settings, *, writing: bool) -> HealthEngine:
    """The health engine as every command builds it (health.service), saying when the sample is used."""
    from health.service import build_engine  # noqa: PLC0415 - keep --help fast

    if loaded.inventory_file is None:
        click.echo("(no OXYFLEET_INVENTORY_FILE set: using the sample inventory)", err=True)
    return build_engine(loaded, writing=writing)


def health_rollup(engine: HealthEngine, loaded: Settings) -> Rollup:
    """The daily rollups for ``engine``'s fleet, in the reports' zones (the shell wires report's zone rule)."""
    from health.service import build_rollup  # noqa: PLC0415
    from report.zones import zone_for  # noqa: PLC0415

    zones = loaded.report.zones
    return build_rollup(engine, loaded, lambda hospital, province: zone_for(hospital, province, zones))


def start_rollups(engine: HealthEngine, loaded: Settings, stop: threading.Event) -> Rollup:
    """Run the daily rollups beside a running engine: a thread of their own, told of the engine's late work."""
    rollup = health_rollup(engine, loaded)
    engine.on_cycle = rollup.note_late
    threading.Thread(target=rollup.run, args=(stop,), name="rollup", daemon=True).start()
    return rollup


def nothing_matched(
    what: str,
    filters: Mapping[str, str | None],
    known: Mapping[str, Iterable[str]],
    hint: str = "",
) -> NoReturn:
    """Exit 1 saying which filters matched nothing, with the closest known name for a likely typo.

    An empty table with exit 0 reads as "all is well" to a person and to a script alike; like ``grep``,
    a filter that matches nothing exits 1. ``known`` holds the names each filter could have matched,
    where the command knows them.
    """
    given = [(name, value) for name, value in filters.items() if value is not None]
    shown = " ".join(f"--{name} {value!r}" for name, value in given)
    message = f"no {what} matches {shown}" if given else f"no {what}"
    for name, value in given:
        names = {n.casefold(): n for n in known.get(name, ())}
        if name not in known or value.casefold() in names:
            continue
        close = difflib.get_close_matches(value.casefold(), list(names), n=1, cutoff=0.6)
        message += f"; no {name} is called {value!r}" + (
            f" (did you mean {names[close[0]]!r}?)" if close else ""
        )
    fail(message + (f" ({hint})" if hint else ""))


def serve_health_api(engine: HealthEngine, loaded: Settings) -> None:
    """The health API with the monthly reports' routes (the shell wires them: health imports no report)."""
    from health.service import serve_api  # noqa: PLC0415
    from report.api import report_router  # noqa: PLC0415

    reports = report_router(
        engine.reader,
        lambda: engine.inventory,
        zones=loaded.report.zones,
        programme_zone=loaded.report.programme_zone,
        target_pct=loaded.report.target_pct,
        retention_policy=engine.long_rp,
    )
    serve_api(engine, loaded, routers=[reports])
