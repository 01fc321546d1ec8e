"""Shared test options: ``--require-services`` turns a missing Mosquitto/InfluxDB from a skip into a failure.

Locally, integration tests skip when the services are not running; the README's test command and CI pass
``--require-services`` (after ``scripts/services start``), so a skipped integration test cannot pass CI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-services",
        action="store_true",
        default=False,
        help="fail (instead of skip) integration tests when Mosquitto or InfluxDB is not reachable",
    )
