"""Data lifecycle on the real InfluxDB: raw telemetry expires with its policy, the aggregates stay.

The lifecycle is on by default (v1): the settings' defaults are used as they are. oxyfleet's own setup (:func:`store.retention.apply_retention`) bounds the default policy and creates the
long-term one; the health engine writes per-minute aggregates and unit states there. Raw readings three
hours old are then expired by a one-hour raw retention (InfluxDB's minimum), and the test waits for
InfluxDB's retention service (scripts/services runs it every 5 s) to drop them: the aggregates and
states of those minutes must still be there, matching the raw readings they came from, and what the
dashboards and the uptime report read of them must be unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from dashboards.panels import tag_values
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from health.aggregates import aggregate_lines, minute_lines
from health.engine import HealthEngine, _tags, load_facts
from health.uptime import uptime_rows
from store.retention import apply_retention, results_policy, shard_duration
from store.schema import LONG_POLICY, STATES, OxygenField, Tag
from store.writer import InfluxSink, V1Transport

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

MINUTE = 60_000
LONG = LONG_POLICY


def _policies(influx) -> dict[str, dict[str, object]]:
    answer = influx.raw(f'SHOW RETENTION POLICIES ON "{influx.database}"')
    series = answer["results"][0]["series"][0]
    return {v[0]: dict(zip(series["columns"], v, strict=True)) for v in series["values"]}


def test_raw_telemetry_expires_and_aggregates_stay(influx, settings_for, tmp_path: Path, wait_for) -> None:  # noqa: PLR0915 - one story, from writing to expiry
    settings = settings_for("lifecycle")
    # On by default: the long-term policy is set and raw telemetry is bounded to 90 days.
    assert (settings.influx.long_retention_policy, settings.influx.raw_retention) == (LONG, "90d")
    assert results_policy(settings.influx) == LONG
    # Raw kept forever at first, so that the three-hour-old readings below can be written.
    influx_settings = settings.influx.model_copy(update={"raw_retention": "INF"})
    transport = V1Transport(influx.url, influx.database)
    apply_retention(transport, influx_settings)
    assert LONG in _policies(influx) and _policies(influx)[LONG]["duration"] == "0s"
    apply_retention(transport, influx_settings)  # idempotent: a second start changes nothing
    # Hour-long shard groups for the raw data, so a one-hour policy can drop the ones written below.
    influx.execute(f'ALTER RETENTION POLICY "autogen" ON "{influx.database}" SHARD DURATION 1h')

    unit = load_inventory(SAMPLE_INVENTORY).units["OC-JKT-00001"]
    path = tmp_path / "inventory.csv"
    path.write_text(write_inventory([unit]))
    now = time.time_ns() // 1_000_000
    start = now - 3 * 3600_000
    start -= start % MINUTE
    end = start + 10 * MINUTE
    raw = InfluxSink(V1Transport(influx.url, influx.database))
    lines = []
    for i, t in enumerate(range(start, end, 10_000)):
        purity = 92.0 + (i % 6) * 0.5  # 92.0 .. 94.5 in every minute
        lines.append(
            f"telemetry,unit_id={unit.unit_id} purity_pct={purity},flow_lpm=9.8,outlet_kpa=60.0,running=true "
            f"{t * 1_000_000}"
        )
    assert raw.write(lines).rejected == {}

    results = InfluxSink(V1Transport(influx.url, influx.database, retention_policy=LONG))
    engine = HealthEngine(influx, results, path, long_rp=LONG)
    engine.evaluate_range(start, end)
    aggregates = influx.rows(
        f'SELECT * FROM "{LONG}".telemetry_1m WHERE time >= {start}ms AND time < {end}ms'
    )
    assert len(aggregates) == 10
    for row in aggregates:
        assert (row["purity_pct_min"], row["purity_pct_max"]) == (92.0, 94.5)
        assert row["purity_pct_mean"] == pytest.approx(93.25)
        assert (row["flow_lpm_min"], row["outlet_kpa_max"]) == (9.8, 60.0)
        assert row["flow_lpm_mean"] == pytest.approx(9.8)
    states = influx.rows(f'SELECT count(state) FROM "{LONG}".unit_state')
    assert states[0]["count"] == 10
    # Cycles aggregate the readings they hold instead of asking InfluxDB: the same numbers.
    held = minute_lines(engine.fetch(start, end), engine.inventory, _tags, start, end)
    asked = aggregate_lines(influx, engine.inventory, _tags, start, end)
    assert len(held) == len(asked) == 10
    for mine, theirs in zip(sorted(held), sorted(asked), strict=True):
        assert _fields(mine) == pytest.approx(_fields(theirs))
        # Oxygen in the minute: six readings above the purity threshold, each one reporting interval at 9.8 L/min.
        assert _fields(mine)[OxygenField.READINGS] == 6
        assert _fields(mine)[OxygenField.LITRES] == pytest.approx(6 * 9.8 * unit.spec.report_interval_s / 60)
    before = _read_back(influx, results_policy(settings.influx), start, end)
    assert before[0] > 0 and before[1] == [unit.unit_id]

    # The operator's raw period ends: one hour (InfluxDB's minimum) makes three-hour-old readings expire.
    apply_retention(transport, influx_settings.model_copy(update={"raw_retention": "1h"}))
    assert _policies(influx)["autogen"]["duration"] == "1h0m0s"
    assert shard_duration("1h") == "1h"
    assert _policies(influx)["autogen"]["shardGroupDuration"] == "1h0m0s"
    wait_for(lambda: influx.rows("SELECT count(purity_pct) FROM telemetry") == [], timeout=60, interval=1)
    # The long-term data of those minutes is all still there.
    assert len(influx.rows(f'SELECT * FROM "{LONG}".telemetry_1m WHERE time >= {start}ms')) == 10
    assert influx.rows(f'SELECT count(state) FROM "{LONG}".unit_state')[0]["count"] == 10
    assert _read_back(influx, results_policy(settings.influx), start, end) == before
    # After a restart the engine still knows the unit connected once (no_data, not never_connected).
    assert _first_last(influx, unit.unit_id) == (
        start,
        end - MINUTE,
    )  # the aggregates' first and last minutes
    raw.close()
    results.close()
    transport.close()


def _read_back(influx, policy: str | None, start: int, end: int) -> tuple[float, list[str]]:
    """What readers see of the long-term data: seconds booked (`oxyfleet uptime`, the API, the reports
    sum these) and the units the dashboards' unit variable lists."""
    rows = uptime_rows(influx, start, end, retention_policy=policy)
    booked = sum(float(row.get(s) or 0.0) for row in rows for s in STATES)
    return booked, [r["value"] for r in influx.rows(tag_values(Tag.UNIT_ID))]


def _first_last(influx, unit_id: str) -> tuple[int, int]:
    facts = load_facts(influx, long_rp=LONG)
    return facts.first[unit_id], facts.last[unit_id]


def _fields(line: str) -> dict[str, float]:
    """Field values of a line; integers (``6i``: the oxygen readings counted) as numbers too."""
    return {
        k: float(v.removesuffix("i")) for k, v in (kv.split("=") for kv in line.rsplit(" ", 2)[1].split(","))
    }
