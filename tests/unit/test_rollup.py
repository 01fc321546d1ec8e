"""The daily rollup's point layout: offsets, collisions, local days, and the report's uncovered rest."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

from health.rollup import DayRow, day_lines, local_days, marker_lines, offsets, unit_offset_ns
from report.data import _uncovered

DAY_NS = 86400 * 10**9
WITA = ZoneInfo("Asia/Makassar")


def test_offsets_are_deterministic_inside_the_day_and_never_the_marker() -> None:
    ids = [f"OC-{i:05d}" for i in range(2000)]
    first = offsets(ids, DAY_NS)
    assert first == offsets(reversed(ids), DAY_NS)  # the order of arrival does not matter
    assert len(set(first.values())) == len(ids)
    assert all(0 < v < DAY_NS for v in first.values())
    assert first["OC-00007"] == unit_offset_ns("OC-00007", DAY_NS)  # no collision: the hash itself


def test_colliding_units_are_separated_in_id_order() -> None:
    # A 3 ns "day": four units cannot all hash apart; ids sorted, each later one probes forward.
    got = offsets(["b", "a", "c"], 4)
    assert sorted(got.values()) == [1, 2, 3]
    assert got == offsets(["c", "b", "a"], 4)


def test_local_days_follow_the_zone() -> None:
    start = int(datetime(2026, 10, 1, tzinfo=ZoneInfo("Asia/Jakarta")).timestamp() * 1000)
    end = int(datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Jakarta")).timestamp() * 1000)
    days = local_days(WITA, start, end)
    # A WIB month touches 32 WITA days: 1 Oct WITA begins 30 Sep 23:00 WIB, 1 Nov WITA on 31 Oct 23:00 WIB.
    assert len(days) == 32
    assert days[0][0] == int(datetime(2026, 10, 1, tzinfo=WITA).timestamp() * 1000)
    assert days[-1][0] == int(datetime(2026, 11, 1, tzinfo=WITA).timestamp() * 1000)
    assert all(d1 - d0 == 86400_000 for d0, d1 in days)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(days))


def test_day_lines_put_a_unit_in_its_hospital_series_with_the_id_a_field() -> None:
    day = (1_000 * 86400_000, 1_001 * 86400_000)
    rows = [
        DayRow(
            "RS A",
            "Bali",
            "U1",
            {"in_spec": 3600.0},
            due=True,
            due_ms=day[1] - 60_000,
            litres=5.5,
            readings=3,
        ),
        DayRow("RS B", "Bali", "U1", {"off": 60.0}),
    ]
    lines = day_lines(rows, day, 42)
    assert len(lines) == 2
    assert lines[0].startswith("unit_day,hospital=RS\\ A,province=Bali ")
    assert (
        'unit_id="U1"' in lines[0] and "in_spec_s=3600.0" in lines[0] and "maintenance_due=true" in lines[0]
    )
    assert "maintenance_due" not in lines[1]  # no minute with a flag: none written
    ts = int(lines[0].rsplit(" ", 1)[1])
    assert ts == day[0] * 1_000_000 + unit_offset_ns("U1", DAY_NS)
    (marker,) = marker_lines({"RS A": "Bali"}, {"RS A": 1}, day, 42)
    assert marker.endswith(f" {day[0] * 1_000_000}") and "units=1i" in marker


def test_uncovered_is_the_period_minus_the_days() -> None:
    assert _uncovered(0, 100, set()) == [(0, 100)]
    assert _uncovered(0, 100, {(0, 10), (10, 20), (50, 60)}) == [(20, 50), (60, 100)]
    assert _uncovered(0, 100, {(0, 100)}) == []


def test_rollup_command_refuses_a_bad_month_before_touching_anything() -> None:
    from click.testing import CliRunner

    from oxyfleet.cli import cli

    result = CliRunner().invoke(cli, ["health", "rollup", "--month", "2026-13"])
    assert result.exit_code == 2 and "--month" in result.output
