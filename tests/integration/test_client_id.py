"""MQTT client ids: a twin ingester is named as such in the log, and the demo leaves no session behind.

Real Mosquitto (``scripts/services start``), every ingester in its own ``oxyfleet`` process, as an
operator who copied one ingester's environment to a second machine would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.conftest import INFLUX_URL, MQTT_HOST, MQTT_PORT

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("services")


def _env(tmp_path: Path, unique: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    env.update(
        OXYFLEET_MQTT__HOST=MQTT_HOST,
        OXYFLEET_MQTT__PORT=str(MQTT_PORT),
        OXYFLEET_MQTT__TOPIC_PREFIX=f"t{unique}/oxygen",
        OXYFLEET_MQTT__RECONNECT_MIN_S="1",
        OXYFLEET_MQTT__RECONNECT_MAX_S="1",
        OXYFLEET_INFLUX__URL=INFLUX_URL,
        OXYFLEET_INFLUX__DATABASE=f"oxytest_{unique}",
        OXYFLEET_METRICS_PORT="0",
        OXYFLEET_LOG_FORMAT="json",
        OXYFLEET_SPOOL__ENABLED="false",
        **extra,
    )
    return env


def _session_present(client_id: str) -> bool:
    """Whether the broker holds a session for ``client_id`` (asked without leaving one behind)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    present: list[bool] = []
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, _r: object, _p: object) -> None:
        present.append(bool(flags.session_present))
        done.set()

    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(MQTT_HOST, MQTT_PORT, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
        return present[0]
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_ingesters_with_one_client_id_are_named_in_the_log(
    tmp_path: Path, unique: str, protocol: str
) -> None:
    client_id = f"oxytest-twin-{unique}"
    env = _env(tmp_path, unique, OXYFLEET_MQTT__CLIENT_ID=client_id, OXYFLEET_MQTT__PROTOCOL=protocol)
    procs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "oxyfleet", "run", "--duration", "14"],
                env=env,
                cwd=tmp_path / str(i),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        time.sleep(1.5)
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    events = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("{")]
    conflicts = [e for e in events if e.get("event") == "ingest.mqtt_client_id_conflict"]
    assert conflicts, "\n".join(outputs)[-3000:]
    assert all(f"OXYFLEET_MQTT__CLIENT_ID={client_id}" in e["hint"] for e in conflicts)
    # Mosquitto 2.0.11 closes the older connection without DISCONNECT 142 ("Session taken over") even on
    # MQTT 5, so here the repeated quick drops give it away; 142 itself is covered in tests/unit.
    assert any("disconnects in a row" in e["reason"] for e in conflicts)
    _session_present(client_id)  # and forget it: connecting with expiry 0 ends the stored session


def test_a_single_ingester_reports_no_conflict(tmp_path: Path, unique: str) -> None:
    env = _env(tmp_path, unique, OXYFLEET_MQTT__CLIENT_ID=f"oxytest-single-{unique}")
    proc = subprocess.run(
        [sys.executable, "-m", "oxyfleet", "run", "--duration", "4"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ingest.subscribed" in proc.stderr
    assert "mqtt_client_id_conflict" not in proc.stderr
    _session_present(f"oxytest-single-{unique}")


def test_demo_leaves_no_session_on_the_broker(tmp_path: Path, unique: str) -> None:
    client_id = f"oxytest-demo-{unique}"
    env = _env(tmp_path, unique, OXYFLEET_MQTT__CLIENT_ID=client_id)
    proc = subprocess.run(
        [sys.executable, "-m", "oxyfleet", "demo", "--duration", "8", "--units", "3", "--refresh", "4"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "oxyfleet demo:" in proc.stdout, proc.stdout + proc.stderr
    assert not _session_present(f"{client_id}-demo")
