"""Hospital uptime: how available were the units over the range, per unit, hospital and province?

Worst first, availability coloured red below 90 %, amber below 98 %, hours per state of every state in
store.schema. Availability is the health engine's: in spec / (in spec + underperforming + power failure +
no data); off and never connected are excluded and shown as hours.
"""

from __future__ import annotations

from typing import Any, Final

from dashboards import queries as q
from dashboards.panels import (
    STATE_COLOURS,
    UIDS,
    Grid,
    Panel,
    Step,
    Target,
    by_name,
    cell,
    dashboard,
    thresholds,
    unit_link,
    unit_variables,
)
from dashboards.zones import zone_links, zone_mappings
from store.schema import STATES, Tag

__all__ = ["AVAILABILITY_STEPS", "hospital_uptime"]

# Availability colours: red below 90 %, amber below 98 %, green from 98 %.
AVAILABILITY_STEPS: Final = (Step("red"), Step("orange", 90), Step("green", 98))


def _uptime_table(title: str, grid: Grid, group: tuple[str, ...]) -> Panel:
    overrides: list[dict[str, Any]] = [
        by_name(
            "availability_pct",
            unit="percent",
            decimals=1,
            thresholds=thresholds(*AVAILABILITY_STEPS),
            **{"custom.cellOptions": cell("color-background")},
        ),
        *(
            by_name(f"{s}_h", unit="h", decimals=1, color={"mode": "fixed", "fixedColor": STATE_COLOURS[s]})
            for s in STATES
        ),
        by_name(Tag.PROVINCE, mappings=zone_mappings()),
    ]
    if Tag.UNIT_ID in group:
        overrides.append(unit_link(Tag.UNIT_ID))
    return Panel(
        title,
        "table",
        grid,
        (Target(q.uptime(", ".join(f'"{g}"' for g in group)), fmt="table"),),
        description="Availability = in spec / (in spec + underperforming + power failure + no data); off is excluded.",
        overrides=tuple(overrides),
        transformations=(
            {"id": "sortBy", "options": {"sort": [{"field": "availability_pct", "desc": False}]}},
        ),
    )


def hospital_uptime() -> dict[str, Any]:
    """Availability per hospital, unit and province over the range, worst first, hours per state."""
    panels = [
        _uptime_table(
            "Availability per hospital, worst first", Grid(0, 0, 24, 8), (Tag.HOSPITAL, Tag.PROVINCE)
        ),
        _uptime_table(
            "Availability per unit, worst first",
            Grid(0, 8, 24, 12),
            (Tag.UNIT_ID, Tag.HOSPITAL, Tag.PROVINCE),
        ),
        _uptime_table("Availability per province", Grid(0, 20, 12, 8), (Tag.PROVINCE,)),
        Panel(
            "Availability over time, per hospital",
            "timeseries",
            Grid(12, 20, 12, 8),
            (Target(q.uptime_series(Tag.HOSPITAL), alias="$tag_hospital"),),
            defaults={
                "unit": "percent",
                "min": 0,
                "max": 100,
                "thresholds": thresholds(*AVAILABILITY_STEPS),
                "custom": {"thresholdsStyle": {"mode": "line+area"}},
            },
        ),
    ]
    return dashboard(
        UIDS["uptime"],
        "oxyfleet - Hospital uptime",
        panels,
        unit_variables(),
        time_from="now-30d",
        links=zone_links(),
    )
