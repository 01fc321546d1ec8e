"""The Dockerfile's install steps, run in a clean virtualenv (no Docker engine runs here).

The image installs docker/requirements.lock with ``--require-hashes --no-deps`` and then oxyfleet from the
build context with ``--no-deps --no-build-isolation``. This test does the same from a copy of the build
context that .dockerignore would send, so it fails when the lock does not install or is incomplete
(``pip check``), when .dockerignore drops something the package needs, or when the package data (the
dashboards' JSON and provisioning, the device catalog and sample inventory) is not in the installed
package. It needs PyPI (or the machine's package mirror), like the image build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_image_install_steps_give_a_working_oxyfleet(
    tmp_path: Path, dockerignored: Callable[[str], bool]
) -> None:
    listed = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    files = [f for f in listed if f and not dockerignored(f)]
    if not files:
        pytest.skip("not a git checkout")
    context = tmp_path / "context"
    for name in files:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    dockerfile = (ROOT / "Dockerfile").read_text()
    steps = re.findall(r"pip install ([^\n&]*)", dockerfile)
    assert steps == [
        "--require-hashes --no-deps -r /tmp/requirements.lock ",
        "--no-deps --no-build-isolation /src ",
    ]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXYFLEET_", "VIRTUAL_ENV", "PYTHON"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pip, *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )

    done = run(
        "install", "--require-hashes", "--no-deps", "-r", str(context / "docker" / "requirements.lock")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = run("install", "--no-deps", "--no-build-isolation", str(context))
    assert done.returncode == 0, done.stderr[-3000:]
    done = run("check")
    assert done.returncode == 0, done.stdout
    probe = """
import importlib.resources as r
names = {p.name for p in r.files("dashboards").joinpath("json").iterdir()}
assert "fleet-overview.json" in names, names
assert r.files("dashboards").joinpath("provisioning", "alerting", "rules.yaml").is_file()
assert r.files("devices").joinpath("inventory.csv").is_file()
assert r.files("devices").joinpath("models.toml").is_file()
print("ok")
"""
    checked = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.stdout.strip() == "ok", checked.stderr
    cli = subprocess.run(
        [str(venv / "bin" / "oxyfleet"), "check-config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
