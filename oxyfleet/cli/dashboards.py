"""``oxyfleet dashboards push``: oxyfleet's dashboards and alert rules into an existing Grafana."""

from __future__ import annotations

import click

from oxyfleet.cli.common import settings
from oxyfleet.cli.errors import handled, remember

__all__ = ["dashboards"]


@click.group()
def dashboards() -> None:
    """Grafana: push oxyfleet's dashboards and alert rules into an existing Grafana."""


@dashboards.command("push")
@click.option("--url", required=True, help="Grafana base URL, e.g. https://grafana.example.org")
@click.option(
    "--token",
    envvar="GRAFANA_TOKEN",
    default=None,
    help="Service-account token (or set GRAFANA_TOKEN; avoid putting it on the command line).",
)
@click.option(
    "--with-datasource",
    is_flag=True,
    help="Also create/update the InfluxDB datasource from the OXYFLEET_INFLUX__* settings.",
)
@handled
def dashboards_push(url: str, token: str | None, with_datasource: bool) -> None:
    """Create or update folder, dashboards and alert rules by uid; report what changed."""
    if not token:
        raise click.UsageError(
            "no Grafana token: set GRAFANA_TOKEN to a service-account token with the Editor role "
            "(or pass --token, which other users of this machine can see in the process list)"
        )
    from grafana_client.api import GrafanaApi  # noqa: PLC0415

    from dashboards.push import push  # noqa: PLC0415

    influx = settings().influx if with_datasource else None
    remember(grafana_url=url)
    report = push(GrafanaApi.from_url(url=url, credential=token), influx=influx)
    for line in report:
        click.echo(line)
    changed = sum(1 for line in report if not line.endswith("unchanged"))
    click.echo(f"{changed} change(s), {len(report) - changed} unchanged")
