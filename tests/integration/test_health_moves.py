"""A unit that moves to another hospital: its minutes are booked under the assignment in force then.

Issue 19 gave the inventory dated rows (``valid_from``); the health engine books each minute and event
with the tags of the row in force at that minute, so per-hospital uptime and reports follow the move
instead of handing the old hospital's history to the new one.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from health.engine import HealthEngine
from health.uptime import uptime_rows
from store.writer import InfluxSink, V1Transport

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

MINUTE = 60_000
NEW_HOSPITAL = "RSUD Tujuan Pindah"


def test_minutes_follow_the_unit_to_its_new_hospital(influx, tmp_path: Path) -> None:
    unit = load_inventory(SAMPLE_INVENTORY).units["OC-JKT-00001"]
    now = time.time_ns() // 1_000_000
    start = now - now % MINUTE - 60 * MINUTE
    end = start + 40 * MINUTE
    moved_at = start + 25 * MINUTE
    rows = list(csv.reader(io.StringIO(write_inventory([unit]))))
    header, row = rows[0], rows[1]
    second = list(row)
    second[header.index("hospital")] = NEW_HOSPITAL
    when = datetime.fromtimestamp(moved_at / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([[*header, "valid_from"], [*row, ""], [*second, when]])
    path = tmp_path / "inventory.csv"
    path.write_text(out.getvalue())
    after = load_inventory(path).at(unit.unit_id, moved_at + 1)
    assert after is not None and after.hospital == NEW_HOSPITAL

    sink = InfluxSink(V1Transport(influx.url, influx.database))
    lines = [
        f"telemetry,unit_id={unit.unit_id} purity_pct=93.5,flow_lpm=5.0,setpoint_lpm=5.0,running=true {t * 1_000_000}"
        for t in range(start, end, 10_000)
    ]
    assert sink.write(lines).rejected == {}
    engine = HealthEngine(influx, sink, path)
    engine.evaluate_range(start, end)
    sink.close()

    booked = {r["hospital"]: r for r in uptime_rows(influx, start, end) if r["unit_id"] == unit.unit_id}
    assert set(booked) == {unit.hospital, NEW_HOSPITAL}
    assert booked[unit.hospital]["in_spec"] == pytest.approx(25 * 60, abs=60)
    assert booked[NEW_HOSPITAL]["in_spec"] == pytest.approx(15 * 60, abs=60)
    # What was booked before the move stays with the old hospital, whatever the current inventory says.
    assert booked[unit.hospital]["province"] == unit.province
