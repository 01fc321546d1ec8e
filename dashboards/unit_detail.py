"""Unit detail: what is this one unit doing?

A single-unit selector; purity, pressure and temperature against the unit's own model's thresholds
(one field override per catalog model, matched on the series name "<unit> (<model>)", so the lines move
with the model, never with a hard-coded 82/90); the low-flow line at 80 % of the setpoint; the state
timeline in the state colours; its state changes and rejected messages; and DOCS plants' own
measurements.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from dashboards import queries as q
from dashboards.panels import (
    FILTER,
    UIDS,
    Grid,
    Panel,
    Step,
    Target,
    by_regexp,
    dashboard,
    reading_field,
    state_cell,
    state_mappings,
    thresholds,
    unit_variables,
)
from dashboards.zones import zone_links
from devices.catalog import ModelSpec, load_catalog
from store.schema import Measurement, Tag

__all__ = ["LOW_FLOW_RATIO", "unit_detail"]

# The health engine's low-flow rule (health.rules.LOW_FLOW_RATIO; a unit test keeps them equal: the
# dashboards may not import the health process).
LOW_FLOW_RATIO: Final = 0.8


StepsOf = Callable[[ModelSpec], tuple[Step, ...]]


def _per_model(build: StepsOf, kind: str | None = None) -> tuple[dict[str, Any], ...]:
    """One override per catalog model: series named "<unit> (<model>)" get that model's thresholds."""
    return tuple(
        {
            "matcher": {"id": "byRegexp", "options": f".*\\({re.escape(name)}\\)$"},
            "properties": [{"id": "thresholds", "value": thresholds(*build(spec))}],
        }
        for name, spec in sorted(load_catalog().items())
        if kind is None or spec.kind == kind
    )


def _purity_steps(spec: ModelSpec) -> tuple[Step, ...]:
    return (Step("red"), Step("orange", spec.purity_critical_pct), Step("green", spec.purity_low_pct))


def _pressure_steps(spec: ModelSpec) -> tuple[Step, ...]:
    return (Step("red"), Step("green", spec.outlet_min_kpa), Step("red", spec.outlet_max_kpa))


def _temp_steps(spec: ModelSpec) -> tuple[Step, ...]:
    return (Step("green"), Step("red", spec.max_temp_c))


def _rated_steps(spec: ModelSpec) -> tuple[Step, ...]:
    return (Step("red"), Step("green", LOW_FLOW_RATIO * spec.rated_flow_lpm))


def _banded(title: str, grid: Grid, name: str, unit: str, steps: StepsOf, kind: str | None = None) -> Panel:
    return Panel(
        title,
        "timeseries",
        grid,
        (Target(q.telemetry_series(reading_field(name), by=Tag.MODEL), alias="$tag_unit_id ($tag_model)"),),
        defaults={
            "unit": unit,
            "custom": {"thresholdsStyle": {"mode": "line+area"}},
            "thresholds": thresholds(Step("green")),
        },
        overrides=_per_model(steps, kind),
    )


def unit_detail() -> dict[str, Any]:
    """One unit: readings against its model's thresholds, state timeline, changes, rejections."""
    flow_limit = (
        f'SELECT {LOW_FLOW_RATIO} * mean("{reading_field("setpoint_lpm")}") AS low_flow_limit FROM "{Measurement.TELEMETRY}" '
        f'WHERE $timeFilter AND {FILTER} GROUP BY time($__interval), "{Tag.UNIT_ID}" fill(none)'
    )
    panels = [
        _banded(
            "Purity (model thresholds: red critical, orange low)",
            Grid(0, 0, 12, 8),
            "purity_pct",
            "percent",
            _purity_steps,
        ),
        Panel(
            "Flow, setpoint and the low-flow line (80 % of setpoint)",
            "timeseries",
            Grid(12, 0, 12, 8),
            (
                Target(q.telemetry_series(reading_field("flow_lpm")), alias="$tag_unit_id flow"),
                Target(q.telemetry_series(reading_field("setpoint_lpm")), alias="$tag_unit_id setpoint"),
                Target(flow_limit, alias="$tag_unit_id low-flow limit"),
            ),
            defaults={"unit": "L/min"},
            overrides=(
                by_regexp(
                    ".* low-flow limit$",
                    **{
                        "custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                        "color": {"mode": "fixed", "fixedColor": "red"},
                    },
                ),
            ),
        ),
        _banded("Outlet pressure (model band)", Grid(0, 8, 12, 8), "outlet_kpa", "kPa", _pressure_steps),
        _banded("Temperature (model maximum)", Grid(12, 8, 12, 8), "temp_c", "celsius", _temp_steps),
        Panel(
            "State",
            "state-timeline",
            Grid(0, 16, 24, 4),
            (Target(q.state_timeline(), alias="$tag_unit_id"),),
            defaults={
                "mappings": state_mappings(),
                "color": {"mode": "thresholds"},
                "thresholds": thresholds(Step("text")),
            },
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
        ),
        Panel(
            "State changes, newest first",
            "table",
            Grid(0, 20, 12, 8),
            (Target(q.events(), fmt="table"),),
            overrides=(state_cell("from"), state_cell("to")),
        ),
        Panel(
            "Rejected messages from this unit",
            "table",
            Grid(12, 20, 12, 8),
            (Target(q.rejected_of_unit(), fmt="table"),),
        ),
        _banded(
            "DOCS: product flow (80 % of rating)",
            Grid(0, 28, 12, 8),
            "product_flow_lpm",
            "L/min",
            _rated_steps,
            "docs",
        ),
        Panel(
            "DOCS: product, tank and feed pressure",
            "timeseries",
            Grid(12, 28, 12, 8),
            tuple(
                Target(q.telemetry_series(reading_field(f)), alias=f"$tag_unit_id {f}")
                for f in ("product_kpa", "tank_kpa", "feed_kpa")
            ),
            defaults={"unit": "kPa"},
        ),
        Panel(
            "DOCS: compressor temperature and dew point",
            "timeseries",
            Grid(0, 36, 24, 8),
            tuple(
                Target(q.telemetry_series(reading_field(f)), alias=f"$tag_unit_id {f}")
                for f in ("compressor_temp_c", "dew_point_c")
            ),
            defaults={"unit": "celsius"},
        ),
    ]
    return dashboard(
        UIDS["unit"], "oxyfleet - Unit detail", panels, unit_variables(single_unit=True), links=zone_links()
    )
