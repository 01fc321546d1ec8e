"""Fleet overview: which units need someone now?

Counts per state in fixed colours (zeros shown as 0), then the units to chase, worst first, each row a
link to Unit detail for that unit. The problem table joins three queries (current verdict, last
readings, last change) with Grafana's merge and groupBy transformations, keyed on unit and hospital;
see :mod:`dashboards.queries` for why their time columns line up.
"""

from __future__ import annotations

from typing import Any, Final

from dashboards import queries as q
from dashboards.panels import (
    SEVERITY_COLOURS,
    STATE_COLOURS,
    UIDS,
    Grid,
    Panel,
    Step,
    Target,
    by_name,
    cell,
    dashboard,
    reading_field,
    state_cell,
    thresholds,
    unit_link,
    unit_variables,
)
from store.schema import STATES, State, StateField, Tag

__all__ = ["COUNTS", "count_colour", "fleet_overview"]


COUNTS: Final = [
    (f"{s}_critical" if code == 2 else s, s, code)
    for s in STATES
    for code in ((1, 2) if s == State.UNDERPERFORMING else (None,))
]


def count_colour(alias: str) -> str:
    """The fixed colour of a count: its state's, red for critical underperformance."""
    return SEVERITY_COLOURS[2] if alias.endswith("_critical") else STATE_COLOURS[alias]


def fleet_overview() -> dict[str, Any]:
    """Fleet overview: counts per state, the problem list worst first, maintenance, purity and flow spread."""
    counts = Panel(
        "Units by state (now)",
        "stat",
        Grid(0, 0, 24, 4),
        tuple(Target(q.state_count(state, code), alias=alias) for alias, state, code in COUNTS),
        description="Fixed colour per state; underperforming is split into warning (orange) and critical (red).",
        defaults={"noValue": "0", "decimals": 0, "color": {"mode": "fixed", "fixedColor": "text"}},
        overrides=tuple(
            by_name(
                alias,
                color={"mode": "fixed", "fixedColor": count_colour(alias)},
                displayName=alias.replace("_", " "),
            )
            for alias, _, _ in COUNTS
        ),
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "center",
        },
    )
    telemetry = (reading_field("purity_pct"), reading_field("flow_lpm"), reading_field("product_flow_lpm"))
    state, reason, code, due = (
        f"{f} (lastNotNull)"
        for f in (StateField.STATE, StateField.REASON, StateField.CODE, StateField.MAINTENANCE_DUE)
    )
    aggregate = {"operation": "aggregate", "aggregations": ["lastNotNull"]}
    problems = Panel(
        "Units to chase, worst first",
        "table",
        Grid(0, 4, 17, 11),
        (
            Target(q.problems(), fmt="table"),
            Target(q.last_telemetry(*telemetry), fmt="table"),
            Target(q.state_since(), fmt="table"),
        ),
        description=(
            "Units not in spec (nor switched off or never connected), critical first. Since: the last change "
            "within the range, else the range's start. Click a unit for its detail."
        ),
        transformations=(
            {"id": "merge", "options": {}},
            {
                "id": "groupBy",
                "options": {
                    "fields": {
                        Tag.UNIT_ID: {"operation": "groupby", "aggregations": []},
                        Tag.HOSPITAL: {"operation": "groupby", "aggregations": []},
                        "Time": {"operation": "aggregate", "aggregations": ["max"]},
                        **dict.fromkeys(
                            (
                                StateField.STATE,
                                StateField.REASON,
                                StateField.CODE,
                                StateField.MAINTENANCE_DUE,
                                *telemetry,
                            ),
                            aggregate,
                        ),
                    }
                },
            },
            {
                "id": "filterByValue",
                "options": {
                    "filters": [{"fieldName": state, "config": {"id": "isNotNull", "options": {}}}],
                    "type": "include",
                    "match": "any",
                },
            },
            {"id": "sortBy", "options": {"sort": [{"field": code, "desc": True}]}},
            {
                "id": "organize",
                "options": {
                    "indexByName": {
                        n: i
                        for i, n in enumerate(
                            (
                                Tag.UNIT_ID,
                                Tag.HOSPITAL,
                                state,
                                reason,
                                code,
                                "Time (max)",
                                *(f"{t} (lastNotNull)" for t in telemetry),
                                due,
                            )
                        )
                    },
                    "renameByName": {
                        Tag.UNIT_ID: "unit",
                        state: "state",
                        reason: "reason",
                        code: "severity",
                        "Time (max)": "since",
                        due: "maintenance due",
                        **{f"{t} (lastNotNull)": t for t in telemetry},
                    },
                },
            },
        ),
        overrides=(
            unit_link("unit"),
            state_cell("state"),
            by_name(
                "severity",
                thresholds=thresholds(*(Step(c, v or None) for v, c in SEVERITY_COLOURS.items())),
                mappings=[
                    {
                        "type": "value",
                        "options": {"0": {"text": "ok"}, "1": {"text": "warning"}, "2": {"text": "critical"}},
                    }
                ],
                **{"custom.cellOptions": cell("color-background")},
            ),
            by_name("since", unit="dateTimeFromNow"),
            by_name(
                "maintenance due",
                mappings=[
                    {
                        "type": "value",
                        "options": {"true": {"text": "due", "color": "orange"}, "false": {"text": ""}},
                    }
                ],
                **{"custom.cellOptions": cell("color-text")},
            ),
            by_name(reading_field("purity_pct"), unit="percent", decimals=1),
            by_name(reading_field("flow_lpm"), unit="L/min", decimals=2),
            by_name(reading_field("product_flow_lpm"), unit="L/min", decimals=0),
        ),
        options={"showHeader": True, "cellHeight": "sm"},
    )
    maintenance = Panel(
        "Maintenance due",
        "table",
        Grid(17, 4, 7, 11),
        (
            Target(
                f'SELECT "{StateField.MAINTENANCE_DUE}" FROM ({q.current_state()}) WHERE "{StateField.MAINTENANCE_DUE}" = true GROUP BY {q.UNIT_GROUP}',
                fmt="table",
            ),
        ),
        overrides=(unit_link(Tag.UNIT_ID),),
    )
    purity = Panel(
        "Purity across the fleet (last reading per unit)",
        "histogram",
        Grid(0, 15, 12, 8),
        (Target(q.last_telemetry(reading_field("purity_pct")), fmt="table"),),
        options={"bucketSize": 1},
        defaults={"unit": "percent"},
    )
    flow = Panel(
        "Flow per unit",
        "timeseries",
        Grid(12, 15, 12, 8),
        (Target(q.telemetry_series(reading_field("flow_lpm")), alias="$tag_unit_id"),),
        defaults={"unit": "L/min"},
    )
    return dashboard(
        UIDS["overview"],
        "oxyfleet - Fleet overview",
        [counts, problems, maintenance, purity, flow],
        unit_variables(),
    )
