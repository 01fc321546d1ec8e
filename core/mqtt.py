"""The MQTT client every oxyfleet process builds the same way: protocol, credentials, TLS, reconnects.

The ingester (persistent session, manual acks), the health engine's alert publisher and ``oxyfleet check``
all connect with these settings; one factory keeps TLS and credential handling in one place.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

    from core.settings import MqttSettings

__all__ = ["FATAL_CONNACK", "connect_properties", "end_session", "make_client", "probe_broker"]

# CONNACK reason codes (MQTT 5 numbering; paho maps 3.1.1 return codes onto them) that retrying cannot fix.
FATAL_CONNACK: Final = {
    132: "the broker does not speak MQTT 5; set OXYFLEET_MQTT__PROTOCOL=3.1.1",
    133: "client identifier not valid",
    134: "bad user name or password",
    135: "not authorized",
    138: "banned",
    140: "bad authentication method",
}


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """A configured (not yet connected) paho client; shared by the ingester, ``check`` and the demo."""
    v5 = settings.protocol == "5"
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    # paho re-raises exceptions from callbacks in its network thread; ours catch everything, and this
    # makes sure a future mistake is logged by paho instead of killing the loop.
    client.suppress_exceptions = True
    username = settings.username
    if username is not None:
        client.username_pw_set(username, settings.password_value())
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            certfile=str(settings.cert_file) if settings.cert_file else None,
            keyfile=str(settings.key_file) if settings.key_file else None,
        )
        client.tls_insecure_set(settings.tls_insecure)
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)), max_delay=max(1, int(settings.reconnect_max_s))
    )
    return client


def connect_properties(settings: MqttSettings, *, persistent: bool) -> Properties | None:
    """MQTT 5 CONNECT properties: session expiry (persistence) and receive maximum (batching headroom)."""
    if settings.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s if persistent else 0
    props.ReceiveMaximum = settings.receive_maximum
    return props


def probe_broker(settings: MqttSettings, timeout: float = 5.0) -> str | None:
    """Connect once with a throwaway clean session; return None when fine, else what is wrong."""
    client = make_client(
        settings,
        f"{settings.client_id}-check-{time.time_ns() % 1_000_000}",
        persistent=False,
        manual_ack=False,
    )
    result: dict[str, str | None] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result["error"] = None if not reason.is_failure else f"broker refused the connection: {reason}"
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(
            settings.host,
            settings.port,
            keepalive=10,
            properties=connect_properties(settings, persistent=False),
        )
    except (OSError, ValueError) as exc:
        return f"cannot reach broker at {settings.host}:{settings.port}: {exc}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return f"no CONNACK from {settings.host}:{settings.port} within {timeout:g} s"
        return result.get("error")
    finally:
        client.disconnect()
        client.loop_stop()


def end_session(settings: MqttSettings, client_id: str, timeout: float = 5.0) -> bool:
    """Make the broker forget ``client_id``'s persistent session (and anything queued in it).

    A clean-start connection with that id replaces the stored session, and with session expiry 0
    (MQTT 5) or clean session (3.1.1) nothing is kept when it disconnects. For throwaway clients such as
    the demo's, which would otherwise leave a 7-day session (and, while no one reads it, queued
    messages) on the broker. True when the broker acknowledged.
    """
    client = make_client(settings, client_id, persistent=False, manual_ack=False)
    done = threading.Event()
    ok: list[bool] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        ok.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    try:
        if settings.protocol == "5":
            client.connect(
                settings.host,
                settings.port,
                keepalive=10,
                clean_start=True,
                properties=connect_properties(settings, persistent=False),
            )
        else:
            client.connect(settings.host, settings.port, keepalive=10)
    except (OSError, ValueError):
        return False
    client.loop_start()
    try:
        return done.wait(timeout) and all(ok)
    finally:
        client.disconnect()
        client.loop_stop()
