"""Alert documents and topics, and that a dead webhook never blocks the sender."""

from __future__ import annotations

import time
from datetime import date

from devices.catalog import load_catalog
from devices.inventory import Unit
from health.alerts import Alerter, alert_for
from health.model import UnitStatus
from health.rules import OK, Condition

UNIT = Unit(
    "OC-NTT-00202",
    "concentrator",
    "OC-5-DONOR",
    "SN1",
    "RSUD Flores/Tengah #1",
    "Nusa Tenggara Timur",
    "donor",
    date(2021, 8, 1),
    0.0,
    load_catalog()["OC-5-DONOR"],
)


def status(condition: Condition) -> UnitStatus:
    return UnitStatus(UNIT, condition, 1764140400000, 1764140400000, maintenance_due=False)


def test_raise_change_clear() -> None:
    low = Condition("underperforming", "purity_low")
    critical = Condition("underperforming", "purity_critical")
    raised = alert_for(status(low), OK, 1764140460000)
    assert (raised["event"], raised["state"], raised["reason"], raised["severity"]) == (
        "raise",
        "underperforming",
        "purity_low",
        1,
    )
    assert "sieve beds" in raised["message"] and "RSUD Flores/Tengah #1" in raised["message"]
    assert alert_for(status(critical), low, 0)["event"] == "change"
    assert alert_for(status(OK), critical, 0)["event"] == "clear"


def test_topic_replaces_characters_mqtt_reserves() -> None:
    alert = alert_for(status(Condition("power_failure", "power_failure")), OK, 0)
    assert Alerter(None).topic(alert) == "oxyfleet/alerts/RSUD Flores_Tengah _1/OC-NTT-00202"


def test_a_dead_webhook_does_not_block_and_gives_up_after_its_retries() -> None:
    alerter = Alerter(None, ["http://127.0.0.1:9/hook"], retries=2, timeout_s=0.5, backoff_s=0.01)
    began = time.monotonic()
    for _ in range(3):
        alerter.send(alert_for(status(Condition("no_data", "no_data")), OK, 0))
    assert time.monotonic() - began < 0.1
    alerter.close(timeout=10)
    assert alerter.webhooks[0].failed == 3 and alerter.webhooks[0].sent == 0
