"""Alerts out of the health engine: an MQTT message and webhook POSTs per state change of a unit.

One alert per transition of a unit's *current* state (after the sustain window), never one per cycle:
``raise`` when a unit leaves ``in_spec``, ``clear`` when it returns, ``change`` when it moves between two
non-in-spec states (e.g. purity low -> purity critical). After a restart the engine's first cycle only
learns the current states, so nothing is re-sent; an episode in progress still gets its ``clear``.

Delivery never blocks the engine: MQTT publishing is asynchronous (QoS 1, retained per unit, so a
dashboard or a phone sees the latest alert on subscribing), and each webhook has its own worker thread
and bounded queue, retrying with exponential backoff; when a queue is full the oldest alert is dropped
and counted, because a dead webhook must not grow memory without bound.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
import urllib3

from core.timefmt import iso_ms

if TYPE_CHECKING:
    from collections.abc import Sequence

    import paho.mqtt.client as mqtt

    from devices.inventory import Unit
    from health.model import UnitStatus
    from health.rules import Condition

__all__ = ["Alerter", "alert_for", "history_alert"]

log = structlog.get_logger("health.alerts")

_QUEUE_LIMIT: Final = 10_000
_TOPIC_UNSAFE: Final = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


_HINTS: Final = {
    "purity_critical": "oxygen purity below the 82 % alarm level: check the sieve beds and filters, "
    "switch patients to another source",
    "purity_low": "oxygen purity below 90 %: check the sieve beds and intake filter",
    "low_flow": "flow below 80 % of the setpoint: check tubing, humidifier and flow meter",
    "overheating": "temperature above the model's maximum: check vents, fan and room temperature",
    "pressure_low": "outlet pressure below the model's band: check for leaks and the compressor",
    "pressure_high": "outlet pressure above the model's band: check for blocked outlets",
    "power_failure": "no mains power: check the supply; patients may need cylinders",
    "no_data": "nothing received: check power, the telemetry module and its network",
    "product_flow_low": "the plant makes less than 80 % of its rated (or demanded) oxygen: check the "
    "compressor, feed air pressure and the sieve beds' valves; plan cylinders for the wards",
    "product_pressure_low": "product pressure below the plant's band: check for pipeline leaks, "
    "the buffer tank and the compressor",
    "product_pressure_high": "product pressure above the plant's band: check the regulator and relief valves",
    "compressor_overheating": "compressor discharge above its limit: check the oil level, cooler and "
    "container ventilation before it trips",
    "dew_point_high": "feed air too wet: check the air dryer and drains; wet air ruins the sieve beds",
    "off": "switched off (standby)",
}


def _message(status: UnitStatus, before: Condition) -> str:
    unit, c = status.unit, status.condition
    where = f"{unit.unit_id} ({unit.model}) at {unit.hospital}, {unit.province}"
    if c.state == "in_spec":
        return f"{where} is back in spec (was {before.state} {before.reason})."
    return f"{where}: {_hint(c.reason)}."


def _hint(reason: str) -> str:
    return _HINTS.get(reason, f"device alarm {reason.removeprefix('alarm_').upper()}")


def history_alert(unit: Unit, condition: Condition, start_ms: int, end_ms: int, at_ms: int) -> dict[str, Any]:
    """The alert document for a fault that began and ended inside a late upload (``event: history``).

    Nobody could see it live: the unit was offline while its buffer held bad readings. A technician still
    needs to know that patients may have had bad oxygen, and when.
    """
    where = f"{unit.unit_id} ({unit.model}) at {unit.hospital}, {unit.province}"
    return {
        "event": "history",
        "unit_id": unit.unit_id,
        "hospital": unit.hospital,
        "province": unit.province,
        "model": unit.model,
        "kind": unit.kind,
        "state": condition.state,
        "reason": condition.reason,
        "severity": condition.code,
        "start": iso_ms(start_ms),
        "end": iso_ms(end_ms),
        "at": iso_ms(at_ms),
        "message": f"{where}: from {iso_ms(start_ms)} to {iso_ms(end_ms)} (uploaded late): "
        f"{_hint(condition.reason)}.",
    }


def alert_for(status: UnitStatus, before: Condition, at_ms: int) -> dict[str, Any]:
    """The alert document for one transition."""
    c = status.condition
    fine = before.state in ("in_spec", "never_connected")
    kind = "clear" if c.state == "in_spec" else "raise" if fine else "change"
    unit = status.unit
    return {
        "event": kind,
        "unit_id": unit.unit_id,
        "hospital": unit.hospital,
        "province": unit.province,
        "model": unit.model,
        "kind": unit.kind,
        "state": c.state,
        "reason": c.reason,
        "severity": c.code,
        "previous_state": before.state,
        "previous_reason": before.reason,
        "since": iso_ms(status.since_ms),
        "at": iso_ms(at_ms),
        "message": _message(status, before),
    }


class _Webhook:
    def __init__(self, url: str, retries: int, timeout_s: float, backoff_s: float) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=_QUEUE_LIMIT)
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.thread = threading.Thread(target=self._work, name=f"webhook {url[:40]}", daemon=True)
        self.thread.start()

    def put(self, alert: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(alert)
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass
            else:
                return

    def _work(self) -> None:
        while (alert := self.queue.get()) is not None:
            body = json.dumps(alert).encode()
            delay = self.backoff_s
            for attempt in range(1, self.retries + 1):
                try:
                    resp = self.pool.request(
                        "POST", self.url, body=body, headers={"Content-Type": "application/json"}
                    )
                    if 200 <= resp.status < 300:
                        self.sent += 1
                        break
                    problem = f"HTTP {resp.status}"
                except urllib3.exceptions.HTTPError as exc:
                    problem = str(exc)
                log.warning("alerts.webhook_failed", url=self.url, attempt=attempt, error=problem[:200])
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                self.failed += 1
                log.error("alerts.webhook_gave_up", url=self.url, unit_id=alert.get("unit_id"))

    def close(self, timeout: float) -> None:
        self.queue.put(None)
        self.thread.join(timeout)


class Alerter:
    """Sends alerts to an MQTT topic and to webhooks, without ever blocking the caller."""

    def __init__(
        self,
        client: mqtt.Client | None,
        webhooks: Sequence[str] = (),
        *,
        topic_prefix: str = "oxyfleet/alerts",
        retries: int = 5,
        timeout_s: float = 5.0,
        backoff_s: float = 1.0,
    ) -> None:
        self.client = client
        self.topic_prefix = topic_prefix.rstrip("/")
        self.webhooks = [_Webhook(url, retries, timeout_s, backoff_s) for url in webhooks]
        self.published = 0

    def topic(self, alert: dict[str, Any]) -> str:
        """``{prefix}/{hospital}/{unit_id}``; characters MQTT reserves are replaced in the hospital name."""
        return f"{self.topic_prefix}/{alert['hospital'].translate(_TOPIC_UNSAFE)}/{alert['unit_id']}"

    def notify(self, status: UnitStatus, before: Condition, at_ms: int) -> None:
        """The engine's ``on_change`` callback: one alert for one transition."""
        self.send(alert_for(status, before, at_ms))

    def history(self, unit: Unit, condition: Condition, start_ms: int, end_ms: int, at_ms: int) -> None:
        """The engine's ``on_history`` callback: one alert for a fault found in a late upload."""
        self.send(history_alert(unit, condition, start_ms, end_ms, at_ms))

    def send(self, alert: dict[str, Any]) -> None:
        """Queue the alert everywhere; returns at once."""
        log.info(
            "alerts.sent",
            alert_event=alert["event"],
            unit_id=alert["unit_id"],
            state=alert["state"],
            reason=alert["reason"],
        )
        if self.client is not None:
            self.client.publish(self.topic(alert), json.dumps(alert), qos=1, retain=True)
            self.published += 1
        for hook in self.webhooks:
            hook.put(alert)

    def close(self, timeout: float = 10.0) -> None:
        """Give queued webhook deliveries a moment to finish."""
        for hook in self.webhooks:
            hook.close(timeout)
