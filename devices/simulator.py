"""A small fleet publisher: realistic readings for the demo and tests (the full simulator grows from here).

Each simulated unit publishes what real firmware would: flow near its setpoint, purity in the medical
band (one unit per ten has worn sieve beds and delivers ~78 %), outlet pressure, temperature, run hours.
A configurable share of messages is deliberately malformed so the demo shows rejections too.

Publishing QoS 1 with far more messages outstanding than the broker's in-flight window becomes quadratic
in paho, so outstanding publishes are capped.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.spec import topic_for

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterable

__all__ = ["FleetPublisher", "SimUnit", "generate_units", "make_reading", "malformed_payloads"]

_MAX_OUTSTANDING: Final = 500


@dataclass(slots=True)
class SimUnit:
    """One simulated unit and its slowly varying state."""

    unit_id: str
    kind: str
    setpoint_lpm: float
    purity_base: float
    run_hours: float
    seq: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def generate_units(n: int, seed: int = 1, prefix: str = "sim") -> list[SimUnit]:
    """``n`` units: mostly 5 and 10 L/min concentrators, one DOCS plant in twenty, one worn unit in ten."""
    rng = random.Random(seed)
    units = []
    for i in range(n):
        if i % 20 == 19:
            units.append(
                SimUnit(
                    f"{prefix}-docs-{i:05d}", "docs", 500.0, rng.uniform(92.5, 95.0), rng.uniform(100, 8000)
                )
            )
            continue
        setpoint = 5.0 if rng.random() < 0.7 else 10.0
        worn = i % 10 == 3
        purity = rng.uniform(76.0, 80.0) if worn else rng.uniform(91.5, 95.5)
        units.append(
            SimUnit(f"{prefix}-oc-{i:05d}", "concentrator", setpoint, purity, rng.uniform(10, 20000))
        )
    return units


def make_reading(unit: SimUnit, ts_ms: int, rng: random.Random) -> dict[str, Any]:
    """One plausible reading for ``unit`` at ``ts_ms`` (advances its seq and run hours)."""
    unit.seq += 1
    unit.run_hours += 1 / 360
    reading: dict[str, Any] = {
        "ts": ts_ms,
        "seq": unit.seq,
        "purity_pct": round(unit.purity_base + rng.gauss(0, 0.3), 2),
        "flow_lpm": round(unit.setpoint_lpm * rng.uniform(0.96, 1.02), 2),
        "setpoint_lpm": unit.setpoint_lpm,
        "temp_c": round(rng.uniform(30, 42), 1),
        "run_hours": round(unit.run_hours, 2),
        "power": "mains",
        "running": True,
        "alarms": ["LOW_PURITY"] if unit.purity_base < 82 else [],
    }
    if unit.kind == "docs":
        reading.update(
            {
                "outlet_kpa": round(rng.uniform(380, 420), 1),
                "product_flow_lpm": round(unit.setpoint_lpm * rng.uniform(1.0, 1.1), 1),
                "tank_kpa": round(rng.uniform(450, 520), 1),
                "feed_kpa": round(rng.uniform(650, 750), 1),
                "dew_point_c": round(rng.uniform(-45, -38), 1),
                "compressor_temp_c": round(rng.uniform(70, 90), 1),
            }
        )
    else:
        reading["outlet_kpa"] = round(rng.uniform(45, 70), 1)
    return reading


def malformed_payloads(ts_ms: int) -> list[bytes]:
    """The mistakes real firmware makes, one of each (see the rejection reasons)."""
    return [
        b'{"ts": ' + str(ts_ms).encode() + b', "purity_pct": 93.0',  # truncated JSON
        json.dumps({"ts": ts_ms, "purity_pct": 140.0}).encode(),  # impossible value
        json.dumps({"ts": ts_ms // 1000, "purity_pct": 93.0}).encode(),  # epoch seconds instead of ms
        json.dumps({"ts": ts_ms, "flow_lpm": "5"}).encode(),  # string where a number belongs
    ]


class FleetPublisher:
    """Publishes readings for a set of units at a fixed interval until stopped."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        prefix: str = "oxygen",
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
    ) -> None:
        self.prefix = prefix
        self.qos = qos
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self._outstanding: deque[mqtt.MQTTMessageInfo] = deque()
        self.published = 0

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish, keeping at most a bounded number of QoS 1 messages in flight."""
        info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
        self._outstanding.append(info)
        while len(self._outstanding) > _MAX_OUTSTANDING:
            self._outstanding.popleft().wait_for_publish(timeout=30)
        self.published += 1

    def publish_readings(self, unit: SimUnit, readings: Iterable[dict[str, Any]]) -> None:
        """Publish one message per reading on the unit's telemetry topic."""
        topic = topic_for(unit.kind, unit.unit_id, prefix=self.prefix)
        for reading in readings:
            self.publish(topic, json.dumps(reading).encode())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout
        while self._outstanding:
            self._outstanding.popleft().wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))

    def run(
        self,
        units: list[SimUnit],
        interval_s: float,
        stop: threading.Event,
        *,
        seed: int = 1,
        malformed_share: float = 0.02,
    ) -> None:
        """Every ``interval_s`` each unit reports once; a share of messages is malformed on purpose."""
        rng = random.Random(seed)
        for unit in units:
            self.publish(topic_for(unit.kind, unit.unit_id, "status", self.prefix), b"online", retain=True)
        while not stop.is_set():
            started = time.monotonic()
            now_ms = time.time_ns() // 1_000_000
            for unit in units:
                topic = topic_for(unit.kind, unit.unit_id, prefix=self.prefix)
                if rng.random() < malformed_share:
                    self.publish(topic, rng.choice(malformed_payloads(now_ms)))
                else:
                    self.publish(topic, json.dumps(make_reading(unit, now_ms, rng)).encode())
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))

    def close(self) -> None:
        """Flush and disconnect."""
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()
