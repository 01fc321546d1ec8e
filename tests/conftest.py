"""Shared test options: ``--require-services`` turns a missing Mosquitto/InfluxDB from a skip into a failure.

Locally, integration tests skip when the services are not running; the README's test command and CI pass
``--require-services`` (after ``scripts/services start``), so a skipped integration test cannot pass CI.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-services",
        action="store_true",
        default=False,
        help="fail (instead of skip) integration tests when Mosquitto or InfluxDB is not reachable",
    )


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (the last matching rule wins).

    Docker matches with Go's filepath.Match plus ``**``; fnmatch over the path and each of its parent
    directories (and over the bare name, for ``**/`` patterns) covers the patterns this repository uses.
    """
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").rstrip("/").removeprefix("**/")
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.split("/")[-1], pattern) for p in prefixes):
            result = not negate
    return result


@pytest.fixture(name="dockerignored")
def dockerignored_fixture() -> Callable[[str], bool]:
    """``dockerignored(path)``: whether the repository's .dockerignore keeps ``path`` out of the image build."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return lambda path: _dockerignored(path, patterns)
