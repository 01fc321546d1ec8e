"""``oxyfleet report`` (monthly reports to files) and ``oxyfleet tokens`` (read-only API tokens).

Exit codes as for every command: 1 when InfluxDB or the PDF printer failed, 2 for a usage or
configuration error (what to fix is printed).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, cast

import click

from core.errors import ConfigError, SinkError
from core.settings import Settings, load_settings
from oxyfleet.cli.errors import handled

if TYPE_CHECKING:
    from health.tokens import ScopeKind
    from report.build import By
    from report.i18n import Lang

__all__ = ["report_cmd", "tokens"]

EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"oxyfleet: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "report"


@click.command("report")
@click.option("--month", required=True, help="Calendar month, e.g. 2026-11 (in each report's local zone).")
@click.option(
    "--by",
    type=click.Choice(["hospital", "province", "source"]),
    default="hospital",
    show_default=True,
    help="One report per hospital, per province, or per source (donor).",
)
@click.option("--hospital", default=None, help="Only this hospital.")
@click.option("--province", default=None, help="Only this province.")
@click.option("--source", default=None, help="Only units from this source (donor).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf", "csv"]),
    default="html",
    show_default=True,
    help="html (with plots), pdf (through headless Chromium) or csv (the figures only).",
)
@click.option(
    "--lang", type=click.Choice(["id", "en"]), default="id", show_default=True, help="Indonesian or English."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(),
    show_default=True,
    help="Directory the report files are written to.",
)
@handled
def report_cmd(
    month: str,
    by: str,
    hospital: str | None,
    province: str | None,
    source: str | None,
    fmt: str,
    lang: str,
    out: Path,
) -> None:
    """Monthly report per hospital, province or donor source: availability, oxygen delivered, faults, plots."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from devices.inventory import InventoryError, load_inventory  # noqa: PLC0415
    from report.build import make_report, scopes  # noqa: PLC0415
    from report.data import Period  # noqa: PLC0415
    from report.render import ReportRenderError, to_csv, to_html, to_pdf  # noqa: PLC0415
    from report.zones import DEFAULT_ZONE  # noqa: PLC0415
    from store.reader import InfluxQL  # noqa: PLC0415
    from store.retention import results_policy  # noqa: PLC0415

    settings = _settings()
    try:
        Period.parse(month, ZoneInfo(DEFAULT_ZONE))
    except ValueError as exc:
        _fail(f"--month: {exc}", EXIT_CONFIG)
    if settings.inventory_file is None:
        _fail("OXYFLEET_INVENTORY_FILE is not set: reports are made per inventory unit", EXIT_CONFIG)
    try:
        inventory = load_inventory(settings.inventory_file)
    except InventoryError as exc:
        _fail(f"OXYFLEET_INVENTORY_FILE: the inventory has problems:\n{exc}", EXIT_CONFIG)
    found = scopes(
        inventory,
        cast("By", by),
        hospital=hospital,
        province=province,
        source=source,
        zones=settings.report.zones,
        programme_zone=settings.report.programme_zone,
    )
    if not found:
        _fail("no inventory unit matches --hospital/--province/--source", EXIT_CONFIG)
    out.mkdir(parents=True, exist_ok=True)
    reader = InfluxQL.from_settings(settings.influx)
    try:
        for scope in found:
            started = time.perf_counter()
            rep = make_report(
                reader,
                scope,
                month,
                target_pct=settings.report.target_pct,
                plotted=settings.report.plotted_units,
                retention_policy=results_policy(settings.influx),
            )
            path = out / f"{by}-{_file_name(scope.name)}-{month}-{lang}.{fmt}"
            if fmt == "csv":
                path.write_text(to_csv(rep), encoding="utf-8")
            elif fmt == "html":
                path.write_text(to_html(rep, cast("Lang", lang)), encoding="utf-8")
            else:
                to_pdf(to_html(rep, cast("Lang", lang)), path)
            click.echo(f"{path}  ({len(rep.units)} units, {time.perf_counter() - started:.1f} s)")
    except SinkError as exc:
        _fail(str(exc), EXIT_FAILED)
    except ReportRenderError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        reader.close()


@click.group()
def tokens() -> None:
    """Read-only API tokens per hospital or province (or the programme's, which reads everything)."""


@tokens.command("create")
@click.option("--hospital", default=None, help="The token reads this hospital's reports.")
@click.option("--province", default=None, help="The token reads this province's reports and its hospitals'.")
@click.option("--programme", is_flag=True, help="The token reads everything (the national programme).")
@click.option("--note", default="", help="Who holds it (shown by 'tokens list').")
@handled
def tokens_create(hospital: str | None, province: str | None, programme: bool, note: str) -> None:
    """Create a token and print it once (only its scrypt hash is stored)."""
    from health.tokens import TokenError, TokenStore  # noqa: PLC0415

    chosen = [x for x in (hospital, province, programme or None) if x]
    if len(chosen) != 1:
        _fail("give exactly one of --hospital NAME, --province NAME, --programme", EXIT_CONFIG)
    store = TokenStore(_settings().health.api_tokens_file)
    kind: ScopeKind = "hospital" if hospital else "province" if province else "programme"
    try:
        token_id, token = store.create(kind, hospital or province or "", note)
    except (TokenError, OSError) as exc:
        _fail(str(exc), EXIT_CONFIG)
    click.echo(f"token {token_id} ({kind} {hospital or province or ''}), shown once:", err=True)
    click.echo(token)


@tokens.command("list")
@handled
def tokens_list() -> None:
    """Tokens by id and scope (never the tokens themselves)."""
    from health.tokens import TokenError, TokenStore  # noqa: PLC0415

    try:
        rows = TokenStore(_settings().health.api_tokens_file).list()
    except TokenError as exc:
        _fail(str(exc), EXIT_CONFIG)
    for r in rows:
        click.echo(f"{r['id']}  {r['kind']:<10} {r['name']:<32} {r['created']}  {r['note']}")


@tokens.command("revoke")
@click.argument("token_id")
@handled
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by its id."""
    from health.tokens import TokenError, TokenStore  # noqa: PLC0415

    try:
        done = TokenStore(_settings().health.api_tokens_file).revoke(token_id)
    except TokenError as exc:
        _fail(str(exc), EXIT_CONFIG)
    if not done:
        _fail(f"no token {token_id!r}", EXIT_FAILED)
    click.echo(f"revoked {token_id}")
