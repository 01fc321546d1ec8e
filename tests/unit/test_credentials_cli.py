"""`oxyfleet devices credentials` options: every refusal says what to put instead, exit 2, nothing written."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from oxyfleet.cli import cli

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--mode", "0644"], "mode 0644 lets every user of the machine read the broker's password hashes"),
        (["--mode", "0604"], "mode 0604 lets every user"),
        (["--mode", "rw-r-----"], "'rw-r-----' is not an octal mode like 0640"),
        (["--mode", "0200"], "mode 0200 must give the owner read access"),
        (["--owner", "no-such-user-x"], "no user 'no-such-user-x' on this machine"),
        (["--group", "no-such-group-x"], "no group 'no-such-group-x' on this machine"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    tmp_path: Path, options: list[str], message: str
) -> None:
    out = tmp_path / "creds"
    result = CliRunner().invoke(cli, ["devices", "credentials", "--out", str(out), *options])
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_default_files_are_private_and_the_options_are_documented(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    result = CliRunner().invoke(cli, ["devices", "credentials", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "device-passwords.csv": 0o600,
        "passwd": 0o600,
        "acl": 0o600,
    }
    helptext = CliRunner().invoke(cli, ["devices", "credentials", "--help"]).output
    assert "--owner mosquitto" in helptext and "--mode 0640" in helptext
