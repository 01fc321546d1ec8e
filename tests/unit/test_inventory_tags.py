"""Inventory tags in the ingester: enrichment, unregistered units, and reload on change (fake clock)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from structlog.testing import capture_logs

from devices.inventory import COLUMNS
from ingest.inventory_tags import InventoryTags
from store.lineproto import UnitTags

if TYPE_CHECKING:
    from pathlib import Path

HEADER = ",".join(COLUMNS)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, hospital: str, mtime: int) -> None:
    path.write_text(f"{HEADER}\nOC-1,concentrator,OC-5-DONOR,SN1,{hospital},Papua,donor-A,2021-08-01,0\n")
    os.utime(path, ns=(mtime, mtime))


def test_tags_come_from_the_inventory_and_follow_edits(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv"
    write(path, "RS Lama", 1_000_000_000)
    clock = Clock()
    tags = InventoryTags(path, check_interval_s=2.0, clock=clock)
    assert tags("OC-1") == UnitTags(hospital="RS Lama", model="OC-5-DONOR", province="Papua")

    write(path, "RS Baru", 2_000_000_000)
    tags.refresh()
    assert tags("OC-1").hospital == "RS Lama"  # not checked again before the interval
    clock.now = 2.5
    with capture_logs() as logs:
        tags.refresh()
    assert tags("OC-1").hospital == "RS Baru"
    # An edit in place rewrites the unit's past (a redelivery would land in a second series): warned.
    assert [e["event"] for e in logs] == ["ingest.inventory_reloaded", "ingest.inventory_history_rewritten"]


def test_a_move_added_as_a_dated_row_tags_each_reading_by_its_time(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv"
    row = "OC-1,concentrator,OC-5-DONOR,SN1,{},Papua,donor-A,2021-08-01,0,{}"
    path.write_text(f"{HEADER},valid_from\n{row.format('RS Lama', '')}\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    clock = Clock()
    tags = InventoryTags(path, clock=clock)
    moved_ms = 1_780_000_000_000
    moved = datetime.fromtimestamp(moved_ms / 1000, tz=UTC).isoformat()
    path.write_text(f"{HEADER},valid_from\n{row.format('RS Lama', '')}\n{row.format('RS Baru', moved)}\n")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    clock.now = 10
    with capture_logs() as logs:
        tags.refresh()
    assert [e["event"] for e in logs] == ["ingest.inventory_reloaded"]  # a move, not a rewrite
    assert tags("OC-1", moved_ms - 1).hospital == "RS Lama"
    assert tags("OC-1", moved_ms).hospital == "RS Baru"
    assert tags("OC-1").hospital == "RS Baru"  # now (the move is in the past)
    assert tags.inventory.at("OC-1", moved_ms - 1) == tags.inventory.history["OC-1"][0]


def test_a_broken_edit_keeps_the_previous_inventory_and_says_where(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv"
    write(path, "RS Lama", 1_000_000_000)
    clock = Clock()
    tags = InventoryTags(path, clock=clock)
    path.write_text(f"{HEADER}\nOC-1,concentrator,OC-5-DONOR,SN1,RS,Papua,donor-A,not-a-date,0\n")
    clock.now = 10
    with capture_logs() as logs:
        tags.refresh()
    assert tags("OC-1").hospital == "RS Lama"
    assert tags.reload_errors == 1
    (event,) = logs
    assert event["event"] == "ingest.inventory_invalid"
    assert event["problems"] == [
        (
            f"{path}:2: commissioned 'not-a-date' is not a date like 2021-08-17 "
            "or an RFC 3339 timestamp like 2021-08-17T09:30:00+08:00"
        )
    ]


def test_unregistered_units_are_tagged_counted_and_logged_once(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv"
    write(path, "RS", 1_000_000_000)
    tags = InventoryTags(path)
    with capture_logs() as logs:
        for _ in range(3):
            assert tags("GHOST-1") == UnitTags()
    assert tags.unregistered == 3
    assert [e["event"] for e in logs] == ["ingest.unit_unregistered"]
