"""Rules that several commands and processes share, each in one place: durations, worst first, inventory reload."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from core.inventory_watch import InventoryWatcher
from core.timefmt import DurationError, iso_ms, parse_duration
from devices.inventory import COLUMNS, SAMPLE_INVENTORY, load_inventory
from health.model import UnitStatus, select_units
from health.rules import Condition

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60", 60), ("60s", 60), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7 days", "-1h", "nan", "infd", "1e400s", "5w"])
def test_what_is_not_a_duration_says_what_one_looks_like(text: str) -> None:
    with pytest.raises(DurationError, match="is not a duration like 60s, 90m, 12h, 30d"):
        parse_duration(text)


def test_iso_ms() -> None:
    assert iso_ms(1795998878298) == "2026-11-30T00:34:38+00:00"


def _status(unit_id: str, condition: Condition, since_ms: int) -> UnitStatus:
    unit = load_inventory(SAMPLE_INVENTORY).units[unit_id]
    return UnitStatus(unit, condition, since_ms, None, maintenance_due=False)


def test_select_units_is_worst_first_and_ignores_case_in_names() -> None:
    fine = _status("OC-JKT-00001", Condition("in_spec"), 1)
    low_old = _status("OC-JKT-00002", Condition("underperforming", "purity_low"), 5)
    low_new = _status("OC-JKT-00003", Condition("underperforming", "purity_low"), 9)
    critical = _status("DOCS-PAPUA-01", Condition("underperforming", "purity_critical"), 20)
    off = _status("OC-JKT-00004", Condition("off", "off"), 0)
    everyone = [fine, low_new, off, critical, low_old]
    assert select_units(everyone) == [critical, low_old, low_new, off, fine]
    assert select_units(everyone, province="papua") == [critical]
    hospital = fine.unit.hospital.upper()
    assert [s.unit.unit_id for s in select_units(everyone, hospital=hospital)] == [
        s.unit.unit_id for s in select_units(everyone) if s.unit.hospital == fine.unit.hospital
    ]
    assert select_units(everyone, state="off") == [off]
    renamed = replace(fine, unit=replace(fine.unit, hospital="RSUD Ágatsé"))
    assert select_units([renamed], hospital="rsud ágatsé") == [renamed]


HEADER = ",".join(COLUMNS)


def _write(path: Path, hospital: str, mtime_s: int, commissioned: str = "2021-08-01") -> None:
    path.write_text(f"{HEADER}\nOC-1,concentrator,OC-5-DONOR,SN1,{hospital},Papua,d,{commissioned},0\n")
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))


def test_a_broken_edit_is_reported_once_and_the_previous_inventory_stays(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv"
    _write(path, "RS Lama", 1)
    watcher = InventoryWatcher(path, 0.0, events="health")
    _write(path, "RS Baru", 2, commissioned="not-a-date")
    with capture_logs() as logs:
        for _ in range(3):  # three cycles see the same broken file
            assert watcher.refresh() is False
    assert [e["event"] for e in logs] == ["health.inventory_invalid"]
    assert logs[0]["problems"] == [
        (
            f"{path}:2: commissioned 'not-a-date' is not a date like 2021-08-17 "
            "or an RFC 3339 timestamp like 2021-08-17T09:30:00+08:00"
        )
    ]
    assert watcher.inventory.units["OC-1"].hospital == "RS Lama"
    path.unlink()
    with capture_logs() as logs:
        assert watcher.refresh() is False
        assert watcher.refresh() is False
    assert [e["event"] for e in logs] == ["health.inventory_invalid"]  # a vanished file: once too
    _write(path, "RS Baru", 3)
    with capture_logs() as logs:
        assert watcher.refresh() is True
        assert watcher.refresh() is False
    assert [e["event"] for e in logs] == ["health.inventory_reloaded"]
    assert watcher.inventory.units["OC-1"].hospital == "RS Baru"
    assert (watcher.reloads, watcher.reload_errors) == (1, 2)


def test_the_health_engine_follows_the_same_rule(tmp_path: Path) -> None:
    from health.engine import HealthEngine

    path = tmp_path / "inventory.csv"
    _write(path, "RS Lama", 1)
    engine = HealthEngine(None, None, path)  # type: ignore[arg-type]  # no cycle runs here
    assert isinstance(engine._inventory, InventoryWatcher)
    _write(path, "RS Baru", 2, commissioned="not-a-date")
    with capture_logs() as logs:
        engine._inventory.refresh()
        engine._inventory.refresh()
    assert [e["event"] for e in logs] == ["health.inventory_invalid"]
    assert engine.inventory.units["OC-1"].hospital == "RS Lama"
