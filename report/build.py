"""Which reports a request means (per hospital, province or donor source) and building each one.

A hospital's month is its own local calendar month; a province's is the province's zone; a donor's
(national) report uses the programme's zone. The scope filters the queries by tag where a tag exists
(hospital, province) and by the inventory otherwise (the source is an inventory column, not a tag).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal
from zoneinfo import ZoneInfo

from report.data import Period, read_month
from report.figures import Report, build_report
from report.zones import province_zone, zone_for

if TYPE_CHECKING:
    from devices.inventory import Inventory, Unit
    from store.reader import InfluxQL

__all__ = ["BY", "By", "Scope", "make_report", "scopes"]

By = Literal["hospital", "province", "source"]
BY: Final[tuple[By, ...]] = ("hospital", "province", "source")


@dataclass(frozen=True, slots=True)
class Scope:
    """One report's units and the zone its month is counted in."""

    by: By
    name: str
    units: dict[str, Unit]
    zone: ZoneInfo


def scopes(
    inventory: Inventory,
    by: By,
    *,
    hospital: str | None = None,
    province: str | None = None,
    source: str | None = None,
    zones: dict[str, str] | None = None,
    programme_zone: str = "Asia/Jakarta",
) -> list[Scope]:
    """The reports ``by`` groups into, restricted to a hospital/province/source (case-insensitive)."""
    zones = zones or {}
    groups: dict[str, dict[str, Unit]] = {}
    # Every assignment a unit had (inventory rows with valid_from): a unit that moved appears in the
    # report of each hospital it belonged to, and the queries, filtered by the hospital tag the health
    # engine booked each minute under, give each hospital its own part of the month.
    for current in inventory.units.values():
        for unit in inventory.history.get(current.unit_id, (current,)):
            if hospital and unit.hospital.casefold() != hospital.casefold():
                continue
            if province and unit.province.casefold() != province.casefold():
                continue
            if source and unit.source.casefold() != source.casefold():
                continue
            key = {"hospital": unit.hospital, "province": unit.province, "source": unit.source}[by]
            groups.setdefault(key, {})[unit.unit_id] = unit
    out: list[Scope] = []
    for name, units in sorted(groups.items()):
        first = next(iter(units.values()))
        if by == "hospital":
            zone = zone_for(name, first.province, zones)
        elif by == "province":
            zone = ZoneInfo(province_zone(name))
        else:
            zone = ZoneInfo(programme_zone)
        out.append(Scope(by, name, units, zone))
    return out


def make_report(
    reader: InfluxQL,
    scope: Scope,
    month: str,
    *,
    target_pct: float = 95.0,
    plotted: int = 40,
    now_ms: int | None = None,
    retention_policy: str | None = None,
) -> Report:
    """Read and compute one report (``month`` like 2026-11, in the scope's zone)."""
    period = Period.parse(month, scope.zone)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    first = next(iter(scope.units.values()))
    data = read_month(
        reader,
        scope.units,
        period,
        hospital=first.hospital if scope.by == "hospital" else None,
        province=first.province if scope.by == "province" else None,
        plotted=plotted,
        now_ms=now,
        retention_policy=retention_policy,
    )
    return build_report(scope.by, scope.name, scope.units, data, period, target_pct=target_pct, now_ms=now)
