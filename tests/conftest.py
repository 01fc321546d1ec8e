"""Shared test options: ``--require-services`` turns a missing Mosquitto/InfluxDB from a skip into a failure.

Locally, integration tests skip when the services are not running; the README's test command and CI pass
``--require-services`` (after ``scripts/services start``), so a skipped integration test cannot pass CI.
"""

from __future__ import annotations

import fnmatch
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

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


@pytest.fixture(name="clean_env")
def clean_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OXYFLEET_ variable, Grafana token or .env from the developer's shell may change a test's settings."""
    for key in list(os.environ):
        if key.startswith("OXYFLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(name="dockerignored")
def dockerignored_fixture() -> Callable[[str], bool]:
    """``dockerignored(path)``: whether the repository's .dockerignore keeps ``path`` out of the image build."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return lambda path: _dockerignored(path, patterns)


def run_on_terminal(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> tuple[int, str]:
    """Run ``oxyfleet ARGS`` with stderr on a pseudo-terminal, as in an operator's shell; (exit code, stderr).

    stdout stays a pipe to nowhere, as when a table is piped on while progress shows on the terminal.
    """
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxyfleet", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
        cwd=cwd,
        env={**env, "COLUMNS": "100"},
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # Linux reports the child's end closing as EIO
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(parent)
    return proc.wait(timeout=30), seen.decode(errors="replace")


@pytest.fixture(name="on_terminal")
def on_terminal_fixture() -> Callable[..., tuple[int, str]]:
    """:func:`run_on_terminal`, for tests of what only a terminal shows (progress bars)."""
    return run_on_terminal
