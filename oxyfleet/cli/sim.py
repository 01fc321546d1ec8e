"""``oxyfleet simulate`` and ``oxyfleet demo``: a simulated fleet, alone or with the whole backend."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.timefmt import DurationError, parse_duration
from oxyfleet.cli.common import inventory_path, settings, stop_on_signals
from oxyfleet.cli.errors import EXIT_CONFIG, EXIT_FAILED, fail, handled
from oxyfleet.cli.output import progress

if TYPE_CHECKING:
    from collections.abc import Iterator

    from core.settings import Settings
    from fleetsim.simulator import Simulator

__all__ = ["demo", "simulate"]

FAULT_HELP = (
    "Comma-separated fault kinds, 'all' or 'none': sieve_wear, flow_restriction, power_failure, "
    "switched_off, overheating, device_alarm, network_loss, silent, clock_skew, sensor_glitch."
)


@click.command()
@click.option("--units", default=20, show_default=True, help="Simulated units (taken from the inventory).")
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)."
)
@click.option("--refresh", default=5.0, show_default=True, help="Seconds between table refreshes.")
@click.option("--speed", default=1.0, show_default=True, help="Simulated seconds per wall-clock second.")
@click.option("--seed", default=1, show_default=True, help="Seed of the simulated fleet and its faults.")
@handled
def demo(units: int, duration: float | None, refresh: float, speed: float, seed: int) -> None:
    """Ingester + a simulated fleet with faults + a live table of what reached InfluxDB, per unit."""
    from oxyfleet.demo import run_demo  # noqa: PLC0415

    loaded = settings()
    stop = stop_on_signals()
    ok = run_demo(loaded, stop, units=units, duration_s=duration, refresh_s=refresh, seed=seed, speed=speed)
    sys.exit(0 if ok else EXIT_FAILED)


def _login(loaded: Settings) -> dict[str, Any]:
    """How the simulator and the load generator log in and encrypt: as OXYFLEET_MQTT__* say."""
    mq = loaded.mqtt
    ca_file = str(mq.ca_file) if mq.ca_file else None
    return {"username": mq.username, "password": mq.password_value(), "tls": mq.tls, "ca_file": ca_file}


@contextlib.contextmanager
def _watched(sim: Simulator, duration_s: float) -> Iterator[None]:
    """A progress bar (on a terminal only) fed from the running simulator's counters every half second."""
    with progress(f"simulating {len(sim.units)} units", duration_s) as update:
        done = threading.Event()
        started = time.monotonic()

        def watch() -> None:
            while not done.wait(0.5):
                update(min(time.monotonic() - started, duration_s))

        watcher = threading.Thread(target=watch, name="sim-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()


@click.command()
@click.option("--units", default=200, show_default=True, help="How many units publish.")
@click.option(
    "--inventory",
    "inventory_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Units come from this inventory (default: OXYFLEET_INVENTORY_FILE, else the sample).",
)
@click.option(
    "--generated", is_flag=True, help="Invent units that are in no inventory (stored as unregistered)."
)
@click.option(
    "--seed", default=1, show_default=True, help="Seed: the same seed gives the same fleet and faults."
)
@click.option("--duration", default="60s", show_default=True, help="Wall-clock run time, e.g. 60s, 10m.")
@click.option("--speed", default=1.0, show_default=True, help="Simulated seconds per wall-clock second.")
@click.option(
    "--fault-share", default=0.15, show_default=True, help="Share of units that get a fault episode."
)
@click.option("--faults", default="all", show_default=True, help=FAULT_HELP)
@click.option("--malformed-share", default=0.01, show_default=True, help="Share of messages sent malformed.")
@click.option(
    "--ground-truth",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("oxyfleet-ground-truth.jsonl"),
    show_default=True,
    help="Where the ground truth goes.",
)
@click.option(
    "--qos",
    type=click.IntRange(0, 1),
    default=1,
    show_default=True,
    help="MQTT QoS of every publish: 1 (at least once, what devices should use) or 0 (at most once).",
)
@click.option("--load", is_flag=True, help="Load mode: publish --messages as fast as possible (benchmarks).")
@click.option("--messages", default=100_000, show_default=True, help="Load mode: how many readings.")
@click.option(
    "--rate", default=0.0, show_default=True, help="Load mode: target msg/s (0: as fast as possible)."
)
@click.option("--processes", default=1, show_default=True, help="Load mode: publishing processes.")
@click.option(
    "--live-ts",
    is_flag=True,
    help="Load mode: stamp readings with the publish time (live fleet) instead of a past backlog.",
)
@click.option(
    "--unit-prefix", default="LOAD", show_default=True, help="Load mode: unit ids are PREFIX-000000, ..."
)
@handled
def simulate(
    units: int,
    inventory_file: Path | None,
    generated: bool,
    seed: int,
    duration: str,
    speed: float,
    fault_share: float,
    faults: str,
    malformed_share: float,
    ground_truth: Path,
    qos: int,
    load: bool,
    messages: int,
    rate: float,
    processes: int,
    unit_prefix: str,
    live_ts: bool,
) -> None:
    """Publish a simulated fleet to the broker in OXYFLEET_MQTT__* (host, port, TLS, credentials, prefix)."""
    import random  # noqa: PLC0415

    from fleetsim.faults import FaultKind  # noqa: PLC0415

    loaded = settings()
    mq = loaded.mqtt
    if load:
        from fleetsim.loadgen import run_load  # noqa: PLC0415

        result = run_load(
            host=mq.host,
            port=mq.port,
            prefix=mq.topic_prefix,
            messages=messages,
            units=units,
            qos=qos,
            rate=rate,
            processes=processes,
            unit_prefix=unit_prefix,
            live_ts=live_ts,
            **_login(loaded),
        )
        click.echo(
            f"published {result.messages} readings from {units} units at QoS {qos} in {result.seconds:.2f} s: "
            f"{result.rate:,.0f} msg/s ({processes} process(es))"
        )
        return
    try:
        duration_s = parse_duration(duration)
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None
    try:
        kinds = (
            []
            if faults == "none"
            else list(FaultKind)
            if faults == "all"
            else [FaultKind(k.strip()) for k in faults.split(",") if k.strip()]
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    from devices.catalog import load_catalog  # noqa: PLC0415
    from devices.inventory import load_inventory  # noqa: PLC0415
    from fleetsim.simulator import FleetPublisher, Simulator, generate_units, units_from_inventory  # noqa: PLC0415

    rng = random.Random(seed)
    if generated:
        fleet = generate_units(units, load_catalog(), rng)
    else:
        fleet = units_from_inventory(load_inventory(inventory_path(inventory_file)), units, rng)
    publisher = FleetPublisher(
        mq.host,
        mq.port,
        qos=qos,
        **_login(loaded),
        client_id=f"oxyfleet-sim-{seed}-{time.time_ns() % 10**6}",
    )
    stop = stop_on_signals()
    with ground_truth.open("w", encoding="utf-8") as truth:
        try:
            sim = Simulator(
                fleet,
                publisher,
                seed=seed,
                duration_s=duration_s,
                speed=speed,
                fault_share=fault_share,
                fault_kinds=kinds,
                malformed_share=malformed_share,
                prefix=mq.topic_prefix,
                truth=truth,
            )
        except ValueError as exc:
            fail(str(exc), EXIT_CONFIG)
        with _watched(sim, duration_s):
            summary = sim.run(stop)
    publisher.close()
    click.echo(
        f"published {summary.messages} messages ({summary.readings_published} readings, "
        f"{summary.batches} late batches, {summary.status_messages} status) for {len(fleet)} units; "
        f"{len(sim.faults)} fault episodes; ground truth in {ground_truth}"
    )
