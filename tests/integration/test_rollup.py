"""Daily rollups against the real InfluxDB: a day per hospital, a unit that moved mid-day, late work, restart.

The minutes are written as the health engine writes them (``unit_state`` and ``telemetry_1m`` in the
long-term policy, tagged with the hospital in force at each minute); the rollup reads them back and the
report reads the rollup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from core.settings import InfluxSettings
from devices.inventory import COLUMNS, load_inventory
from health.rollup import Rollup
from report.data import Period, read_month
from store.lineproto import line, tag_set
from store.retention import apply_retention
from store.schema import (
    LONG_POLICY,
    STATES,
    UNIT_TAGS,
    DayField,
    Measurement,
    OxygenField,
    State,
    StateField,
    qualified,
    seconds_field,
)
from store.writer import InfluxSink, V1Transport

if TYPE_CHECKING:
    from pathlib import Path

    from store.reader import InfluxQL

pytestmark = pytest.mark.integration

WITA = ZoneInfo("Asia/Makassar")
MIN = 60_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=WITA).timestamp() * 1000)  # type: ignore[arg-type,misc]


DAY = (ms(2026, 10, 5), ms(2026, 10, 6))
MOVED = ms(2026, 10, 5, 10)


def minute(uid: str, hospital: str, t: int, state: str = State.IN_SPEC, due: bool = False) -> str:
    tags = tag_set(dict(zip(UNIT_TAGS, (hospital, "concentrator", "OC-5-DONOR", "Bali", uid), strict=True)))
    fields: dict[str, object] = {
        StateField.STATE: state,
        StateField.MAINTENANCE_DUE: due,
        **{seconds_field(s): 60.0 if s == state else 0.0 for s in STATES},
    }
    return line(Measurement.UNIT_STATE, tags, fields, t * 1_000_000)


@pytest.fixture
def stored(influx: InfluxQL, tmp_path: Path) -> tuple[Rollup, InfluxSink]:
    apply_transport = V1Transport(influx.url, influx.database)
    apply_retention(
        apply_transport, InfluxSettings(url=influx.url, database=influx.database, raw_retention="INF")
    )
    apply_transport.close()
    when = datetime.fromtimestamp(MOVED / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    rows = [
        [*COLUMNS, "valid_from"],
        ["U1", "concentrator", "OC-5-DONOR", "SN1", "RS A", "Bali", "donor", "2026-01-01", "0", ""],
        ["U1", "concentrator", "OC-5-DONOR", "SN1", "RS B", "Bali", "donor", "2026-01-01", "0", when],
        ["U2", "concentrator", "OC-5-DONOR", "SN2", "RS A", "Bali", "donor", "2026-01-01", "0", ""],
    ]
    path = tmp_path / "inventory.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    inventory = load_inventory(path)
    sink = InfluxSink(V1Transport(influx.url, influx.database, retention_policy=LONG_POLICY))
    lines = []
    for t in range(DAY[0] - 3600_000, DAY[1] + 3600_000, MIN):
        lines.append(minute("U1", "RS A" if t < MOVED else "RS B", t, due=t >= ms(2026, 10, 5, 20)))
        lines.append(minute("U2", "RS A", t))
        tags = tag_set(
            dict(zip(UNIT_TAGS, ("RS A", "concentrator", "OC-5-DONOR", "Bali", "U2"), strict=True))
        )
        lines.append(
            line(
                Measurement.TELEMETRY_1M,
                tags,
                {OxygenField.LITRES: 5.0, OxygenField.READINGS: 6},
                t * 1_000_000,
            )
        )
    assert sink.write(lines).rejected == {}

    def write(batch: list[str]) -> int:
        return len(sink.write(batch).rejected) if batch else 0

    rollup = Rollup(
        influx,
        write,
        lambda: inventory,
        lambda _h, _p: WITA,
        long_rp=LONG_POLICY,
        clock=lambda: DAY[1] / 1000 + 3600,  # an hour after the day's end: complete
    )
    return rollup, sink


def day_rows(influx: InfluxQL) -> list[dict[str, Any]]:
    return influx.rows(
        f"SELECT * FROM {qualified(Measurement.UNIT_DAY, LONG_POLICY)} "
        f"WHERE time >= {DAY[0]}ms AND time < {DAY[1]}ms GROUP BY hospital"
    )


def test_catch_up_rolls_each_hospital_and_a_moved_unit_under_both(influx, stored) -> None:
    rollup, sink = stored
    missing = rollup.missing(days_back=3)
    assert (missing[0][0], sorted(missing[0][1])) == (DAY, ["RS A", "RS B"])
    while rollup.step():
        pass
    assert rollup.missing(days_back=3) == []  # after a restart nothing is left to do
    rows = day_rows(influx)
    units = {(r["hospital"], r[DayField.UNIT_ID]): r for r in rows if r.get(DayField.UNIT_ID)}
    markers = {r["hospital"]: r[DayField.UNITS] for r in rows if r.get(DayField.UNITS) is not None}
    assert markers == {"RS A": 2, "RS B": 1}
    assert units["RS A", "U1"][seconds_field(State.IN_SPEC)] == 10 * 3600  # 00:00-10:00 at RS A
    assert units["RS B", "U1"][seconds_field(State.IN_SPEC)] == 14 * 3600  # then RS B
    assert units["RS B", "U1"][DayField.MAINTENANCE_DUE] is True
    assert units["RS A", "U1"][DayField.MAINTENANCE_DUE] is False
    assert units["RS A", "U2"][OxygenField.LITRES] == 1440 * 5.0
    assert units["RS A", "U2"][OxygenField.READINGS] == 1440 * 6
    # Points of one hospital and day never collide: each unit its own timestamp, inside the day.
    times = [r["time"] for r in rows if r["hospital"] == "RS A"]
    assert len(set(times)) == len(times) and all(DAY[0] <= t < DAY[1] for t in times)
    sink.close()


def test_late_work_redoes_the_day_and_the_report_reads_the_newest(influx, stored) -> None:
    rollup, sink = stored
    rollup.roll_range(*DAY)
    period = Period.parse("2026-10", WITA)
    units = {"U2": load_unit(rollup, "U2")}
    before = read_month(influx, units, period, hospital="RS A", retention_policy=LONG_POLICY, now_ms=DAY[1])
    # The rolled-up day, and the hour stored on either side of it from the minutes (not rolled up).
    assert before.rolled_days == 1 and before.seconds["U2"][State.IN_SPEC] == 26 * 3600
    # A late upload: the engine re-evaluated 12:00-13:00 and found U2 underperforming.
    late = [
        minute("U2", "RS A", t, State.UNDERPERFORMING)
        for t in range(ms(2026, 10, 5, 12), ms(2026, 10, 5, 13), MIN)
    ]
    assert sink.write(late).rejected == {}
    rollup.note_late(DAY[1], {"U2": (ms(2026, 10, 5, 12), ms(2026, 10, 5, 13))})
    assert rollup.redo_late() == 1
    after = read_month(influx, units, period, hospital="RS A", retention_policy=LONG_POLICY, now_ms=DAY[1])
    assert (
        after.seconds["U2"][State.UNDERPERFORMING] == 3600 and after.seconds["U2"][State.IN_SPEC] == 25 * 3600
    )
    minutes = read_month(
        influx, units, period, hospital="RS A", retention_policy=LONG_POLICY, now_ms=DAY[1], rollups=False
    )
    assert minutes.seconds == after.seconds and minutes.litres == after.litres
    sink.close()


def load_unit(rollup: Rollup, uid: str):
    return rollup.inventory().units[uid]


def test_the_health_service_rolls_up_completed_days_by_itself(influx, tmp_path) -> None:
    """`oxyfleet health` as an operator runs it: it finds completed days without a rollup and makes them."""
    import os
    import time

    from tests.integration.conftest import run_oxyfleet

    today = datetime.fromtimestamp(time.time(), tz=WITA).date()
    d0 = int(datetime(today.year, today.month, today.day, tzinfo=WITA).timestamp() * 1000) - 2 * 86400_000
    rows = [",".join(COLUMNS), "U9,concentrator,OC-5-DONOR,SN9,RS C,Bali,donor,2026-01-01,0"]
    (tmp_path / "inventory.csv").write_text("\n".join(rows) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")} | {
        "OXYFLEET_INFLUX__URL": influx.url,
        "OXYFLEET_INFLUX__DATABASE": influx.database,
        "OXYFLEET_INVENTORY_FILE": str(tmp_path / "inventory.csv"),
        "OXYFLEET_HEALTH__API_PORT": "0",
        "OXYFLEET_HEALTH__ALERTS_MQTT": "false",
    }
    # The day before yesterday (complete whatever the hour), as the engine stored it.
    apply_transport = V1Transport(influx.url, influx.database)
    apply_retention(apply_transport, InfluxSettings(url=influx.url, database=influx.database))
    apply_transport.close()
    sink = InfluxSink(V1Transport(influx.url, influx.database, retention_policy=LONG_POLICY))
    assert sink.write([minute("U9", "RS C", t) for t in range(d0, d0 + 86400_000, MIN)]).rejected == {}
    sink.close()
    done = run_oxyfleet("health", "--duration", "8", env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    got = influx.rows(
        f"SELECT * FROM {qualified(Measurement.UNIT_DAY, LONG_POLICY)} "
        f"WHERE time >= {d0}ms AND time < {d0 + 86400_000}ms GROUP BY hospital"
    )
    assert [r[DayField.UNITS] for r in got if r.get(DayField.UNITS) is not None] == [1]
    (row,) = [r for r in got if r.get(DayField.UNIT_ID) == "U9"]
    assert row[seconds_field(State.IN_SPEC)] == 86400
