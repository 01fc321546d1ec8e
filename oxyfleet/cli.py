"""The ``oxyfleet`` command.

Exit codes: 0 success; 1 a check failed or a payload is invalid; 2 configuration or usage error (what to
fix is printed); 3 a fatal runtime error from a service (credentials refused, database missing).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from core.errors import ConfigError, SinkError, SinkFatalError, SourceAuthError
from core.settings import Settings, env_example, load_settings, redacted_lines

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["main"]

EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FATAL: Final = 3
ROOT: Final = Path(__file__).resolve().parent.parent
SCHEMA_DIR: Final = ROOT / "docs" / "schema"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"oxyfleet: {message}", err=True)
    sys.exit(code)


def _settings(**overrides: Any) -> Settings:  # noqa: ANN401
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """oxyfleet: telemetry backend for medical oxygen concentrators and DOCS plants.

    Configuration comes from OXYFLEET_* environment variables and .env (see .env.example).
    """


@cli.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until signalled).",
)
@click.option("--with-health", is_flag=True, help="Also run the health engine (and its API) in this process.")
def run(duration: float | None, with_health: bool) -> None:
    """Run the ingester: MQTT -> validation -> InfluxDB, until Ctrl-C/SIGTERM."""
    import threading  # noqa: PLC0415

    from core.logs import configure_logging  # noqa: PLC0415 - keep --help fast
    from ingest.service import build_ingester  # noqa: PLC0415

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    stop = _stop_on_signals()
    try:
        ingester = build_ingester(settings)
        if with_health:
            # Single-machine setups: one process. The engine only reads what is stored, so it behaves
            # exactly as `oxyfleet health` would next to the ingester.
            engine = _engine(settings, writing=True)
            if settings.health.api_port:
                _serve_api(engine, settings)
            threading.Thread(target=engine.run, args=(stop, duration), name="health", daemon=True).start()
        ingester.run(stop, duration)
    except (SinkFatalError, SourceAuthError) as exc:
        _fail(str(exc), EXIT_FATAL)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except SinkError as exc:
        _fail(
            f"{exc} (is InfluxDB running at {settings.influx.url}? `oxyfleet check` tells more)", EXIT_FAILED
        )


@cli.command("check-config")
def check_config() -> None:
    """Print the effective settings (secrets redacted) and exit 2 if they are invalid."""
    settings = _settings()
    for line in redacted_lines(settings):
        click.echo(line)


def _check_influx(settings: Settings) -> str | None:
    from store.reader import InfluxQL  # noqa: PLC0415

    influx = settings.influx
    if influx.api == "v2":
        from store.writer import V2Transport, make_transport  # noqa: PLC0415

        transport = make_transport(influx)
        assert isinstance(transport, V2Transport)
        try:
            return transport.check()
        finally:
            transport.close()
    reader = InfluxQL.from_settings(influx)
    try:
        names = [row["name"] for row in reader.rows("SHOW DATABASES")]
    except SinkError as exc:
        return str(exc)
    finally:
        reader.close()
    if influx.database not in names and not influx.create_database:
        return f"database {influx.database!r} does not exist (and OXYFLEET_INFLUX__CREATE_DATABASE is false)"
    return None


@cli.command()
def check() -> None:
    """Test connectivity to the broker and InfluxDB with the current settings; say what is wrong."""
    from core.mqtt import probe_broker  # noqa: PLC0415

    settings = _settings()
    ok = True
    problem = probe_broker(settings.mqtt)
    where = f"{'mqtts' if settings.mqtt.tls else 'mqtt'}://{settings.mqtt.host}:{settings.mqtt.port}"
    click.echo(f"broker   {where}: {'ok' if problem is None else 'FAILED - ' + problem}")
    ok &= problem is None
    problem = _check_influx(settings)
    click.echo(
        f"influxdb {settings.influx.url} ({settings.influx.api}): {'ok' if problem is None else 'FAILED - ' + problem}"
    )
    ok &= problem is None
    if settings.spool.enabled:
        line, spool_ok = _spool_report(settings)
        click.echo(line)
        ok &= spool_ok
    else:
        click.echo("spool    off: batches InfluxDB cannot take stay unacked in the broker")
    sys.exit(0 if ok else EXIT_FAILED)


def _live_metric(settings: Settings, name: str) -> float | None:
    """One gauge from a running ingester's /metrics on this machine, or None when none answers."""
    import urllib.request  # noqa: PLC0415

    if not settings.metrics_port:
        return None
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "::") else settings.metrics_host  # noqa: S104
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.metrics_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"oxyfleet_ingest_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _spool_report(settings: Settings) -> tuple[str, bool]:
    """The spool line of `oxyfleet check`: size against the bound, oldest age, replay rate; and whether ok."""
    from ingest.spool import summarize  # noqa: PLC0415

    spool = settings.spool
    summary = summarize(spool.dir)
    pct = 100 * summary.bytes / spool.max_bytes
    rate = _live_metric(settings, "spool_replay_points_per_s")
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


@cli.command("validate-payload")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--kind",
    type=click.Choice(["concentrator", "docs"]),
    default=None,
    help="Device kind (default: from --topic, else concentrator).",
)
@click.option("--topic", default=None, help="Topic the payload would be published to.")
@click.option(
    "--no-time-window", is_flag=True, help="Do not check ts against the current time (old samples)."
)
def validate_payload(file: Any, kind: str | None, topic: str | None, no_time_window: bool) -> None:  # noqa: ANN401
    """Tell a firmware maker whether FILE ('-' for stdin) is a valid payload, and if not, exactly why."""
    from devices.payload import PAYLOAD_MODELS  # noqa: PLC0415
    from devices.spec import topic_for  # noqa: PLC0415
    from ingest.decode import Decoder, Inbound, parse_topic  # noqa: PLC0415

    payload = file.read()
    prefix = "oxygen"
    if topic is not None:
        parts = parse_topic(topic, topic.split("/", 1)[0])
        if isinstance(parts, str):
            _fail(f"bad topic: {parts}", EXIT_FAILED)
        prefix = topic.split("/", 1)[0]
        kind = kind or parts.kind
    kind = kind or "concentrator"
    if topic is None:
        unit = "UNIT-1"
        try:
            claimed = json.loads(payload).get("unit_id")
            unit = claimed if isinstance(claimed, str) and claimed else unit
        except (ValueError, AttributeError, UnicodeDecodeError):
            pass
        topic = topic_for(kind, unit, prefix=prefix)
    decoded = Decoder(prefix, check_time=not no_time_window).decode(Inbound(topic, payload, time.time_ns()))
    for rej in decoded.rejections:
        click.echo(f"INVALID ({rej.reason.value}):")
        for part in rej.detail.split("; "):
            click.echo(f"  - {part}")
    if decoded.readings:
        model = PAYLOAD_MODELS[kind]
        click.echo(f"valid: {len(decoded.readings)} {kind} reading(s) for topic {topic}")
        unknown = sorted(_unknown_fields(payload, set(model.model_fields)))
        if unknown:
            click.echo(f"note: unknown fields are ignored: {', '.join(unknown)}")
    sys.exit(EXIT_FAILED if decoded.rejections else 0)


def _unknown_fields(payload: bytes, known: set[str]) -> Iterator[str]:
    try:
        data = json.loads(payload)
    except ValueError:
        return
    items = data.get("readings", [data]) if isinstance(data, dict) else []
    seen: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            seen.update(k for k in item if k not in known)
    yield from seen


def _write_or_check(path: Path, text: str, check: bool, how: str) -> None:
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            _fail(f"{path.relative_to(ROOT)} is stale; run `{how}`", EXIT_FAILED)
        click.echo(f"{path.relative_to(ROOT)} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path.relative_to(ROOT)}")


@cli.command()
@click.option("--check", "check_only", is_flag=True, help="Only check that the committed files are current.")
def schema(check_only: bool) -> None:
    """Write the JSON Schema of each kind's payload into docs/schema/ and the field tables into the contract."""
    from devices.payload import PAYLOAD_MODELS, fields_markdown, json_schema  # noqa: PLC0415

    for kind in PAYLOAD_MODELS:
        text = json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"
        _write_or_check(SCHEMA_DIR / f"{kind}-telemetry.schema.json", text, check_only, "oxyfleet schema")
    contract = ROOT / "docs" / "payload-contract.md"
    current = contract.read_text(encoding="utf-8")
    head, sep, rest = current.partition("<!-- fields:begin")
    begin_line, _, rest = rest.partition("\n")
    _, end_sep, tail = rest.partition("<!-- fields:end -->")
    if not sep or not end_sep:
        _fail(f"{contract} lost its <!-- fields:begin/end --> markers", EXIT_FAILED)
    text = f"{head}<!-- fields:begin{begin_line}\n{fields_markdown()}\n<!-- fields:end -->{tail}"
    _write_or_check(contract, text, check_only, "oxyfleet schema")


@cli.command("env-example")
@click.option("--check", "check_only", is_flag=True, help="Only check that .env.example is current.")
def env_example_cmd(check_only: bool) -> None:
    """Write .env.example from the settings models (every variable, default and meaning)."""
    _write_or_check(ROOT / ".env.example", env_example(), check_only, "oxyfleet env-example")


@cli.command()
@click.option("--units", default=20, show_default=True, help="Simulated units (taken from the inventory).")
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)."
)
@click.option("--refresh", default=5.0, show_default=True, help="Seconds between table refreshes.")
@click.option("--speed", default=1.0, show_default=True, help="Simulated seconds per wall-clock second.")
@click.option("--seed", default=1, show_default=True, help="Seed of the simulated fleet and its faults.")
def demo(units: int, duration: float | None, refresh: float, speed: float, seed: int) -> None:
    """Ingester + a simulated fleet with faults + a live table of what reached InfluxDB, per unit."""
    from oxyfleet.demo import run_demo  # noqa: PLC0415

    settings = _settings()
    stop = _stop_on_signals()
    try:
        ok = run_demo(
            settings, stop, units=units, duration_s=duration, refresh_s=refresh, seed=seed, speed=speed
        )
    except (SinkFatalError, SourceAuthError) as exc:
        _fail(str(exc), EXIT_FATAL)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except SinkError as exc:
        _fail(
            f"{exc} (is InfluxDB running at {settings.influx.url}? `oxyfleet check` tells more)", EXIT_FAILED
        )
    sys.exit(0 if ok else EXIT_FAILED)


def _inventory_path(file: Path | None) -> Path:
    from devices.inventory import SAMPLE_INVENTORY  # noqa: PLC0415

    if file is not None:
        return file
    configured = _settings().inventory_file
    if configured is not None:
        return configured
    click.echo(
        f"(no OXYFLEET_INVENTORY_FILE set: using the sample inventory {SAMPLE_INVENTORY.name})", err=True
    )
    return SAMPLE_INVENTORY


_inventory_option = click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Inventory CSV (default: OXYFLEET_INVENTORY_FILE, else the sample).",
)


@cli.group()
def devices() -> None:
    """The fleet inventory: list units, check an inventory file."""


@devices.command("list")
@_inventory_option
@click.option("--hospital", default=None, help="Only this hospital (case-insensitive).")
@click.option("--province", default=None, help="Only this province.")
@click.option("--kind", type=click.Choice(["concentrator", "docs"]), default=None, help="Only this kind.")
@click.option("--model", default=None, help="Only this model.")
@click.option("--source", default=None, help="Only units from this source/donor.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True)
def devices_list(
    file: Path | None,
    hospital: str | None,
    province: str | None,
    kind: str | None,
    model: str | None,
    source: str | None,
    fmt: str,
) -> None:
    """List registered units, filtered."""
    from devices.inventory import InventoryError, load_inventory, write_inventory  # noqa: PLC0415

    path = _inventory_path(file)
    try:
        inventory = load_inventory(path)
    except InventoryError as exc:
        _fail(f"inventory has problems:\n{exc}", EXIT_FAILED)
    units = list(
        inventory.select(hospital=hospital, province=province, kind=kind, model=model, source=source)
    )
    if fmt == "csv":
        click.echo(write_inventory(units), nl=False)
        return
    click.echo(
        f"{'unit':<16} {'kind':<12} {'model':<13} {'hospital':<26} {'province':<20} {'source':<21} commissioned"
    )
    for u in units:
        click.echo(
            f"{u.unit_id:<16} {u.kind:<12} {u.model:<13} {u.hospital[:26]:<26} {u.province[:20]:<20} "
            f"{u.source[:21]:<21} {u.commissioned.isoformat()}"
        )
    click.echo(f"{len(units)} of {len(inventory)} units")


@devices.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def devices_check(file: Path) -> None:
    """Validate an inventory CSV; every problem is listed with its line number (exit 1 if any)."""
    from devices.inventory import InventoryError, load_inventory  # noqa: PLC0415

    try:
        inventory = load_inventory(file)
    except InventoryError as exc:
        for problem in exc.problems:
            click.echo(problem)
        click.echo(f"{len(exc.problems)} problem(s)")
        sys.exit(EXIT_FAILED)
    kinds = ", ".join(
        f"{k}: {sum(1 for u in inventory.units.values() if u.kind == k)}" for k in ("concentrator", "docs")
    )
    click.echo(f"{file}: ok, {len(inventory)} units ({kinds})")


@devices.command("credentials")
@_inventory_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for device-passwords.csv (secret, 0600), passwd and acl.",
)
@click.option("--owner", help="Owner of passwd and acl: the broker's user, e.g. mosquitto (needs root).")
@click.option("--group", help="Group of passwd and acl, e.g. mosquitto with --mode 0640 (needs root).")
@click.option(
    "--mode",
    default="0600",
    show_default=True,
    help="Permissions of passwd and acl, octal; 0600 or 0640 (never readable by other users).",
)
def devices_credentials(
    file: Path | None, out: Path, owner: str | None, group: str | None, mode: str
) -> None:
    """Per-device broker passwords and the Mosquitto ACL: each unit may publish only its own topics.

    Mosquitto runs as its own user and must be able to read passwd and acl: e.g. --owner mosquitto
    (mode 0600), or --group mosquitto --mode 0640.
    """
    from devices.credentials import BrokerFileAccess, CredentialsError, write_credentials  # noqa: PLC0415
    from devices.inventory import InventoryError, load_inventory  # noqa: PLC0415

    try:
        access = BrokerFileAccess(owner, group, int(mode, 8))
    except ValueError as exc:  # CredentialsError too
        detail = str(exc) if isinstance(exc, CredentialsError) else f"{mode!r} is not an octal mode like 0640"
        raise click.BadParameter(detail, param_hint="--owner/--group/--mode") from None
    try:
        inventory = load_inventory(_inventory_path(file))
    except InventoryError as exc:
        _fail(f"inventory has problems:\n{exc}", EXIT_FAILED)
    try:
        new, kept = write_credentials(inventory.units.values(), out, _settings().mqtt.topic_prefix, access)
    except CredentialsError as exc:
        _fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    who = f" (owner {owner or 'unchanged'}, group {group or 'unchanged'}, mode {access.mode:04o})"
    click.echo(
        f"{out}: passwd and acl for {new + kept} units ({new} new passwords, {kept} kept){who}; "
        f"hand each unit its line of device-passwords.csv and keep that file secret"
    )


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not a duration like 60s, 5m, 2h") from None


@cli.command()
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
@click.option(
    "--faults",
    default="all",
    show_default=True,
    help="Comma-separated fault kinds, 'all' or 'none': sieve_wear, flow_restriction, power_failure, "
    "switched_off, overheating, device_alarm, network_loss, silent, clock_skew, sensor_glitch.",
)
@click.option("--malformed-share", default=0.01, show_default=True, help="Share of messages sent malformed.")
@click.option(
    "--ground-truth",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("oxyfleet-ground-truth.jsonl"),
    show_default=True,
    help="Where the ground truth goes.",
)
@click.option("--qos", type=click.IntRange(0, 1), default=1, show_default=True)
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

    settings = _settings()
    mq = settings.mqtt
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
            username=mq.username,
            password=mq.password_value(),
            tls=mq.tls,
            ca_file=str(mq.ca_file) if mq.ca_file else None,
        )
        click.echo(
            f"published {result.messages} readings from {units} units at QoS {qos} in {result.seconds:.2f} s: "
            f"{result.rate:,.0f} msg/s ({processes} process(es))"
        )
        return
    try:
        kinds = (
            []
            if faults == "none"
            else list(FaultKind)  # DOCS kinds land on DOCS plants only
            if faults == "all"
            else [FaultKind(k.strip()) for k in faults.split(",") if k.strip()]
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    from devices.catalog import load_catalog  # noqa: PLC0415
    from devices.inventory import InventoryError, load_inventory  # noqa: PLC0415
    from fleetsim.simulator import FleetPublisher, Simulator, generate_units, units_from_inventory  # noqa: PLC0415

    rng = random.Random(seed)
    if generated:
        fleet = generate_units(units, load_catalog(), rng)
    else:
        try:
            fleet = units_from_inventory(load_inventory(_inventory_path(inventory_file)), units, rng)
        except InventoryError as exc:
            _fail(f"inventory has problems:\n{exc}", EXIT_FAILED)
    publisher = FleetPublisher(
        mq.host,
        mq.port,
        qos=qos,
        username=mq.username,
        password=mq.password_value(),
        tls=mq.tls,
        ca_file=str(mq.ca_file) if mq.ca_file else None,
        client_id=f"oxyfleet-sim-{seed}-{time.time_ns() % 10**6}",
    )
    stop = _stop_on_signals()
    with ground_truth.open("w", encoding="utf-8") as truth:
        try:
            sim = Simulator(
                fleet,
                publisher,
                seed=seed,
                duration_s=_duration(duration),
                speed=speed,
                fault_share=fault_share,
                fault_kinds=kinds,
                malformed_share=malformed_share,
                prefix=mq.topic_prefix,
                truth=truth,
            )
        except ValueError as exc:
            _fail(str(exc), EXIT_CONFIG)
        summary = sim.run(stop)
    publisher.close()
    click.echo(
        f"published {summary.messages} messages ({summary.readings_published} readings, "
        f"{summary.batches} late batches, {summary.status_messages} status) for {len(fleet)} units; "
        f"{len(sim.faults)} fault episodes; ground truth in {ground_truth}"
    )


def _engine(settings: Settings, *, writing: bool) -> Any:  # noqa: ANN401 - HealthEngine, imported lazily
    from health.service import build_engine  # noqa: PLC0415

    if settings.inventory_file is None:
        click.echo("(no OXYFLEET_INVENTORY_FILE set: using the sample inventory)", err=True)
    try:
        return build_engine(settings, writing=writing)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _serve_api(engine: Any, settings: Settings) -> None:  # noqa: ANN401 - HealthEngine
    from health.service import serve_api  # noqa: PLC0415
    from report.api import report_router  # noqa: PLC0415

    reports = report_router(
        engine.reader,
        lambda: engine.inventory,
        zones=settings.report.zones,
        programme_zone=settings.report.programme_zone,
        target_pct=settings.report.target_pct,
    )
    serve_api(engine, settings, routers=[reports])


def _since_ms(text: str) -> int:
    return int((time.time() - _duration(text)) * 1000)


@cli.command()
@click.option("--once", is_flag=True, help="Evaluate --since up to now once, write, and exit.")
@click.option(
    "--since", default="1h", show_default=True, help="With --once: how far back to (re-)evaluate, e.g. 7d."
)
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until signalled)."
)
def health(once: bool, since: str, duration: float | None) -> None:
    """Run the health engine: classify every inventory unit each cycle, write unit_state and unit_event."""
    from core.logs import configure_logging  # noqa: PLC0415

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        engine = _engine(settings, writing=True)
        if once:
            now_ms = int(time.time() * 1000)
            evaluation = engine.evaluate_range(_since_ms(since), now_ms)
            counts = evaluation.state_counts()
            click.echo(
                f"evaluated {len(evaluation.status)} units from {since} ago: "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            )
            return
        if settings.health.api_port:
            _serve_api(engine, settings)
        engine.run(_stop_on_signals(), duration)
    except SinkFatalError as exc:
        _fail(str(exc), EXIT_FATAL)
    except SinkError as exc:
        _fail(f"{exc} (is InfluxDB running at {settings.influx.url}?)", EXIT_FAILED)


@cli.command()
@click.option("--hospital", default=None, help="Only this hospital.")
@click.option("--province", default=None, help="Only this province.")
@click.option("--since", default="30d", show_default=True, help="Start of the range, e.g. 30d, 12h.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def uptime(hospital: str | None, province: str | None, since: str, fmt: str) -> None:
    """Availability per unit and per hospital over a range, with the time split by state (hours)."""
    import csv as csv_module  # noqa: PLC0415
    import io  # noqa: PLC0415

    from health.uptime import uptime_report  # noqa: PLC0415
    from store.reader import InfluxQL  # noqa: PLC0415
    from store.retention import results_policy  # noqa: PLC0415

    settings = _settings()
    reader = InfluxQL.from_settings(settings.influx)
    try:
        records = uptime_report(
            reader,
            _since_ms(since),
            int(time.time() * 1000),
            hospital=hospital,
            province=province,
            retention_policy=results_policy(settings.influx),
        )
    except SinkError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        reader.close()
    states = ("in_spec", "underperforming", "power_failure", "no_data", "off", "never_connected")
    if fmt == "json":
        click.echo(json.dumps(records, indent=1))
        return
    columns = ["level", "hospital", "province", "unit_id", "availability_pct", *(f"{s}_h" for s in states)]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv_module.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([r[c] if r[c] is not None else "" for c in columns] for r in records)
        click.echo(out.getvalue(), nl=False)
        return
    click.echo(
        f"{'unit / hospital':<28} {'avail %':>8} {'in spec h':>10} {'underperf h':>11} {'power h':>8} "
        f"{'no data h':>9} {'off h':>7} {'never conn. h':>13}"
    )
    for r in records:
        name = r["unit_id"] or f"= {r['hospital']}"
        shown = "-" if r["availability_pct"] is None else f"{r['availability_pct']:.2f}"
        click.echo(
            f"{name[:28]:<28} {shown:>8} {r['in_spec_h']:>10.2f} {r['underperforming_h']:>11.2f} "
            f"{r['power_failure_h']:>8.2f} {r['no_data_h']:>9.2f} {r['off_h']:>7.2f} "
            f"{r['never_connected_h']:>13.2f}"
        )


@cli.command()
@click.option(
    "--state",
    default=None,
    type=click.Choice(["in_spec", "underperforming", "power_failure", "no_data", "off", "never_connected"]),
    help="Only units in this state.",
)
@click.option("--hospital", default=None, help="Only this hospital.")
def status(state: str | None, hospital: str | None) -> None:
    """The live fleet table as the health engine last stored it: state, reason, since, last reading."""
    from devices.inventory import SAMPLE_INVENTORY, InventoryError, load_inventory  # noqa: PLC0415
    from health.status import sort_worst_first, stored_status  # noqa: PLC0415
    from store.reader import InfluxQL  # noqa: PLC0415
    from store.retention import results_policy  # noqa: PLC0415

    settings = _settings()
    try:
        inventory = load_inventory(settings.inventory_file or SAMPLE_INVENTORY)
    except InventoryError as exc:
        _fail(f"OXYFLEET_INVENTORY_FILE: the inventory has problems:\n{exc}", EXIT_CONFIG)
    reader = InfluxQL.from_settings(settings.influx)
    now_ms = int(time.time() * 1000)
    try:
        stored = stored_status(reader, inventory, now_ms, results_policy(settings.influx))
    except SinkError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        reader.close()
    window_start = now_ms - round(settings.health.lookback_s * 1000)
    rows = [
        s
        for s in stored.values()
        if (state is None or s.condition.state == state)
        and (hospital is None or s.unit.hospital.casefold() == hospital.casefold())
    ]
    click.echo(
        f"{'unit':<16} {'hospital':<24} {'state':<16} {'reason':<22} {'since (UTC)':<19} {'last reading':<19} maint"
    )
    for s in sort_worst_first(rows):
        since = _when(s.since_ms) if s.since_ms > window_start else f"<{_when(window_start)[11:]}"
        shown = "pending" if s.pending else s.condition.state
        reason = f"{s.condition.state} -> {s.pending.state}" if s.pending else s.condition.reason
        click.echo(
            f"{s.unit.unit_id:<16} {s.unit.hospital[:24]:<24} {shown:<16} {reason[:22]:<22} "
            f"{since:<19} {_when(s.last_reading_ms):<19} {'due' if s.maintenance_due else ''}"
        )
    missing = len(inventory) - len(stored)
    click.echo(
        f"{len(rows)} units" + (f" ({missing} not yet evaluated by the health engine)" if missing else "")
    )


def _when(ms: int | None) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@cli.group()
def dashboards() -> None:
    """Grafana: push oxyfleet's dashboards and alert rules into an existing Grafana."""


@dashboards.command("push")
@click.option("--url", required=True, help="Grafana base URL, e.g. https://grafana.example.org")
@click.option(
    "--token",
    envvar="GRAFANA_TOKEN",
    required=True,
    help="Service-account token (or set GRAFANA_TOKEN; avoid putting it on the command line).",
)
@click.option(
    "--with-datasource",
    is_flag=True,
    help="Also create/update the InfluxDB datasource from the OXYFLEET_INFLUX__* settings.",
)
def dashboards_push(url: str, token: str, with_datasource: bool) -> None:
    """Create or update folder, dashboards and alert rules by uid; report what changed."""
    from grafana_client.api import GrafanaApi  # noqa: PLC0415
    from grafana_client.client import GrafanaException  # noqa: PLC0415

    from dashboards.push import push  # noqa: PLC0415

    influx = _settings().influx if with_datasource else None
    try:
        report = push(GrafanaApi.from_url(url=url, credential=token), influx=influx)
    except GrafanaException as exc:
        code = EXIT_FATAL if exc.status_code in (401, 403) else EXIT_FAILED
        _fail(f"Grafana at {url} answered {exc.status_code}: {exc.message}", code)
    except OSError as exc:
        _fail(f"cannot reach Grafana at {url}: {exc}", EXIT_FAILED)
    for line in report:
        click.echo(line)
    changed = sum(1 for line in report if not line.endswith("unchanged"))
    click.echo(f"{changed} change(s), {len(report) - changed} unchanged")


from oxyfleet.report_cmd import report_cmd, tokens  # noqa: E402 - registered on the group defined above

cli.add_command(report_cmd)
cli.add_command(tokens)


def main() -> None:
    """Console-script entry point."""
    cli()
