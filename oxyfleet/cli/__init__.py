"""The ``oxyfleet`` command: a thin shell, one module per command group.

Each module parses its options, composes what the packages offer (``ingest.service``,
``health.service``, ``dashboards.push``...) and prints; :mod:`oxyfleet.cli.errors` alone turns failures
into messages and exit codes: 0 success; 1 a check failed, a payload is invalid or a filter matched
nothing; 2 configuration or usage error (what to fix is printed); 3 a fatal refusal from a service
(credentials refused, database missing).
"""

from __future__ import annotations

import click

from oxyfleet import __version__
from oxyfleet.cli.contract import env_example_cmd, schema, validate_payload
from oxyfleet.cli.dashboards import dashboards
from oxyfleet.cli.devices import devices
from oxyfleet.cli.health import health, status, uptime
from oxyfleet.cli.ingest import check, check_config, run
from oxyfleet.cli.report import report_cmd, tokens
from oxyfleet.cli.sim import demo, simulate

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="oxyfleet", message="%(prog)s %(version)s")
def cli() -> None:
    """oxyfleet: telemetry backend for medical oxygen concentrators and DOCS plants.

    Configuration comes from OXYFLEET_* environment variables and .env (see .env.example).
    """


for _command in (
    run,
    check_config,
    check,
    validate_payload,
    schema,
    env_example_cmd,
    demo,
    devices,
    simulate,
    health,
    uptime,
    status,
    dashboards,
    report_cmd,
    tokens,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()
