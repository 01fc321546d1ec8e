"""``oxyfleet devices``: the fleet inventory (list, check a file, broker credentials per unit)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from oxyfleet.cli.common import inventory_option, inventory_path, nothing_matched, settings
from oxyfleet.cli.errors import EXIT_FAILED, fail, handled
from oxyfleet.cli.output import Column, progress, table

__all__ = ["devices"]

KINDS = ("concentrator", "docs")


@click.group()
def devices() -> None:
    """The fleet inventory: list units, check an inventory file, make broker credentials."""


@devices.command("list")
@inventory_option
@click.option("--hospital", default=None, help="Only this hospital (case-insensitive).")
@click.option("--province", default=None, help="Only this province (case-insensitive).")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only this kind.")
@click.option("--model", default=None, help="Only this model (case-insensitive).")
@click.option("--source", default=None, help="Only units from this source/donor (case-insensitive).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv"]),
    default="table",
    show_default=True,
    help="table for people; csv (the inventory's own columns) for spreadsheets and scripts.",
)
@handled
def devices_list(
    file: Path | None,
    hospital: str | None,
    province: str | None,
    kind: str | None,
    model: str | None,
    source: str | None,
    fmt: str,
) -> None:
    """List registered units, filtered; exit 1 when the filters match no unit."""
    from devices.inventory import load_inventory, write_inventory  # noqa: PLC0415

    inventory = load_inventory(inventory_path(file))
    filters = {"hospital": hospital, "province": province, "kind": kind, "model": model, "source": source}
    units = list(inventory.select(**filters))
    if not units:
        every = inventory.units.values()
        known = {name: [getattr(u, name) for u in every] for name in filters}
        nothing_matched("unit", filters, known)
    if fmt == "csv":
        click.echo(write_inventory(units), nl=False)
        return
    columns = [
        Column("unit"),
        Column("kind", drop=1),
        Column("model"),
        Column("hospital"),
        Column("province"),
        Column("source", drop=3),
        Column("commissioned", drop=2),
    ]
    rows = [
        [u.unit_id, u.kind, u.model, u.hospital, u.province, u.source, u.commissioned.isoformat()]
        for u in units
    ]
    table(columns, rows)
    click.echo(f"{len(units)} of {len(inventory)} units")


@devices.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@handled
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
    kinds = ", ".join(f"{k}: {sum(1 for u in inventory.units.values() if u.kind == k)}" for k in KINDS)
    click.echo(f"{file}: ok, {len(inventory)} units ({kinds})")


@devices.command("credentials")
@inventory_option
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
@handled
def devices_credentials(
    file: Path | None, out: Path, owner: str | None, group: str | None, mode: str
) -> None:
    """Per-device broker passwords and the Mosquitto ACL: each unit may publish only its own topics.

    Mosquitto runs as its own user and must be able to read passwd and acl: e.g. --owner mosquitto
    (mode 0600), or --group mosquitto --mode 0640.
    """
    from devices.credentials import BrokerFileAccess, CredentialsError, write_credentials  # noqa: PLC0415
    from devices.inventory import load_inventory  # noqa: PLC0415

    try:
        access = BrokerFileAccess(owner, group, int(mode, 8))
    except ValueError as exc:  # CredentialsError too
        detail = str(exc) if isinstance(exc, CredentialsError) else f"{mode!r} is not an octal mode like 0640"
        raise click.BadParameter(detail, param_hint="--owner/--group/--mode") from None
    inventory = load_inventory(inventory_path(file))
    prefix = settings().mqtt.topic_prefix
    try:
        with progress("hashing passwords", len(inventory)) as update:
            new, kept = write_credentials(inventory.units.values(), out, prefix, access, progress=update)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    who = f" (owner {owner or 'unchanged'}, group {group or 'unchanged'}, mode {access.mode:04o})"
    click.echo(
        f"{out}: passwd and acl for {new + kept} units ({new} new passwords, {kept} kept){who}; "
        f"hand each unit its line of device-passwords.csv and keep that file secret"
    )
