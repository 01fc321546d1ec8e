"""Inventory and model catalog: the sample is valid, and every kind of bad row is reported with its line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from devices.catalog import CatalogError, load_catalog
from devices.inventory import (
    COLUMNS,
    SAMPLE_INVENTORY,
    InventoryError,
    load_inventory,
    parse_inventory,
    write_inventory,
)
from oxyfleet.cli import cli

if TYPE_CHECKING:
    from pathlib import Path

HEADER = ",".join(COLUMNS)
GOOD = "OC-1,concentrator,OC-5-DONOR,SN1,RS Satu,Papua,donor-A,2021-08-01,0"


def problems(text: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, "inv.csv", today=date(2026, 1, 1))
    return info.value.problems


def test_sample_inventory_looks_like_the_programme() -> None:
    inventory = load_inventory(SAMPLE_INVENTORY)
    units = list(inventory.units.values())
    assert len(units) >= 200
    assert {u.model for u in units} >= {"OC-5-DOMESTIC", "OC-5-DONOR", "OC-10-DONOR", "DOCS-PSA-500"}
    assert len({u.province for u in units}) >= 10
    assert len({u.hospital for u in units}) >= 20
    assert len({u.source for u in units}) >= 4
    plants = [u for u in units if u.kind == "docs"]
    assert 3 <= len(plants) <= 10
    assert {u.province for u in plants} <= {
        "Papua",
        "Papua Barat",
        "Maluku",
        "Nusa Tenggara Timur",
        "Kalimantan Utara",
    }


def test_catalog_defaults_follow_who_unicef() -> None:
    catalog = load_catalog()
    for spec in catalog.values():
        assert spec.purity_critical_pct == 82.0
        assert spec.purity_low_pct == 90.0
    concentrators = [s for s in catalog.values() if s.kind == "concentrator"]
    assert {s.rated_flow_lpm for s in concentrators} == {5.0, 10.0}
    assert all((s.outlet_min_kpa, s.outlet_max_kpa) == (30.0, 135.0) for s in concentrators)


def test_catalog_errors_name_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text(
        '[models.X]\nkind = "concentrator"\nmanufacturer = "m"\nrated_flow_lpm = 5\npurity_low_pct = 80\n'
        "purity_critical_pct = 82\npurity_max_pct = 96\noutlet_min_kpa = 30\noutlet_max_kpa = 135\n"
        "max_temp_c = 45\nreport_interval_s = 10\nservice_interval_h = 5000\n"
    )
    with pytest.raises(CatalogError, match=r"model X.*purity_critical_pct <= purity_low_pct"):
        load_catalog(bad)


def test_comments_bom_and_blank_lines_are_fine() -> None:
    inventory = parse_inventory(f"# fleet list\n{HEADER}\n\n{GOOD}\n", today=date(2026, 1, 1))
    assert list(inventory.units) == ["OC-1"]


def test_every_bad_row_is_reported_with_its_line_number() -> None:
    text = f"# exported from the ministry spreadsheet\n{HEADER}\n{GOOD}\n{GOOD}\nOC-2,kettle,OC-5-DONOR,SN2,RS,Papua,d,2021-08-01,0\nOC-3,docs,OC-5-DONOR,SN3,RS,Papua,d,2021-08-01,0\nOC-4,concentrator,OC-99,SN4,RS,Papua,d,2021-08-01,0\nOC-5,concentrator,OC-5-DONOR,SN5,RS,Papua,d,2021-02-30,abc\nOC-6,concentrator,OC-5-DONOR,SN6,RS,Papua,d,2030-01-01,-5\nOC 7,concentrator,OC-5-DONOR,,RS,Papua,d,2021-08-01,0\nOC-8,concentrator,OC-5-DONOR,SN8,RS"
    assert problems(text) == [
        "inv.csv:4: unit_id OC-1 duplicates line 3",
        "inv.csv:5: kind 'kettle' is not one of concentrator, docs",
        "inv.csv:6: model OC-5-DONOR is a concentrator, but kind says docs",
        "inv.csv:7: model 'OC-99' is not in the models file (DOCS-PSA-500, OC-10-DONOR, OC-5-DOMESTIC, OC-5-DONOR)",
        (
            "inv.csv:8: commissioned '2021-02-30' is not a date like 2021-08-17 "
            "or an RFC 3339 timestamp like 2021-08-17T09:30:00+08:00"
        ),
        "inv.csv:8: last_service_run_hours 'abc' is not a number",
        "inv.csv:9: commissioned 2030-01-01 is in the future",
        "inv.csv:9: last_service_run_hours -5 is outside 0 to 1000000",
        "inv.csv:10: unit_id 'OC 7' must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        "inv.csv:10: serial is empty",
        "inv.csv:11: 5 fields, expected 9",
    ]


def test_a_unit_may_have_dated_rows_and_at_answers_by_time() -> None:
    """Issue 19: a move is a new row with valid_from; the row in force at a time tags that time's data."""
    moved = "OC-1,concentrator,OC-5-DONOR,SN1,RS Dua,Papua,donor-A,2021-08-01,0"
    text = f"{HEADER},valid_from\n{GOOD},\n{moved},2025-06-01\nOC-2,concentrator,OC-5-DONOR,SN2,RS,Papua,d,2021-08-01,0,\n"
    inventory = parse_inventory(text, today=date(2026, 1, 1), now=datetime(2026, 1, 1, tzinfo=UTC))
    assert inventory.units["OC-1"].hospital == "RS Dua"  # in force now
    june = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
    assert inventory.at("OC-1", june - 1).hospital == "RS Satu"  # type: ignore[union-attr]
    assert inventory.at("OC-1", june).hospital == "RS Dua"  # type: ignore[union-attr]
    assert inventory.at("OC-1", datetime(2020, 1, 1, tzinfo=UTC)).hospital == "RS Satu"  # type: ignore[union-attr]
    assert inventory.at("OC-2", june) is inventory.units["OC-2"]
    assert inventory.at("NOPE", june) is None
    earlier = parse_inventory(text, today=date(2025, 1, 1), now=datetime(2025, 1, 1, tzinfo=UTC))
    assert earlier.units["OC-1"].hospital == "RS Satu"  # a move dated in the future is not in force yet
    assert parse_inventory(write_inventory(inventory.history["OC-1"]), today=date(2026, 1, 1)).history


def test_dated_row_problems() -> None:
    text = (
        f"{HEADER},valid_from\n{GOOD},2025-06-01\n{GOOD},2025-06-01T00:00:00Z\n{GOOD},2025-13-01\n"
        f"{GOOD},2025-07-01T08:00\nOC-9,concentrator,OC-5-DONOR,SN9,RS,Papua,d,2021-08-01,0,\n"
        "OC-9,docs,DOCS-PSA-500,SN9,RS,Papua,d,2021-08-01,0,2025-06-01\n"
    )
    assert problems(text) == [
        "inv.csv:3: unit_id OC-1 duplicates line 2 with the same valid_from",
        "inv.csv:4: valid_from '2025-13-01' is not a date like 2026-03-01 or a time like 2026-03-01T08:00Z",
        "inv.csv:5: valid_from '2025-07-01T08:00' needs a zone (Z or +hh:mm)",
        "inv.csv: unit_id OC-9: its rows disagree on kind (a unit keeps its kind)",
    ]


def test_header_problems_are_reported_first() -> None:
    assert problems("unit_id,kind,model\nOC-1,concentrator,OC-5-DONOR\n") == [
        (
            "inv.csv:1: header: missing columns serial, hospital, province, source, commissioned, "
            f"last_service_run_hours (expected: {HEADER})"
        )
    ]


def test_select_filters_case_insensitively() -> None:
    inventory = load_inventory(SAMPLE_INVENTORY)
    papua = list(inventory.select(province="papua", kind="docs"))
    assert [u.unit_id for u in papua] == ["DOCS-PAPUA-01"]


def test_cli_devices_check_and_list(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["devices", "check", str(SAMPLE_INVENTORY)])
    assert ok.exit_code == 0 and "ok, " in ok.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n{GOOD}\n{GOOD}\n")
    result = runner.invoke(cli, ["devices", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: unit_id OC-1 duplicates line 2" in result.output
    listing = runner.invoke(
        cli, ["devices", "list", "--file", str(SAMPLE_INVENTORY), "--kind", "docs", "--format", "csv"]
    )
    assert listing.exit_code == 0
    rows = listing.output.strip().splitlines()
    assert rows[0] == HEADER and len(rows) == 1 + sum(
        1 for _ in load_inventory(SAMPLE_INVENTORY).select(kind="docs")
    )
