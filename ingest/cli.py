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

from ingest.config import Settings, env_example, load_settings, redacted_lines
from ingest.errors import ConfigError, SinkError, SinkFatalError, SourceAuthError

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
def run(duration: float | None) -> None:
    """Run the ingester: MQTT -> validation -> InfluxDB, until Ctrl-C/SIGTERM."""
    from ingest.logs import configure_logging  # noqa: PLC0415 - keep --help fast
    from ingest.pipeline import build_ingester  # noqa: PLC0415

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    stop = _stop_on_signals()
    try:
        ingester = build_ingester(settings)
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
    from ingest.query_influx import InfluxQL  # noqa: PLC0415

    influx = settings.influx
    if influx.api == "v2":
        from ingest.pipeline import make_transport  # noqa: PLC0415
        from ingest.sink_influx import V2Transport  # noqa: PLC0415

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
    from ingest.source_mqtt import probe_broker  # noqa: PLC0415

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
    sys.exit(0 if ok else EXIT_FAILED)


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
@click.option("--units", default=20, show_default=True, help="Simulated units.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between readings of each unit.")
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)."
)
@click.option("--refresh", default=5.0, show_default=True, help="Seconds between table refreshes.")
@click.option("--seed", default=1, show_default=True, help="Seed of the simulated fleet.")
def demo(units: int, interval: float, duration: float | None, refresh: float, seed: int) -> None:
    """Ingester + a simulated fleet + a live table of what reached InfluxDB, per unit."""
    from ingest.demo import run_demo  # noqa: PLC0415

    settings = _settings()
    stop = _stop_on_signals()
    try:
        ok = run_demo(
            settings,
            stop,
            units=units,
            interval_s=interval,
            duration_s=duration,
            refresh_s=refresh,
            seed=seed,
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


def main() -> None:
    """Console-script entry point."""
    cli()
