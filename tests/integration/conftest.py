"""Fixtures for tests against the real Mosquitto and InfluxDB that ``scripts/services start`` runs on loopback.

Every test gets its own topic prefix, MQTT client id and InfluxDB database (aiomqtt's ``unique_topic()``
idea), so tests never see each other's messages or points, and leave nothing behind.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from core.settings import BufferSettings, InfluxSettings, MqttSettings, Settings, SpoolSettings
from health.alerts import Alerter
from ingest.service import Ingester, build_ingester
from store.reader import InfluxQL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MQTT_HOST = os.environ.get("OXYFLEET_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("OXYFLEET_SERVICES_MQTT_PORT", "1883"))
INFLUX_URL = os.environ.get(
    "OXYFLEET_TEST_INFLUX_URL", f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
)


def _mqtt_up() -> bool:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1):
            return True
    except OSError:
        return False


def _influx_up() -> bool:
    try:
        with urllib.request.urlopen(f"{INFLUX_URL}/ping", timeout=2) as resp:
            return bool(resp.status == 204)
    except OSError:
        return False


@pytest.fixture(scope="session")
def services(request: pytest.FixtureRequest) -> None:
    missing = [name for name, up in (("Mosquitto", _mqtt_up), ("InfluxDB", _influx_up)) if not up()]
    if missing:
        message = f"{' and '.join(missing)} not reachable ({MQTT_HOST}:{MQTT_PORT}, {INFLUX_URL}); run scripts/services start"
        if request.config.getoption("--require-services"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def influx(services: None, unique: str) -> Iterator[InfluxQL]:
    """A fresh database, dropped afterwards."""
    reader = InfluxQL(INFLUX_URL, f"oxytest_{unique}")
    reader.execute(f'CREATE DATABASE "oxytest_{unique}"')
    yield reader
    reader.execute(f'DROP DATABASE "oxytest_{unique}"')
    reader.close()


@pytest.fixture
def prefix(unique: str) -> str:
    return f"t{unique}/oxygen"


def make_settings(
    prefix: str,
    database: str,
    client_id: str,
    protocol: str | None = None,
    inventory_file: Path | None = None,
    inventory_check_s: float = 2.0,
    spool: SpoolSettings | None = None,
    mqtt: dict[str, Any] | None = None,
    **buffer: Any,
) -> Settings:
    """Test settings; without ``spool`` the spool is off (tests that want it pass their own directory).

    ``mqtt`` overrides broker settings (another broker, its port, a user name and password).
    """
    return Settings(
        spool=spool or SpoolSettings(enabled=False),
        inventory_file=inventory_file,
        inventory_check_s=inventory_check_s,
        _env_file=None,
        mqtt=MqttSettings(
            **{
                "host": MQTT_HOST,
                "port": MQTT_PORT,
                "client_id": client_id,
                "topic_prefix": prefix,
                # None: the shipped default, so the tests run what a deployment runs.
                **({} if protocol is None else {"protocol": protocol}),
                **(mqtt or {}),
            }
        ),
        influx=InfluxSettings(url=INFLUX_URL, database=database),
        buffer=BufferSettings(**{"batch_age_s": 0.2, "retry_initial_s": 0.05, **buffer}),
        instance="itest",
        metrics_port=0,
        stats_interval_s=3600,
        log_format="console",
    )


@dataclass
class RunningIngester:
    ingester: Ingester
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def shutdown(self, timeout: float = 15) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "ingester did not stop"


@pytest.fixture
def start_ingester(influx: InfluxQL, prefix: str, unique: str) -> Iterator[Callable[..., RunningIngester]]:
    """Start an in-process ingester subscribed to this test's prefix, writing to this test's database."""
    running: list[RunningIngester] = []

    def start(client_id: str | None = None, protocol: str | None = None, **options: Any) -> RunningIngester:
        settings = make_settings(prefix, influx.database, client_id or f"itest-{unique}", protocol, **options)
        ingester = build_ingester(settings, serve=False)
        stop = threading.Event()
        handle = RunningIngester(ingester, stop, threading.Thread(target=lambda: None))

        def target() -> None:
            try:
                ingester.run(stop)
            except BaseException as exc:
                handle.errors.append(exc)
                raise

        handle.thread = threading.Thread(target=target, daemon=True)
        handle.thread.start()
        assert ingester.source.subscribed.wait(10), "ingester did not subscribe"
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.stop.set()
        handle.thread.join(15)


class Publisher:
    """A device stand-in: publishes QoS 1 and waits until the broker has every message."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()

    def raw(self, topic: str, payload: bytes | str, *, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published()

    def reading(self, unit: str, payload: dict[str, Any] | bytes, *, kind: str = "concentrator") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.raw(f"{self.prefix}/{kind}/{unit}/telemetry", body)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(services: None, prefix: str) -> Iterator[Publisher]:
    pub = Publisher(prefix)
    yield pub
    pub.close()


ROOT = Path(__file__).resolve().parents[2]


def run_oxyfleet(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m oxyfleet ARGS`` as a user runs it, in its own process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "oxyfleet", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2) -> Any:
    """Poll until ``check()`` is truthy (Telegraf's Eventually); return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    assert value, f"condition not met within {timeout} s (last value {value!r})"
    return value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stored_readings(influx: InfluxQL) -> int:
    """How many readings the test's database holds (``count`` of a field every reading has)."""
    rows = influx.rows("SELECT count(seq) FROM telemetry")
    return int(rows[0]["count"]) if rows else 0


def wait_until_stored(influx: InfluxQL, readings: int, timeout: float = 60.0) -> None:
    """Wait until the ingester has stored exactly ``readings`` readings (a simulator run's published count)."""
    wait_for(lambda: stored_readings(influx) == readings, timeout=timeout)


@dataclass
class AlertCapture:
    """An alerter on the real broker and a local webhook, and what each of them received.

    ``received`` holds the MQTT alerts with their ``topic`` added; ``posts`` the webhook bodies as sent.
    """

    alerter: Alerter
    posts: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def settled(self) -> bool:
        """Every alert the alerter published has reached both the broker's subscriber and the webhook."""
        return len(self.posts) == len(self.received) == self.alerter.published


@contextmanager
def alert_capture(settings: Settings, prefix: str, backoff_s: float = 1.0) -> Iterator[AlertCapture]:
    """Capture what an :class:`Alerter` sends over MQTT (``<prefix>-alerts/#``) and to a webhook."""
    posts: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received: list[dict[str, Any]] = []
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_a: subscribed.set()
    subscriber.on_message = lambda _c, _u, m: received.append({"topic": m.topic, **json.loads(m.payload)})
    subscriber.on_connect = lambda c, *_a: c.subscribe(f"{prefix}-alerts/#", qos=1)
    subscriber.connect(settings.mqtt.host, settings.mqtt.port)
    subscriber.loop_start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:
        assert subscribed.wait(10), "the alert subscriber was not subscribed within 10 s"
        sender.connect(settings.mqtt.host, settings.mqtt.port)
        sender.loop_start()
        alerter = Alerter(
            sender,
            [f"http://127.0.0.1:{server.server_address[1]}/hook"],
            topic_prefix=f"{prefix}-alerts",
            backoff_s=backoff_s,
        )
        try:
            yield AlertCapture(alerter, posts, received)
        finally:
            alerter.close()
    finally:
        server.shutdown()
        server.server_close()
        for client in (subscriber, sender):
            client.disconnect()
            client.loop_stop()


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture(name="settings_for")
def settings_for_fixture(influx: InfluxQL, prefix: str) -> Callable[..., Settings]:
    """Settings pointing at this test's prefix and database (for subprocesses and custom setups)."""
    return lambda client_id, **options: make_settings(prefix, influx.database, client_id, **options)


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function giving a loopback port nobody listens on right now."""

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    return free_port


@pytest.fixture
def mosquitto(services: None) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a Mosquitto of the test's own (its config file, its port); all are stopped afterwards.

    ``command`` replaces ``mosquitto -c CONF`` by something that ends in exec'ing Mosquitto (the compose
    broker's entrypoint script), with ``env`` added to the environment; its stderr then goes to
    ``CONF.stderr`` so a refused start can say why.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(
        conf: Path, port: int, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        mosquitto_bin = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        path = f"{Path(mosquitto_bin).parent}:/usr/bin:/usr/sbin:{os.environ.get('PATH', '')}"
        with conf.with_suffix(".stderr").open("wb") as stderr:
            proc = subprocess.Popen(
                command or [mosquitto_bin, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=stderr if command else subprocess.DEVNULL,
                env={**os.environ, "PATH": path, **(env or {})},
            )
        started.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_server(directory: Path, common_name: str = "oxyfleet test CA") -> tuple[Path, Path, Path]:
    """A CA and a broker certificate it signed (SAN 127.0.0.1, localhost): (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("oxyfleet test broker"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_pem.chmod(0o600)
    return ca_pem, cert_pem, key_pem


@pytest.fixture(name="make_ca_and_server")
def make_ca_and_server_fixture() -> Callable[..., tuple[Path, Path, Path]]:
    """The certificate maker, for tests that run Mosquitto with a TLS listener."""
    return make_ca_and_server
