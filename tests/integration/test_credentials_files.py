"""`oxyfleet devices credentials` writes files the real Mosquitto can read when it runs as its own user.

Mosquitto 2 drops privileges to the ``mosquitto`` user and then opens the password file; a 0600 file
owned by root (the old behaviour, and still the default) stops it at startup. As root here, ``chown``
works, so the options are tested for real: the broker starts and a unit logs in with its password.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from devices.credentials import load_passwords
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from oxyfleet.cli import cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [
    pytest.mark.usefixtures("services"),
    pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root"),
]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the mosquitto user can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="oxyfleet-creds-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _generate(shared_dir: Path, *options: str) -> tuple[Path, dict[str, str]]:
    inventory = load_inventory(SAMPLE_INVENTORY)
    inv = shared_dir / "inventory.csv"
    inv.write_text(write_inventory([inventory.units["OC-JKT-00001"], inventory.units["DOCS-PAPUA-01"]]))
    out = shared_dir / "creds"
    result = CliRunner().invoke(
        cli, ["devices", "credentials", "--file", str(inv), "--out", str(out), *options]
    )
    assert result.exit_code == 0, result.output
    return out, load_passwords(out / "device-passwords.csv")


def _broker(out: Path, port: int) -> subprocess.Popen[bytes]:
    conf = out.parent / "mosquitto.conf"
    conf.write_text(  # no `user` line: Mosquitto drops to its default user, mosquitto, as installed
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {out / 'passwd'}\n"
        f"acl_file {out / 'acl'}\nlog_dest stderr\n"
    )
    return subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _login(port: int, user: str, password: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    codes: list[int] = []
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        codes.append(reason.value)  # type: ignore[attr-defined]
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(5)
        return codes[0]
    finally:
        client.disconnect()
        client.loop_stop()


def test_default_files_are_unreadable_to_the_broker_user(
    shared_dir: Path, free_port: Callable[[], int]
) -> None:
    """Why the options exist: the broker refuses to start on the root-owned 0600 file."""
    out, _ = _generate(shared_dir)
    broker = _broker(out, free_port())
    try:
        _, err = broker.communicate(timeout=10)
    finally:
        broker.kill()
    assert broker.returncode != 0
    assert b"Unable to open pwfile" in err or b"Error opening password file" in err


@pytest.mark.parametrize(
    ("options", "owner", "group", "mode"),
    [
        (["--owner", "mosquitto"], "mosquitto", "root", 0o600),
        (["--group", "mosquitto", "--mode", "0640"], "root", "mosquitto", 0o640),
    ],
)
def test_owner_or_group_lets_the_broker_read_them(
    shared_dir: Path, free_port: Callable[[], int], options: list[str], owner: str, group: str, mode: int
) -> None:
    out, passwords = _generate(shared_dir, *options)
    for name in ("passwd", "acl"):
        st = (out / name).stat()
        assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == (
            owner,
            group,
            mode,
        )
    secret = (out / "device-passwords.csv").stat()
    assert (secret.st_uid, secret.st_mode & 0o777) == (0, 0o600)  # the plain passwords stay the operator's
    port = free_port()
    broker = _broker(out, port)
    try:
        assert _login(port, "DOCS-PAPUA-01", passwords["DOCS-PAPUA-01"]) == 0
        assert _login(port, "DOCS-PAPUA-01", passwords["OC-JKT-00001"]) in (134, 135)
    finally:
        broker.terminate()
        broker.communicate(timeout=10)
