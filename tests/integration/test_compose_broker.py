"""The docker-compose broker configuration (password file + ACL) run on the real Mosquitto of this machine.

Docker cannot run here, so the test starts Mosquitto itself with the compose files (mosquitto.conf with its
paths pointed at a temporary directory, the same ACL, a password file made with mosquitto_passwd as the
entrypoint does) and checks what the configuration promises: no anonymous clients, the ingester reads
device topics, the simulator writes them, and a device may publish only as itself.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
USERS = {"oxyfleet-ingest": "ingest-pw", "oxyfleet-simulator": "sim-pw", "OC-1": "device-pw"}


def subscribe_all(client: mqtt.Client) -> list[str]:
    """Subscribe ``client`` to every device topic; returns the list the received topics go to."""
    received: list[str] = []
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, m: received.append(m.topic)
    client.subscribe("oxygen/#", qos=1)
    assert subscribed.wait(5)
    return received


@pytest.fixture
def broker(tmp_path: Path, mosquitto: Callable[[Path, int], object], free_port: Callable[[], int]) -> int:
    port = free_port()
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    conf = (ROOT / "docker" / "mosquitto" / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/passwd", str(passwd)).replace(
        "/mosquitto/config/acl", str(ROOT / "docker" / "mosquitto" / "acl")
    )
    conf = conf.replace("persistence true", "persistence false").replace("log_dest stdout", "log_dest stderr")
    (tmp_path / "mosquitto.conf").write_text(conf + "user root\n")
    mosquitto(tmp_path / "mosquitto.conf", port)
    return port


def connect(port: int, user: str | None, password: str | None = None) -> tuple[mqtt.Client, int]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user:
        client.username_pw_set(user, password)
    result: dict[str, int] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        result["rc"] = reason.value  # type: ignore[attr-defined]
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(5)
    return client, result["rc"]


def test_the_compose_broker_configuration(broker: int) -> None:
    anonymous, rc = connect(broker, None)
    assert rc == 135  # not authorized
    anonymous.loop_stop()

    ingest, rc = connect(broker, "oxyfleet-ingest", USERS["oxyfleet-ingest"])
    assert rc == 0
    received = subscribe_all(ingest)

    simulator, _ = connect(broker, "oxyfleet-simulator", USERS["oxyfleet-simulator"])
    device, _ = connect(broker, "OC-1", USERS["OC-1"])
    simulator.publish("oxygen/concentrator/SIM-9/telemetry", b"{}", qos=1).wait_for_publish(5)
    device.publish("oxygen/concentrator/OC-1/telemetry", b"{}", qos=1).wait_for_publish(5)
    device.publish("oxygen/concentrator/OC-2/telemetry", b"{}", qos=1).wait_for_publish(
        5
    )  # spoofing: dropped
    ingest.publish("oxygen/concentrator/OC-3/telemetry", b"{}", qos=1).wait_for_publish(
        5
    )  # read-only: dropped
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(received) < 2:
        time.sleep(0.05)
    time.sleep(0.5)
    assert sorted(received) == ["oxygen/concentrator/OC-1/telemetry", "oxygen/concentrator/SIM-9/telemetry"]
    refused, wrong = connect(broker, "oxyfleet-ingest", "wrong")
    assert wrong in (134, 135)  # bad user name or password / not authorized (Mosquitto 2.0 says 135)
    refused.loop_stop()
    for client in (ingest, simulator, device):
        client.disconnect()
        client.loop_stop()


def test_generated_device_credentials_on_the_real_broker(
    tmp_path: Path, mosquitto: Callable[[Path, int], object], free_port: Callable[[], int]
) -> None:
    """`oxyfleet devices credentials` output, loaded by the real Mosquitto: each unit only as itself."""
    from click.testing import CliRunner

    from devices.credentials import load_passwords
    from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
    from oxyfleet.cli import cli

    inventory = load_inventory(SAMPLE_INVENTORY)
    units = [inventory.units[u] for u in ("OC-JKT-00001", "OC-JKT-00002", "DOCS-PAPUA-01")]
    inv = tmp_path / "inventory.csv"
    inv.write_text(write_inventory(units[:2]))
    out = tmp_path / "creds"
    first = CliRunner().invoke(cli, ["devices", "credentials", "--file", str(inv), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = load_passwords(out / "device-passwords.csv")
    inv.write_text(write_inventory(units))  # a plant is added: only it gets a new password
    second = CliRunner().invoke(cli, ["devices", "credentials", "--file", str(inv), "--out", str(out)])
    assert "(1 new passwords, 2 kept)" in second.output
    passwords = load_passwords(out / "device-passwords.csv")
    assert {u: passwords[u] for u in before} == before and len(passwords) == 3
    assert (out / "device-passwords.csv").stat().st_mode & 0o077 == 0
    for p in passwords.values():
        assert p not in (out / "passwd").read_text() and p not in second.output

    subprocess.run(
        ["mosquitto_passwd", "-b", str(out / "passwd"), "oxyfleet-ingest", "ingest-pw"], check=True
    )
    with (out / "acl").open("a") as f:
        f.write("\nuser oxyfleet-ingest\ntopic read oxygen/#\n")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {out / 'passwd'}\n"
        f"acl_file {out / 'acl'}\nuser root\nlog_dest stderr\n"
    )
    mosquitto(conf, port)
    ingest, rc = connect(port, "oxyfleet-ingest", "ingest-pw")
    assert rc == 0
    received: list[str] = []
    subscribed = threading.Event()
    ingest.on_subscribe = lambda *_a: subscribed.set()
    ingest.on_message = lambda _c, _u, m: received.append(m.topic)
    ingest.subscribe("oxygen/#", qos=1)
    assert subscribed.wait(5)
    plant, rc = connect(port, "DOCS-PAPUA-01", passwords["DOCS-PAPUA-01"])
    assert rc == 0
    plant.publish("oxygen/docs/DOCS-PAPUA-01/telemetry", b"{}", qos=1).wait_for_publish(5)
    plant.publish("oxygen/concentrator/OC-JKT-00001/telemetry", b"{}", qos=1).wait_for_publish(5)
    plant.publish("oxygen/docs/DOCS-PAPUA-01/status", b"online", qos=1).wait_for_publish(5)
    refused, wrong = connect(port, "OC-JKT-00001", passwords["OC-JKT-00002"])
    assert wrong in (134, 135)
    refused.loop_stop()
    time.sleep(1.0)
    assert sorted(received) == ["oxygen/docs/DOCS-PAPUA-01/status", "oxygen/docs/DOCS-PAPUA-01/telemetry"]
    for client in (ingest, plant):
        client.disconnect()
        client.loop_stop()
