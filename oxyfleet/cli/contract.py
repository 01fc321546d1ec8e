"""``oxyfleet validate-payload``, ``schema`` and ``env-example``: the contracts people build against.

``validate-payload`` is for firmware makers: it runs the ingester's own decoder on a sample, so its
verdict is the ingester's, and adds what the ingester only counts: fields it will ignore, with the field
that was probably meant.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from core.settings import env_example
from oxyfleet.cli.errors import EXIT_FAILED, fail, handled

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["env_example_cmd", "schema", "validate_payload"]

ROOT: Final = Path(__file__).resolve().parents[2]
SCHEMA_DIR: Final = ROOT / "docs" / "schema"
KINDS: Final = ("concentrator", "docs")


@click.command("validate-payload")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=None,
    help="Device kind (default: from --topic, else concentrator); must agree with --topic.",
)
@click.option(
    "--topic",
    default=None,
    help="Topic the payload would be published to, e.g. oxygen/docs/DOCS-1/telemetry or .../status.",
)
@click.option(
    "--no-time-window", is_flag=True, help="Do not check ts against the current time (old samples)."
)
@handled
def validate_payload(file: Any, kind: str | None, topic: str | None, no_time_window: bool) -> None:  # noqa: ANN401
    """Tell a firmware maker whether FILE ('-' for stdin) is a valid payload, and if not, exactly why."""
    from devices.payload import PAYLOAD_MODELS  # noqa: PLC0415
    from ingest.decode import Decoder, Inbound  # noqa: PLC0415

    payload = file.read()
    topic, kind = _topic_and_kind(payload, topic, kind)
    prefix = topic.split("/", 1)[0]
    decoded = Decoder(prefix, check_time=not no_time_window).decode(Inbound(topic, payload, time.time_ns()))
    for rej in decoded.rejections:
        click.echo(f"INVALID ({rej.reason.value}):")
        for part in rej.detail.split("; "):
            click.echo(f"  - {part}")
    for change in decoded.connections:
        state = "online" if change.online else "offline"
        click.echo(f"valid: status {state!r} of {change.kind} unit {change.unit_id} (topic {topic})")
    if decoded.readings:
        click.echo(f"valid: {len(decoded.readings)} {kind} reading(s) for topic {topic}")
    if not decoded.connections:
        unknown = _unknown_fields(payload, sorted(PAYLOAD_MODELS[kind].model_fields))
        if unknown:
            click.echo(f"warning: unknown fields are ignored: {', '.join(unknown)}")
    sys.exit(EXIT_FAILED if decoded.rejections else 0)


def _topic_and_kind(payload: bytes, topic: str | None, kind: str | None) -> tuple[str, str]:
    """The topic to judge the payload on, and its kind; ``--kind`` and ``--topic`` must agree."""
    from devices.spec import topic_for  # noqa: PLC0415
    from ingest.decode import parse_topic  # noqa: PLC0415

    if topic is not None:
        parts = parse_topic(topic, topic.split("/", 1)[0])
        if isinstance(parts, str):
            fail(f"bad topic: {parts}")
        if kind is not None and kind != parts.kind:
            raise click.BadParameter(
                f"--kind {kind} contradicts the topic, which is a {parts.kind} topic ({topic}); "
                "drop --kind or fix the topic",
                param_hint="--kind",
            )
        return topic, parts.kind
    kind = kind or "concentrator"
    unit = "UNIT-1"
    try:
        claimed = json.loads(payload).get("unit_id")
        unit = claimed if isinstance(claimed, str) and claimed else unit
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return topic_for(kind, unit), kind


def _unknown_fields(payload: bytes, known: list[str]) -> list[str]:
    """Each field the contract will ignore, with the known field it is closest to ("did you mean")."""
    out = []
    for name in sorted(_field_names(payload) - set(known)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def _field_names(payload: bytes) -> set[str]:
    try:
        data = json.loads(payload)
    except ValueError:
        return set()
    items = data.get("readings", [data]) if isinstance(data, dict) else []
    return {k for item in _dicts(items) for k in item}


def _dicts(items: object) -> Iterator[dict[str, Any]]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            yield item


def _write_or_check(path: Path, text: str, check: bool, how: str) -> None:
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            fail(f"{path.relative_to(ROOT)} is stale; run `{how}`")
        click.echo(f"{path.relative_to(ROOT)} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path.relative_to(ROOT)}")


@click.command()
@click.option("--check", "check_only", is_flag=True, help="Only check that the committed files are current.")
@handled
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
        fail(f"{contract} lost its <!-- fields:begin/end --> markers")
    text = f"{head}<!-- fields:begin{begin_line}\n{fields_markdown()}\n<!-- fields:end -->{tail}"
    _write_or_check(contract, text, check_only, "oxyfleet schema")


@click.command("env-example")
@click.option("--check", "check_only", is_flag=True, help="Only check that .env.example is current.")
@handled
def env_example_cmd(check_only: bool) -> None:
    """Write .env.example from the settings models (every variable, default and meaning)."""
    _write_or_check(ROOT / ".env.example", env_example(), check_only, "oxyfleet env-example")
