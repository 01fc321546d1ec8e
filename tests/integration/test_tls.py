"""TLS on the real Mosquitto: a listener with a certificate made in the test, used by ingester and simulator.

The certificate authority and the broker's certificate (for 127.0.0.1 and localhost) are generated here
with ``cryptography``; Mosquitto serves them on a TLS-only listener. The ingester (``oxyfleet run`` in a
subprocess) and both publishers (the simulator's paho client and the load mode's raw socket) connect with
the CA from ``OXYFLEET_MQTT__CA_FILE``, and what they publish must be stored. A client that does not trust
the CA, and a client speaking plain MQTT to the TLS port, must both be refused.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from store.reader import InfluxQL
from tests.integration.conftest import run_oxyfleet

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
INFLUX = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"


@pytest.fixture
def tls_broker(
    tmp_path: Path,
    mosquitto: Callable[[Path, int], object],
    free_port: Callable[[], int],
    make_ca_and_server: Callable[..., tuple[Path, Path, Path]],
) -> tuple[int, Path]:
    """Mosquitto with one listener, TLS only, on a free loopback port: (port, CA file)."""
    ca, cert, key = make_ca_and_server(tmp_path / "pki")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        "tls_version tlsv1.2\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "log_dest stderr\n"
        # The pytest temporary directory is private to root; keep Mosquitto able to read the key.
        "user root\n"
    )
    mosquitto(conf, port)
    return port, ca


def test_ingester_and_simulator_over_tls_store_everything(
    tls_broker: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_broker
    tag = uuid.uuid4().hex[:8]
    db = f"tls_{tag}"
    reader = InfluxQL(INFLUX, db)
    reader.execute(f'CREATE DATABASE "{db}"')
    base = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    mqtt_env = {
        **base,
        "OXYFLEET_MQTT__HOST": "127.0.0.1",
        "OXYFLEET_MQTT__PORT": str(port),
        "OXYFLEET_MQTT__TLS": "true",
        "OXYFLEET_MQTT__CA_FILE": str(ca),
        "OXYFLEET_MQTT__TOPIC_PREFIX": f"tls{tag}/oxygen",
        "OXYFLEET_INFLUX__URL": INFLUX,
        "OXYFLEET_INFLUX__DATABASE": db,
    }
    ingester_env = {
        **mqtt_env,
        "OXYFLEET_MQTT__CLIENT_ID": f"tls-ingest-{tag}",
        "OXYFLEET_SPOOL__DIR": str(tmp_path / "spool"),
        "OXYFLEET_METRICS_PORT": "0",
        "OXYFLEET_BUFFER__BATCH_AGE_S": "0.2",
        "OXYFLEET_LOG_FORMAT": "json",
    }
    check = run_oxyfleet("check", env=ingester_env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"broker   mqtts://127.0.0.1:{port}: ok" in check.stdout

    log = (tmp_path / "ingester.log").open("wb")
    ingester = subprocess.Popen(
        [sys.executable, "-m", "oxyfleet", "run"], env=ingester_env, cwd=ROOT, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 20
        while b"ingest.subscribed" not in (tmp_path / "ingester.log").read_bytes():
            assert time.monotonic() < deadline, (tmp_path / "ingester.log").read_text()
            assert ingester.poll() is None, (tmp_path / "ingester.log").read_text()
            time.sleep(0.1)
        # The load mode's raw socket over TLS...
        load = run_oxyfleet(
            "simulate",
            "--load",
            "--messages",
            "2000",
            "--units",
            "20",
            "--unit-prefix",
            "TLSLOAD",
            env=mqtt_env,
        )
        assert load.returncode == 0, load.stdout + load.stderr
        # ...and the simulator's paho client over TLS, as a device would connect.
        truth = tmp_path / "truth.jsonl"
        sim = run_oxyfleet(
            "simulate",
            "--units=5",
            "--duration=3s",
            "--speed=10",
            "--faults=none",
            "--malformed-share=0",
            f"--ground-truth={truth}",
            env=mqtt_env,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        published = json.loads(truth.read_text().splitlines()[-1])["readings_published"]
        assert published > 0
        expected = 2000 + published
        deadline = time.monotonic() + 30
        stored = 0
        while time.monotonic() < deadline:
            rows = reader.rows("SELECT count(purity_pct) FROM telemetry")
            stored = int(rows[0]["count"]) if rows else 0
            if stored >= expected:
                break
            time.sleep(0.3)
        assert stored == expected
        assert reader.rows("SELECT count(payload_bytes) FROM rejected") == []
    finally:
        ingester.terminate()
        ingester.wait(20)
        log.close()
        reader.execute(f'DROP DATABASE "{db}"')
        reader.close()


def test_a_client_that_does_not_trust_the_ca_or_skips_tls_is_refused(
    tls_broker: tuple[int, Path], tmp_path: Path, make_ca_and_server: Callable[..., tuple[Path, Path, Path]]
) -> None:
    port, _ca = tls_broker
    other_ca, _, _ = make_ca_and_server(tmp_path / "other", "some other CA")
    base = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env = {**base, "OXYFLEET_MQTT__PORT": str(port), "OXYFLEET_MQTT__TLS": "true"}
    env["OXYFLEET_MQTT__CA_FILE"] = str(other_ca)
    env["OXYFLEET_INFLUX__URL"] = INFLUX
    wrong_ca = run_oxyfleet("check", env=env)
    assert wrong_ca.returncode != 0
    assert "certificate" in wrong_ca.stdout.lower(), wrong_ca.stdout
    # The same through Python's TLS directly: verification fails on the handshake.
    context = ssl.create_default_context(cafile=str(other_ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    # Plain MQTT to the TLS listener gets no CONNACK.
    plain = {**base, "OXYFLEET_MQTT__PORT": str(port), "OXYFLEET_INFLUX__URL": INFLUX}
    result = run_oxyfleet("check", env=plain)
    assert result.returncode != 0
    assert f"broker   mqtt://127.0.0.1:{port}: FAILED" in result.stdout
