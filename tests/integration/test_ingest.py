"""End to end against the real Mosquitto and InfluxDB: what is published is what is stored (or rejected)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ingest.decode import Reason

pytestmark = pytest.mark.integration

Row = dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def count(influx: Any, measurement: str, field: str = "*", where: str = "") -> int:
    rows = influx.rows(f"SELECT count({field}) FROM {measurement} {where}")
    if not rows:
        return 0
    return max(int(v) for k, v in rows[0].items() if k.startswith("count") and v is not None)


def rejected_by_reason(influx: Any) -> dict[str, int]:
    return {
        r["reason"]: int(r["n"])
        for r in influx.rows("SELECT count(payload_bytes) AS n FROM rejected GROUP BY reason")
    }


def test_n_readings_from_m_units_are_stored_exactly(start_ingester, publisher, influx, wait_for) -> None:
    start_ingester()
    base = now_ms() - 60_000
    units = [("concentrator", f"OC-{i}") for i in range(4)] + [("docs", "DOCS-1")]
    per_unit = 30
    for n in range(per_unit):
        for kind, unit in units:
            reading = {
                "ts": base + n * 1000,
                "seq": n,
                "purity_pct": 90 + n / 10,
                "flow_lpm": 5.0 if kind == "concentrator" else 400.5,
                "running": True,
            }
            publisher.reading(unit, reading, kind=kind)
    total = per_unit * len(units)
    wait_for(lambda: count(influx, "telemetry", "purity_pct") == total)
    per = {
        r["unit_id"]: int(r["count"])
        for r in influx.rows("SELECT count(purity_pct) FROM telemetry GROUP BY unit_id")
    }
    assert per == {unit: per_unit for _, unit in units}
    # One reading exactly: tags, fields (with their types) and the device timestamp.
    rows = influx.rows(
        f"SELECT * FROM telemetry WHERE unit_id = 'DOCS-1' AND time = {(base + 7000) * 1_000_000}"
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["time"] == base + 7000
    assert row["kind"] == "docs"
    assert row["hospital"] == row["model"] == row["province"] == "unregistered"
    assert row["purity_pct"] == pytest.approx(90.7)
    assert row["flow_lpm"] == 400.5
    assert row["seq"] == 7
    assert row["running"] is True
    fields = {r["fieldKey"]: r["fieldType"] for r in influx.rows("SHOW FIELD KEYS FROM telemetry")}
    assert fields["purity_pct"] == "float" and fields["seq"] == "integer" and fields["running"] == "boolean"
    assert rejected_by_reason(influx) == {}


def test_batched_late_upload_lands_whole(start_ingester, publisher, influx, wait_for) -> None:
    start_ingester()
    base = now_ms() - 6 * 3600_000  # six hours offline in a remote regency
    # 1,000 readings (the batch limit) that also fit the 64 KiB payload limit: compact readings.
    readings = [{"ts": base + i * 10_000, "seq": i, "purity_pct": 93.0} for i in range(1000)]
    publisher.reading("OC-REMOTE", json.dumps({"readings": readings}, separators=(",", ":")).encode())
    wait_for(lambda: count(influx, "telemetry", "purity_pct") == 1000)
    first_last = influx.rows("SELECT first(seq), last(seq) FROM telemetry")[0]
    assert (first_last["first"], first_last["last"]) == (0, 999)


def test_one_bad_reading_in_a_batch_is_rejected_alone(start_ingester, publisher, influx, wait_for) -> None:
    start_ingester()
    base = now_ms() - 60_000
    readings = [{"ts": base + i * 1000, "purity_pct": 93.0} for i in range(10)]
    readings[4]["purity_pct"] = 140.0
    publisher.reading("OC-1", {"readings": readings})
    wait_for(lambda: count(influx, "telemetry", "purity_pct") == 9 and rejected_by_reason(influx))
    assert rejected_by_reason(influx) == {"out_of_range": 1}
    row = influx.rows("SELECT * FROM rejected")[0]
    assert "readings[4].purity_pct" in row["detail"]
    assert json.loads(row["payload"])["purity_pct"] == 140.0


def test_duplicate_delivery_is_not_double_counted(start_ingester, publisher, influx, wait_for) -> None:
    start_ingester()
    reading = {"ts": now_ms() - 1000, "seq": 1, "purity_pct": 93.0}
    for _ in range(3):
        publisher.reading("OC-DUP", reading)
    publisher.reading("OC-DUP", {"ts": now_ms(), "seq": 2, "purity_pct": 93.1})
    wait_for(
        lambda: (
            influx.rows("SELECT last(seq) FROM telemetry")
            and influx.rows("SELECT last(seq) FROM telemetry")[0]["last"] == 2
        )
    )
    assert count(influx, "telemetry", "purity_pct") == 2


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_redelivery_after_unacked_crash_is_not_double_counted(
    start_ingester, publisher, influx, wait_for, unique, protocol
) -> None:
    """The first ingester writes but never acks (a crash after the write); the broker redelivers to the next.

    Run for MQTT 5 (clean start off + session expiry) and 3.1.1 (clean session off): both keep the session.
    """
    client_id = f"itest-redeliver-{unique}"
    first = start_ingester(client_id, protocol)
    first.ingester.source.ack = lambda messages: 0
    base = now_ms() - 10_000
    for i in range(50):
        publisher.reading("OC-RE", {"ts": base + i, "seq": i, "purity_pct": 93.0})
    wait_for(lambda: count(influx, "telemetry", "purity_pct") == 50)
    first.shutdown()
    second = start_ingester(client_id, protocol)
    wait_for(lambda: second.ingester.pipeline.stats.messages_acked >= 50)
    assert second.ingester.pipeline.stats.messages_received >= 50  # the broker really redelivered them
    assert count(influx, "telemetry", "purity_pct") == 50


def test_every_kind_of_bad_message_is_rejected_with_its_reason_and_kept(
    start_ingester, publisher, influx, wait_for, prefix
) -> None:
    running = start_ingester()
    t = now_ms()
    publisher.reading("OC-1", b'{"ts": 1, "purity_pct": ')  # malformed JSON
    publisher.reading("OC-1", {"ts": t, "flow_lpm": "five"})  # schema violation
    publisher.reading("OC-1", {"ts": t, "purity_pct": 101.5})  # out of range
    publisher.reading("OC-1", b'{"ts": %d, "purity_pct": NaN}' % t)  # NaN
    publisher.reading("OC-1", {"ts": t + 3600_000, "purity_pct": 93.0})  # far future
    publisher.reading("OC-1", {"ts": t - 30 * 86400_000, "purity_pct": 93.0})  # older than backfill
    publisher.reading("OC-1", b'{"ts": %d, "purity_pct": 93.0, "pad": "%s"}' % (t, b"x" * 70_000))  # oversize
    publisher.raw(
        f"{prefix}/concentrator/bad*unit/telemetry", json.dumps({"ts": t, "purity_pct": 93.0})
    )  # bad unit id
    publisher.raw(
        f"{prefix}/kettle/OC-1/telemetry", json.dumps({"ts": t, "purity_pct": 93.0})
    )  # unknown kind
    publisher.reading("OC-1", {"ts": t, "unit_id": "OC-2", "purity_pct": 93.0})  # spoofing another unit
    publisher.reading("OC-1", {"readings": [{"ts": t, "purity_pct": 93.0}] * 1001})  # too many readings
    publisher.reading("OC-1", {"ts": t, "purity_pct": 93.0})  # and the ingester still works afterwards
    expected = {
        Reason.NOT_JSON: 1,
        Reason.SCHEMA_INVALID: 1,
        Reason.OUT_OF_RANGE: 1,
        Reason.NOT_FINITE: 1,
        Reason.TS_FUTURE: 1,
        Reason.TS_TOO_OLD: 1,
        Reason.TOO_LARGE: 1,
        Reason.BAD_TOPIC: 2,
        Reason.UNIT_MISMATCH: 1,
        Reason.TOO_MANY_READINGS: 1,
    }
    wait_for(
        lambda: (
            sum(rejected_by_reason(influx).values()) == sum(expected.values())
            and count(influx, "telemetry", "purity_pct") == 1
        )
    )
    assert rejected_by_reason(influx) == {k.value: v for k, v in expected.items()}
    assert running.thread.is_alive() and not running.errors
    oversize = influx.rows(
        "SELECT payload, payload_bytes, topic, unit_id FROM rejected WHERE reason = 'too_large'"
    )[0]
    assert oversize["payload_bytes"] > 70_000 and len(oversize["payload"]) <= 1024
    assert oversize["topic"] == f"{prefix}/concentrator/OC-1/telemetry" and oversize["unit_id"] == "OC-1"
    spoof = influx.rows("SELECT detail FROM rejected WHERE reason = 'unit_mismatch'")[0]
    assert "OC-2" in spoof["detail"]


def test_hostile_strings_cannot_inject_line_protocol(
    start_ingester, publisher, influx, wait_for, prefix
) -> None:
    start_ingester()
    t = now_ms()
    evil = f'x" \ntelemetry,unit_id=INJECTED purity_pct=99 {t}000000\n'
    publisher.reading("OC-1", {"ts": t, "purity_pct": 93.0, "power": evil})  # not a valid power value
    publisher.reading("OC-1", {"ts": t + 1, "purity_pct": 93.0, "alarms": [evil]})  # not a valid alarm code
    publisher.reading("OC-1", {"ts": t + 2, "purity_pct": 93.0, "unit_id": evil})  # mismatching unit id
    publisher.raw(
        f"{prefix}/concentrator/OC,unit_id=INJECTED/telemetry", json.dumps({"ts": t, "purity_pct": 1.0})
    )
    publisher.reading("OC-1", evil.encode())
    publisher.reading("OC-1", {"ts": t + 3, "purity_pct": 93.0})
    wait_for(
        lambda: (
            sum(rejected_by_reason(influx).values()) == 5 and count(influx, "telemetry", "purity_pct") == 1
        )
    )
    series = [r["key"] for r in influx.rows("SHOW SERIES")]
    assert not any("INJECTED" in s and not s.startswith("rejected") for s in series), series
    assert influx.rows("SHOW TAG VALUES FROM telemetry WITH KEY = unit_id") == [
        {"key": "unit_id", "value": "OC-1"}
    ]
    stored = {r["payload"] for r in influx.rows("SELECT payload FROM rejected WHERE reason = 'not_json'")}
    # Kept as data, not as points. Line protocol cannot carry a newline at all, so CR/LF are shown as \n.
    assert stored == {evil.replace("\n", "\\n")}


def test_field_type_conflict_rejects_only_that_point(start_ingester, publisher, influx, wait_for) -> None:
    """InfluxDB 1.x answers 400 'partial write: field type conflict' and drops the point; it must end in `rejected`."""
    import urllib.request

    t = now_ms()
    # Someone else already wrote temp_c as a string into this shard: our float temp_c now conflicts.
    body = f'telemetry,hospital=unregistered,kind=concentrator,model=unregistered,province=unregistered,unit_id=OC-OLD temp_c="hot" {(t - 5000) * 1_000_000}'
    url = f"{influx.url}/write?db={influx.database}&precision=ns"
    urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), method="POST"), timeout=5).close()
    start_ingester()
    publisher.reading("OC-1", {"ts": t, "purity_pct": 93.0})
    publisher.reading("OC-2", {"ts": t, "purity_pct": 92.0, "temp_c": 40.0})
    publisher.reading("OC-3", {"ts": t, "purity_pct": 91.0})
    wait_for(lambda: rejected_by_reason(influx) == {"sink_rejected": 1})
    assert count(influx, "telemetry", "purity_pct") == 2
    row = influx.rows("SELECT detail, unit_id FROM rejected")[0]
    assert row["unit_id"] == "OC-2" and "conflict" in row["detail"]


def test_device_status_is_stored_as_connection_changes(
    start_ingester, publisher, influx, wait_for, prefix
) -> None:
    start_ingester()
    publisher.raw(f"{prefix}/docs/DOCS-1/status", "offline")
    publisher.raw(f"{prefix}/docs/DOCS-1/status", "online")
    wait_for(lambda: (last := influx.rows("SELECT last(online) FROM unit_connection")) and last[0]["last"])
    rows = influx.rows("SELECT online, kind, unit_id FROM unit_connection")
    # One point per unit, minute and state, so that a redelivered status message overwrites its own point
    # (issue 19) and a drop within a minute is still seen.
    assert [r["online"] for r in rows] in ([False, True], [False, True, True])
    assert {r["unit_id"] for r in rows} == {"DOCS-1"}
