"""What ships: the Docker image copies every package the wheel has, and the wheel's data files exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.removesuffix("*") for p in patterns]


def test_every_package_is_copied_into_the_image(dockerignored: Callable[[str], bool]) -> None:
    """The image builds from the whole context (``COPY . /src``); .dockerignore must keep every package."""
    assert re.search(r"^COPY \. /src$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    dropped = [p for p in _packages() if dockerignored(f"{p}/__init__.py")]
    assert not dropped, f".dockerignore drops {dropped}: the image would lack them"
    assert all((ROOT / p / "__init__.py").is_file() for p in _packages())


def test_package_data_globs_match_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    for package, globs in data.items():
        for pattern in globs:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} matches nothing"
    assert (ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").is_file()
