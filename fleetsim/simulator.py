"""The fleet simulator: realistic readings, scheduled faults, malformed messages, and the ground truth.

Every unit publishes at its model's reporting interval. Faults (see :mod:`fleetsim.faults`) are scheduled
from ``--seed``, so a run is reproducible, and written to a ground-truth file (JSON lines) before the
first reading: ``{"type": "fault", ...}`` per episode, ``{"type": "malformed", ...}`` per deliberately
bad message, and a closing ``{"type": "summary", ...}`` with what was published, so tests can check
detection, storage and uptime exactly.

Time: simulated time runs ``speed`` times faster than the wall clock and *ends at the wall clock's now*,
so accelerated runs produce past timestamps that the ingester accepts (inside its backfill window) and
never future ones.

Connections: the simulator publishes for all units over one MQTT connection, so the devices' MQTT
wills are emulated: ``offline`` is published on a unit's retained status topic when its link is lost,
``online`` when it returns. Publishing QoS 1 with far more messages outstanding than the broker's
in-flight window becomes quadratic in paho, so outstanding publishes are capped.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.payload import MAX_PAYLOAD_BYTES, MAX_READINGS
from devices.spec import Channel, topic_for
from fleetsim.faults import (
    GENERIC_KINDS,
    Fault,
    FaultKind,
    UnitState,
    apply_faults,
    healthy_reading,
    plan_faults,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from devices.catalog import ModelSpec
    from devices.inventory import Inventory

__all__ = [
    "MALFORMED",
    "FleetPublisher",
    "Publisher",
    "SimSummary",
    "Simulator",
    "generate_units",
    "units_from_inventory",
]

_MAX_OUTSTANDING: Final = 500
_MAX_BACKFILL_MS: Final = 7 * 24 * 3600 * 1000
# Headroom under the 64 KiB payload limit for batch uploads.
_BATCH_BYTES: Final = MAX_PAYLOAD_BYTES - 4096


def _truncated(reading: dict[str, Any]) -> bytes:
    return json.dumps(reading).encode()[:-7]


def _impossible(reading: dict[str, Any]) -> bytes:
    return json.dumps({**reading, "purity_pct": 140.0}).encode()


def _seconds(reading: dict[str, Any]) -> bytes:
    return json.dumps({**reading, "ts": reading["ts"] // 1000}).encode()


def _stringly(reading: dict[str, Any]) -> bytes:
    return json.dumps({**reading, "flow_lpm": str(reading.get("flow_lpm", 5.0))}).encode()


# The mistakes real firmware makes, with the reason code the ingester must store for each.
MALFORMED: Final[tuple[tuple[str, Callable[[dict[str, Any]], bytes]], ...]] = (
    ("not_json", _truncated),
    ("out_of_range", _impossible),
    ("ts_too_old", _seconds),
    ("schema_invalid", _stringly),
)


class Publisher(Protocol):
    """Where the simulator's messages go (MQTT in real runs, a list in unit tests)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish one message."""
        ...


def _new_state(unit_id: str, kind: str, spec: ModelSpec, rng: random.Random) -> UnitState:
    # Healthy purity sits well inside the medical band so only faults cross 90 %.
    return UnitState(
        unit_id, kind, spec, purity_base=rng.uniform(92.0, 95.0), run_hours=rng.uniform(100, 9000)
    )


def units_from_inventory(inventory: Inventory, n: int, rng: random.Random) -> list[UnitState]:
    """``n`` units of the inventory: every DOCS plant (there are few), then a seeded sample of the rest."""
    plants = [u for u in inventory.units.values() if u.kind == "docs"]
    others = [u for u in inventory.units.values() if u.kind != "docs"]
    picked = plants[:n] + rng.sample(others, k=min(len(others), max(0, n - len(plants))))
    return [_new_state(u.unit_id, u.kind, u.spec, rng) for u in picked]


def generate_units(
    n: int, catalog: dict[str, ModelSpec], rng: random.Random, prefix: str = "SIM"
) -> list[UnitState]:
    """``n`` units that are in no inventory (they are stored as ``unregistered``)."""
    concentrators = [s for s in catalog.values() if s.kind == "concentrator"]
    plants = [s for s in catalog.values() if s.kind == "docs"]
    units = []
    for i in range(n):
        if plants and i % 20 == 19:
            units.append(_new_state(f"{prefix}-DOCS-{i:05d}", "docs", plants[0], rng))
        else:
            units.append(_new_state(f"{prefix}-OC-{i:05d}", "concentrator", rng.choice(concentrators), rng))
    return units


@dataclass
class SimSummary:
    """What a run published: the expectations a test checks against storage."""

    messages: int = 0
    readings_published: int = 0
    status_messages: int = 0
    batches: int = 0
    rejections_expected: Counter[str] = field(default_factory=Counter)

    def record(self) -> dict[str, Any]:
        """The ground-truth summary line."""
        return {
            "type": "summary",
            "messages": self.messages,
            "readings_published": self.readings_published,
            "status_messages": self.status_messages,
            "batches": self.batches,
            "rejections_expected": dict(sorted(self.rejections_expected.items())),
        }


class Simulator:
    """Runs the fleet for ``duration_s`` of wall time at ``speed``."""

    def __init__(
        self,
        units: Sequence[UnitState],
        publisher: Publisher,
        *,
        seed: int = 1,
        duration_s: float = 60.0,
        speed: float = 1.0,
        fault_share: float = 0.15,
        fault_kinds: Iterable[FaultKind] = GENERIC_KINDS,
        malformed_share: float = 0.01,
        prefix: str = "oxygen",
        truth: TextIO | None = None,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if duration_s * speed * 1000 > _MAX_BACKFILL_MS:
            raise ValueError(
                "duration x speed exceeds the 7-day backfill window; lower --speed or --duration"
            )
        self.units = list(units)
        self.publisher = publisher
        self.rng = random.Random(seed)
        self.duration_ms = round(duration_s * 1000)
        self.speed = speed
        self.malformed_share = malformed_share
        self.prefix = prefix
        self.truth = truth
        self.now_ms = now_ms
        self.summary = SimSummary()
        wall_now = now_ms()
        self.sim_end_ms = wall_now + self.duration_ms
        self.sim_start_ms = self.sim_end_ms - round(self.duration_ms * speed)
        self.faults: list[Fault] = plan_faults(
            self.units, self.sim_start_ms, self.sim_end_ms, self.rng, share=fault_share, kinds=fault_kinds
        )
        self._offline: set[str] = set()

    def _write_truth(self, record: dict[str, Any]) -> None:
        if self.truth is not None:
            self.truth.write(json.dumps(record) + "\n")

    def _publish(
        self, unit: UnitState, payload: bytes, channel: Channel = "telemetry", *, retain: bool = False
    ) -> None:
        self.publisher.publish(
            topic_for(unit.kind, unit.unit_id, channel, self.prefix), payload, retain=retain
        )
        self.summary.messages += 1
        if channel == "status":
            self.summary.status_messages += 1

    def _upload_buffer(self, unit: UnitState) -> None:
        """Late upload after a network loss: batches within both payload limits, original timestamps."""
        pending = deque(unit.buffered)
        unit.buffered = []
        while pending:
            chunk = [pending.popleft() for _ in range(min(MAX_READINGS, len(pending)))]
            body = json.dumps({"readings": chunk}, separators=(",", ":")).encode()
            while len(body) > _BATCH_BYTES:
                half = len(chunk) // 2
                pending.extendleft(reversed(chunk[half:]))
                chunk = chunk[:half]
                body = json.dumps({"readings": chunk}, separators=(",", ":")).encode()
            self._publish(unit, body)
            self.summary.batches += 1
            self.summary.readings_published += len(chunk)

    def tick(self, unit: UnitState, t_ms: int) -> None:
        """What ``unit`` does at simulated time ``t_ms``."""
        active = {f.kind for f in unit.faults if f.active(t_ms)}
        if FaultKind.SILENT in active:
            unit.seq += 1  # the device still counts; the gap in seq is the evidence
            return
        reading = apply_faults(healthy_reading(unit, t_ms, self.rng, unit.spec.report_interval_s), unit, t_ms)
        if FaultKind.NETWORK_LOSS in active:
            if unit.unit_id not in self._offline:
                self._offline.add(unit.unit_id)
                self._publish(unit, b"offline", "status", retain=True)  # the broker would send the will
            unit.buffered.append(reading)
            return
        if unit.unit_id in self._offline:
            self._offline.discard(unit.unit_id)
            self._publish(unit, b"online", "status", retain=True)
            self._upload_buffer(unit)
        if FaultKind.SENSOR_GLITCH in active:
            self._publish(unit, json.dumps(reading).encode())
            self.summary.rejections_expected["out_of_range"] += 1
            return
        if self.rng.random() < self.malformed_share:
            reason, make = self.rng.choice(MALFORMED)
            self._publish(unit, make(reading))
            self.summary.rejections_expected[reason] += 1
            self._write_truth({"type": "malformed", "unit_id": unit.unit_id, "at_ms": t_ms, "reason": reason})
            return
        self._publish(unit, json.dumps(reading).encode())
        self.summary.readings_published += 1

    def run(self, stop: threading.Event | None = None, *, realtime: bool = True) -> SimSummary:
        """Publish until the simulated window ends (or ``stop``); write the ground truth; return the summary."""
        stop = stop or threading.Event()
        self._write_truth(
            {
                "type": "run",
                "sim_start_ms": self.sim_start_ms,
                "sim_end_ms": self.sim_end_ms,
                "speed": self.speed,
                "units": len(self.units),
                "prefix": self.prefix,
            }
        )
        for fault in self.faults:
            self._write_truth(fault.record())
        heap: list[tuple[int, int]] = []
        for i, unit in enumerate(self.units):
            self._publish(unit, b"online", "status", retain=True)
            interval_ms = round(unit.spec.report_interval_s * 1000)
            heapq.heappush(heap, (self.sim_start_ms + self.rng.randrange(interval_ms), i))
        wall0 = time.monotonic()
        while heap and not stop.is_set():
            t_ms, i = heapq.heappop(heap)
            if t_ms >= self.sim_end_ms:
                continue
            if realtime:
                due = wall0 + (t_ms - self.sim_start_ms) / 1000 / self.speed
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            unit = self.units[i]
            self.tick(unit, t_ms)
            heapq.heappush(heap, (t_ms + round(unit.spec.report_interval_s * 1000), i))
        for unit in self.units:  # links that were still down come back at the end: nothing is left unsent
            if unit.buffered:
                self._offline.discard(unit.unit_id)
                self._publish(unit, b"online", "status", retain=True)
                self._upload_buffer(unit)
        self._write_truth(self.summary.record())
        return self.summary


class FleetPublisher:
    """MQTT publisher for the simulator and the demo: QoS, TLS and credentials as a device would use."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        client_id: str = "",
    ) -> None:
        self.qos = qos
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=ca_file)
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

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout
        while self._outstanding:
            self._outstanding.popleft().wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        """Flush and disconnect."""
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()
