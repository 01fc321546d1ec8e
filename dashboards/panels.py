"""Typed building blocks of oxyfleet's Grafana dashboards: variables, targets, panels, colours.

Grafana's dashboard JSON is loose (most keys optional, every panel type its own options); these small
frozen dataclasses fix the few shapes oxyfleet uses so a builder cannot forget a datasource, leave a
query unformatted or give a state no colour. ``json()`` renders each to the dict Grafana stores.

Colours are decided here once: :data:`STATE_COLOURS` maps every state of :data:`store.schema.STATES`
to one colour, and every panel that shows a state (counts, the problem table, the state timeline)
takes its mappings from it, so a state the health engine adds gets its colour by one entry here (a
unit test fails while a state has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from store.schema import LONG_POLICY, STATES, Measurement, State, Tag, qualified, telemetry_fields

__all__ = [
    "DATASOURCE",
    "FILTER",
    "SEVERITY_COLOURS",
    "STATE_COLOURS",
    "UIDS",
    "UNIT_LINK",
    "Grid",
    "Panel",
    "Step",
    "Target",
    "Variable",
    "by_name",
    "by_regexp",
    "cell",
    "dashboard",
    "long_term",
    "match",
    "reading_field",
    "state_cell",
    "state_mappings",
    "tag_values",
    "thresholds",
    "unit_link",
    "unit_variables",
]

DATASOURCE: Final = {"type": "influxdb", "uid": "oxyfleet-influxdb"}

# One fixed colour per state (issue 14): healthy green, problems warm, no data grey, off blue, never
# connected dim. Underperforming is orange, or red when its severity code is critical (SEVERITY_COLOURS).
STATE_COLOURS: Final[dict[str, str]] = {
    State.IN_SPEC: "green",
    State.UNDERPERFORMING: "orange",
    State.POWER_FAILURE: "purple",
    State.NO_DATA: "#8e8e8e",
    State.OFF: "blue",
    State.NEVER_CONNECTED: "#4a4a4a",
}
# unit_state's ``code``: 0 fine or off, 1 warning, 2 critical.
SEVERITY_COLOURS: Final[dict[int, str]] = {0: "green", 1: "orange", 2: "red"}

PanelType = Literal["stat", "table", "timeseries", "state-timeline", "histogram", "bargauge", "text"]
Format = Literal["time_series", "table"]


def match(tag: str, variable: str) -> str:
    """``tag =~ /^$variable$/``: Grafana expands the variable into an anchored, escaped alternation."""
    return f'"{tag}" =~ /^${variable}$/'


# The chain every unit-scoped query filters on: province -> hospital -> kind -> unit.
UNIT_VARIABLES: Final = ((Tag.PROVINCE, "province"), (Tag.HOSPITAL, "hospital"), (Tag.KIND, "kind"))
FILTER: Final = " AND ".join([*(match(t, v) for t, v in UNIT_VARIABLES), match(Tag.UNIT_ID, "unit")])


@dataclass(frozen=True, slots=True)
class Variable:
    """A query variable; ``multi`` ones have "All" (``.*``), single ones start on the first value."""

    name: str
    label: str
    query: str
    multi: bool = True
    hide: bool = False

    def json(self) -> dict[str, Any]:
        """The templating entry."""
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": self.query,
            "refresh": 2,
            "multi": self.multi,
            "includeAll": self.multi,
            "sort": 1,
            "hide": 2 if self.hide else 0,
        }
        if self.multi:
            out["allValue"] = ".*"
            out["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
        else:
            out["current"] = {}  # Grafana selects the first value the query returns
        return out


@dataclass(frozen=True, slots=True)
class Target:
    """One raw InfluxQL query of a panel."""

    query: str
    alias: str = ""
    fmt: Format = "time_series"

    def json(self, ref: str) -> dict[str, Any]:
        """The target with its refId."""
        out: dict[str, Any] = {
            "refId": ref,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.query,
            "resultFormat": self.fmt,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


@dataclass(frozen=True, slots=True)
class Grid:
    """Position on Grafana's 24-column grid."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True)
class Step:
    """A threshold step: ``colour`` from ``value`` up (None: the base step)."""

    colour: str
    value: float | None = None


def thresholds(*steps: Step) -> dict[str, Any]:
    """Absolute thresholds, base step first."""
    return {"mode": "absolute", "steps": [{"color": s.colour, "value": s.value} for s in steps]}


def state_mappings() -> list[dict[str, Any]]:
    """A value mapping per state: its colour and a readable text (``power_failure`` -> "power failure")."""
    return [
        {
            "type": "value",
            "options": {
                state: {"color": STATE_COLOURS[state], "text": state.replace("_", " "), "index": i}
                for i, state in enumerate(STATES)
            },
        }
    ]


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel; ``defaults`` and ``overrides`` are its fieldConfig."""

    title: str
    type: PanelType
    grid: Grid
    targets: tuple[Target, ...] = ()
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    transformations: tuple[dict[str, Any], ...] = ()

    def json(self, pid: int) -> dict[str, Any]:
        """The panel with its id; targets get refIds A, B, C... in order."""
        out: dict[str, Any] = {
            "id": pid,
            "title": self.title,
            "type": self.type,
            "datasource": DATASOURCE,
            "gridPos": {"x": self.grid.x, "y": self.grid.y, "w": self.grid.w, "h": self.grid.h},
            "targets": [t.json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "fieldConfig": {"defaults": self.defaults, "overrides": list(self.overrides)},
            "options": self.options,
        }
        if self.description:
            out["description"] = self.description
        if self.transformations:
            out["transformations"] = list(self.transformations)
        return out


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    variables: list[Variable],
    *,
    time_from: str = "now-6h",
    links: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A dashboard in the browser's time zone (issue 14), refreshed every 30 s."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["oxyfleet"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": [v.json() for v in variables]},
        "links": links or [],
        "panels": [p.json(i + 1) for i, p in enumerate(panels)],
    }


UIDS: Final = {
    "overview": "oxyfleet-fleet-overview",
    "unit": "oxyfleet-unit-detail",
    "uptime": "oxyfleet-hospital-uptime",
    "ingest": "oxyfleet-ingest-health",
}
UNIT_LINK: Final = f"/d/{UIDS['unit']}/unit-detail?var-unit=${{__value.raw}}&${{__url_time_range}}"


def reading_field(name: str) -> str:
    """A telemetry field the payload models define (a typo fails the build, not a panel)."""
    if name not in telemetry_fields():
        raise ValueError(f"no telemetry field {name!r} in devices.payload")
    return name


def long_term(measurement: Measurement) -> str:
    """A health result in InfluxQL (``"oxyfleet_long".unit_state``): raw telemetry expires, these stay.

    The one place the dashboards and alert rules name the long-term policy (docs/operations.md, "Data
    lifecycle"); Grafana's InfluxQL sends it as written.
    """
    return qualified(measurement, LONG_POLICY)


def tag_values(key: str, where: str = "") -> str:
    """A variable query: the values of a unit tag in ``unit_state`` (every evaluated unit is there)."""
    return f'SHOW TAG VALUES FROM {long_term(Measurement.UNIT_STATE)} WITH KEY = "{key}"' + (
        f" WHERE {where}" if where else ""
    )


def unit_variables(*, single_unit: bool = False) -> list[Variable]:
    """Province -> hospital -> kind -> unit, each narrowing the next."""
    chain = [
        (Tag.PROVINCE, "province", "Province"),
        (Tag.HOSPITAL, "hospital", "Hospital"),
        (Tag.KIND, "kind", "Kind"),
    ]
    out: list[Variable] = []
    for i, (tag, name, label) in enumerate(chain):
        where = " AND ".join(match(t, v) for t, v, _ in chain[:i])
        out.append(Variable(name, label, tag_values(tag, where)))
    where = " AND ".join(match(t, v) for t, v, _ in chain)
    out.append(Variable("unit", "Unit", tag_values(Tag.UNIT_ID, where), multi=not single_unit))
    return out


def by_name(name: str, **props: Any) -> dict[str, Any]:  # noqa: ANN401 - Grafana field properties
    """A field override for the field displayed as ``name``."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k, "value": v} for k, v in props.items()],
    }


def by_regexp(pattern: str, **props: Any) -> dict[str, Any]:  # noqa: ANN401 - Grafana field properties
    """A field override for fields whose display name matches ``pattern``."""
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [{"id": k, "value": v} for k, v in props.items()],
    }


def cell(kind: str) -> dict[str, Any]:
    """Table cell display (``color-background``, ``color-text``)."""
    return {"type": kind}


def state_cell(name: str) -> dict[str, Any]:
    """A table column of state names, each cell in its state's colour."""
    return by_name(name, mappings=state_mappings(), **{"custom.cellOptions": cell("color-background")})


def unit_link(name: str) -> dict[str, Any]:
    """A table column of unit ids, each a link to Unit detail for that unit (same range)."""
    return by_name(name, links=[{"title": "Unit detail for ${__value.raw}", "url": UNIT_LINK}])
