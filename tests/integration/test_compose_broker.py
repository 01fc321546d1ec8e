"""The docker-compose broker (docker/mosquitto/*) run on the real Mosquitto of this machine.

Docker cannot run here, so the test runs the compose broker's own entrypoint script on the host, with the
container's directories laid out in a temporary directory (the script takes them from
``OXYFLEET_SECRETS_DIR`` and ``OXYFLEET_MOSQUITTO_DIR``): the Docker secrets of the service users, the
device credentials written by ``oxyfleet devices credentials``, a TLS certificate from a test CA, and
docker/mosquitto/mosquitto.conf with only its ports and paths changed. It then checks what the compose
configuration promises: a device logs in over TLS with its own password and publishes its own topics but
not another unit's (the real ingester never stores it), anonymous clients and plain MQTT on the TLS port
are refused, the ingester and the health engine log in as themselves, and the compose healthcheck
command works.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from devices.credentials import load_passwords
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from oxyfleet.cli import cli
from store.schema import Measurement

if TYPE_CHECKING:
    from collections.abc import Callable

    from store.reader import InfluxQL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICE_PASSWORDS = {"ingest": "ingest-pw", "health": "health-pw", "simulator": "sim-pw"}
UNITS = ("OC-JKT-00001", "OC-JKT-00002", "DOCS-PAPUA-01")


@dataclass
class ComposeBroker:
    plain: int
    tls: int
    ca: Path
    root: Path  # the container's /mosquitto
    devices: dict[str, str]  # unit id -> password, from device-passwords.csv


def lay_out(
    tmp_path: Path, make_ca_and_server: Callable[..., tuple[Path, Path, Path]]
) -> tuple[Path, Path, Path]:
    """The container's /run/secrets and /mosquitto (config, certs, credentials) in ``tmp_path``."""
    secrets, root = tmp_path / "secrets", tmp_path / "mosquitto"
    for sub in ("config", "data", "credentials", "certs"):
        (root / sub).mkdir(parents=True)
    secrets.mkdir()
    for user, password in SERVICE_PASSWORDS.items():
        (secrets / f"mqtt_{user}_password").write_text(password + "\n")
    ca, cert, key = make_ca_and_server(tmp_path / "pki")
    shutil.copy(cert, root / "certs" / "server.crt")
    shutil.copy(key, root / "certs" / "server.key")
    shutil.copy(ROOT / "docker" / "mosquitto" / "acl", root / "config" / "acl")
    return secrets, root, ca


def entrypoint(secrets: Path, root: Path) -> tuple[list[str], dict[str, str]]:
    return (
        ["/bin/sh", str(ROOT / "docker" / "mosquitto" / "entrypoint.sh")],
        {"OXYFLEET_SECRETS_DIR": str(secrets), "OXYFLEET_MOSQUITTO_DIR": str(root)},
    )


@pytest.fixture
def start_compose_broker(
    tmp_path: Path,
    mosquitto: Callable[..., subprocess.Popen[bytes]],
    free_port: Callable[[], int],
    make_ca_and_server: Callable[..., tuple[Path, Path, Path]],
) -> Callable[..., ComposeBroker]:
    """Lay out the container's directories, run the entrypoint; ``certs`` replaces the test CA's files."""

    def start(certs: tuple[Path, Path, Path] | None = None) -> ComposeBroker:
        secrets, root, ca = lay_out(tmp_path, make_ca_and_server)
        if certs is not None:
            ca = certs[0]
            shutil.copy(certs[1], root / "certs" / "server.crt")
            shutil.copy(certs[2], root / "certs" / "server.key")
        inventory = load_inventory(SAMPLE_INVENTORY)
        fleet = tmp_path / "inventory.csv"
        fleet.write_text(write_inventory([inventory.units[u] for u in UNITS]))
        made = CliRunner().invoke(
            cli, ["devices", "credentials", "--file", str(fleet), "--out", str(root / "credentials")]
        )
        assert made.exit_code == 0, made.output
        plain, tls = free_port(), free_port()
        conf = (ROOT / "docker" / "mosquitto" / "mosquitto.conf").read_text()
        assert "listener 1883\n" in conf and "listener 8883\n" in conf
        conf = conf.replace("listener 1883\n", f"listener {plain} 127.0.0.1\n")
        conf = conf.replace("listener 8883\n", f"listener {tls} 127.0.0.1\n")
        conf = conf.replace("/mosquitto/", f"{root}/")
        # Here the broker runs as root, which Mosquitto would leave for a `mosquitto` user that cannot
        # read the temporary directory; in the container it runs as that user from the start.
        (root / "config" / "mosquitto.conf").write_text(conf + "user root\n")
        command, env = entrypoint(secrets, root)
        proc = mosquitto(root / "config" / "mosquitto.conf", plain, command, env)
        stderr = (root / "config" / "mosquitto.stderr").read_text
        assert proc.poll() is None, stderr()
        assert "service users and 3 device users loaded" in stderr()
        devices = load_passwords(root / "credentials" / "device-passwords.csv")
        return ComposeBroker(plain, tls, ca, root, devices)

    return start


@pytest.fixture
def compose_broker(start_compose_broker: Callable[..., ComposeBroker]) -> ComposeBroker:
    return start_compose_broker()


def connect(
    port: int, user: str | None, password: str | None = None, ca: Path | None = None
) -> tuple[mqtt.Client, int]:
    """Connect (over TLS when ``ca`` is given); returns the client and the CONNACK reason code."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    if user:
        client.username_pw_set(user, password)
    result: dict[str, int] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        result["rc"] = reason.value
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(5), "no CONNACK"
    return client, result["rc"]


def close(*clients: mqtt.Client) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


def subscribe_all(client: mqtt.Client, topic: str = "oxygen/#") -> list[str]:
    """Subscribe ``client`` to ``topic``; returns the list the received topics go to."""
    received: list[str] = []
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, m: received.append(m.topic)
    client.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    return received


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_service_users_and_the_simulator_on_the_plain_listener(compose_broker: ComposeBroker) -> None:
    port = compose_broker.plain
    anonymous, rc = connect(port, None)
    assert rc == 135  # not authorized
    anonymous.loop_stop()
    ingest, rc = connect(port, "oxyfleet-ingest", "ingest-pw")
    assert rc == 0
    received = subscribe_all(ingest)
    simulator, rc = connect(port, "oxyfleet-simulator", "sim-pw")
    assert rc == 0
    publish(simulator, "oxygen/concentrator/SIM-9/telemetry", b"{}")
    publish(ingest, "oxygen/concentrator/OC-3/telemetry", b"{}")  # read-only: dropped
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not received:
        time.sleep(0.05)
    time.sleep(0.5)
    assert received == ["oxygen/concentrator/SIM-9/telemetry"]
    refused, wrong = connect(port, "oxyfleet-ingest", "wrong")
    assert wrong in (134, 135)  # bad user name or password / not authorized (Mosquitto 2.0 says 135)
    refused.loop_stop()
    close(ingest, simulator)


def test_a_device_over_tls_publishes_only_as_itself_and_the_ingester_stores_only_that(
    compose_broker: ComposeBroker,
    start_ingester: Callable[..., Any],
    influx: InfluxQL,
    unique: str,
    wait_for: Callable[..., Any],
) -> None:
    broker = compose_broker
    start_ingester(
        client_id=f"itest-{unique}",
        mqtt={
            "port": broker.plain,
            "topic_prefix": "oxygen",
            "username": "oxyfleet-ingest",
            "password": SERVICE_PASSWORDS["ingest"],
        },
    )
    me, other = "OC-JKT-00001", "OC-JKT-00002"
    device, rc = connect(broker.tls, me, broker.devices[me], ca=broker.ca)
    assert rc == 0
    now = time.time_ns() // 1_000_000
    # The spoofed reading goes first: once the device's own one is stored, the other would have been too.
    publish(
        device, f"oxygen/concentrator/{other}/telemetry", json.dumps({"ts": now, "purity_pct": 50.0}).encode()
    )
    publish(device, f"oxygen/concentrator/{me}/status", b"online")
    publish(
        device, f"oxygen/concentrator/{me}/telemetry", json.dumps({"ts": now, "purity_pct": 93.5}).encode()
    )
    query = f"SELECT count(purity_pct) FROM {Measurement.TELEMETRY} GROUP BY unit_id"
    rows = wait_for(lambda: influx.rows(query))
    time.sleep(1.0)  # a late spoofed point would show now
    assert [(r.get("unit_id"), r["count"]) for r in influx.rows(query)] == [(me, 1)], rows
    # Another unit's password does not open this unit's account.
    refused, rc = connect(broker.tls, me, broker.devices[other], ca=broker.ca)
    assert rc in (134, 135)
    refused.loop_stop()
    close(device)


def test_anonymous_and_plain_mqtt_on_the_tls_port_are_refused(compose_broker: ComposeBroker) -> None:
    anonymous, rc = connect(compose_broker.tls, None, ca=compose_broker.ca)
    assert rc == 135
    anonymous.loop_stop()
    # Plain MQTT to the TLS port: the broker expects a TLS ClientHello, so no CONNACK ever comes back.
    connect_packet = b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc"
    with socket.create_connection(("127.0.0.1", compose_broker.tls), timeout=3) as sock:
        sock.sendall(connect_packet)
        try:
            answer = sock.recv(16)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"\x20"), answer  # 0x20 = CONNACK
    # And a TLS client that does not trust the broker's CA gives up before sending its password.
    with (
        socket.create_connection(("127.0.0.1", compose_broker.tls), timeout=3) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(sock, server_hostname="localhost").close()
    with socket.create_connection(("127.0.0.1", compose_broker.tls), timeout=3) as sock:
        trusted = ssl.create_default_context(cafile=str(compose_broker.ca))
        with trusted.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_ingester_and_the_health_engine_log_in_as_themselves_over_tls(
    compose_broker: ComposeBroker,
) -> None:
    broker = compose_broker
    ingest, rc = connect(broker.tls, "oxyfleet-ingest", SERVICE_PASSWORDS["ingest"], ca=broker.ca)
    assert rc == 0
    health, rc = connect(broker.tls, "oxyfleet-health", SERVICE_PASSWORDS["health"], ca=broker.ca)
    assert rc == 0
    alerts = subscribe_all(health, "oxyfleet/alerts/#")
    publish(health, "oxyfleet/alerts/RSUD-X/OC-JKT-00001", b"{}")
    publish(ingest, "oxyfleet/alerts/RSUD-X/OC-JKT-00002", b"{}")  # the ingester may not raise alerts
    wait_deadline = time.monotonic() + 3
    while time.monotonic() < wait_deadline and not alerts:
        time.sleep(0.05)
    time.sleep(0.5)
    assert alerts == ["oxyfleet/alerts/RSUD-X/OC-JKT-00001"]
    for user in ("oxyfleet-health", "OC-JKT-00001"):  # nobody logs in as another with a service password
        refused, rc = connect(broker.tls, user, SERVICE_PASSWORDS["ingest"], ca=broker.ca)
        assert rc in (134, 135), user
        refused.loop_stop()
    close(ingest, health)


def test_the_compose_healthcheck_command_succeeds_against_the_broker(compose_broker: ComposeBroker) -> None:
    test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mosquitto"]["healthcheck"][
        "test"
    ]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$").replace("-p 1883", f"-p {compose_broker.plain}")
    command = command.replace("/mosquitto/", f"{compose_broker.root}/")
    assert subprocess.run(["/bin/sh", "-c", command], timeout=15, check=False).returncode == 0
    wrong = command.replace("healthcheck-password", "no-such-file")
    assert (
        subprocess.run(["/bin/sh", "-c", wrong], timeout=15, check=False, capture_output=True).returncode != 0
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_certificate", "the TLS listener needs a certificate"),
        ("no_secret", "missing secret"),
        ("service_user_in_devices", "defines a service user"),
    ],
)
def test_the_entrypoint_refuses_to_start_a_broken_broker(
    tmp_path: Path, make_ca_and_server: Callable[..., tuple[Path, Path, Path]], damage: str, message: str
) -> None:
    secrets, root, _ca = lay_out(tmp_path, make_ca_and_server)
    if damage == "no_certificate":
        (root / "certs" / "server.key").unlink()
    elif damage == "no_secret":
        (secrets / "mqtt_health_password").unlink()
    else:
        (root / "credentials" / "passwd").write_text("oxyfleet-ingest:$7$101$x$y\n")
        (root / "credentials" / "acl").write_text("")
    command, env = entrypoint(secrets, root)
    done = subprocess.run(
        command,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr


def test_the_documented_openssl_test_ca_serves_the_tls_listener(
    tmp_path: Path, start_compose_broker: Callable[..., ComposeBroker]
) -> None:
    """The test-CA commands of docs/operations.md, run as written, give a certificate devices can trust."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    script = docs.split("<!-- test-ca -->\n```sh\n", 1)[1].split("```", 1)[0]
    workdir = tmp_path / "operator"
    workdir.mkdir()
    done = subprocess.run(
        ["/bin/sh", "-ec", script], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    certs = workdir / "secrets" / "certs"
    assert not (certs / "server.csr").exists()
    broker = start_compose_broker((certs / "ca.crt", certs / "server.crt", certs / "server.key"))
    me = "OC-JKT-00001"
    device, rc = connect(broker.tls, me, broker.devices[me], ca=broker.ca)
    assert rc == 0  # paho verified the chain and the host name (127.0.0.1 is in the certificate)
    close(device)
