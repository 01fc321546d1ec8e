"""The InfluxQL of oxyfleet's panels and alert rules, spelt from :mod:`store.schema`.

Every measurement, tag and field name comes from the schema's enums, so a renamed field is one edit and
``tests/unit/test_layout.py`` finds any name spelt here by hand. Grafana's macros (``$timeFilter``,
``$__interval``) and template variables stay in the text; the tests expand them the way Grafana does.

Why some queries look the way they do:

- **Current state** is the last minute the health engine wrote within :data:`LIVE` (its cycle plus the
  minute boundary), so a unit removed from the inventory drops out instead of showing a stale verdict.
- **Several selectors in one SELECT** (``last(a) AS a, last(b) AS b``) make InfluxDB stamp the row with
  the start of the query's range, not a point's time; the problem table relies on it: its state and
  telemetry rows carry the range start, the change row carries the time of the change, and Grafana's
  groupBy takes the latest as "since".
"""

from __future__ import annotations

from typing import Final

from dashboards.panels import FILTER, long_term
from store.schema import (
    ACCOUNTED,
    STATES,
    EventField,
    Measurement,
    RejectedField,
    State,
    StateField,
    StatsField,
    Tag,
    seconds_field,
)

__all__ = [
    "LIVE",
    "availability",
    "current_state",
    "events",
    "hours",
    "ingest_gauge",
    "ingest_rate",
    "last_telemetry",
    "problems",
    "state_count",
    "state_since",
    "telemetry_series",
]

LIVE: Final = "time > now() - 5m"
UNIT_GROUP: Final = f'"{Tag.UNIT_ID}", "{Tag.HOSPITAL}"'
# States that are not a problem to chase: healthy, switched off by staff, never connected (no verdict).
_QUIET: Final = (State.IN_SPEC, State.OFF, State.NEVER_CONNECTED)


def _q(name: str) -> str:
    """Double-quoted identifier (``from``/``to`` are InfluxQL keywords)."""
    return f'"{name}"'


def current_state(where: str = FILTER) -> str:
    """Per unit: state, reason, severity code and maintenance flag of the last minute written."""
    fields = (StateField.STATE, StateField.REASON, StateField.CODE, StateField.MAINTENANCE_DUE)
    selected = ", ".join(f"last({_q(f)}) AS {_q(f)}" for f in fields)
    return (
        f"SELECT {selected} FROM {long_term(Measurement.UNIT_STATE)} WHERE {LIVE} AND {where} "
        f"GROUP BY {UNIT_GROUP}"
    )


def state_count(state: str, code: int | None = None) -> str:
    """How many units are in ``state`` now (optionally only those of severity ``code``)."""
    cond = f"{_q(StateField.STATE)} = '{state}'"
    if code is not None:
        cond += f" AND {_q(StateField.CODE)} = {code}"
    return f"SELECT count({_q(StateField.CODE)}) FROM ({current_state()}) WHERE {cond}"


def problems() -> str:
    """The units to chase: current state, reason, severity and maintenance flag (not the quiet states)."""
    fields = (StateField.STATE, StateField.REASON, StateField.CODE, StateField.MAINTENANCE_DUE)
    selected = ", ".join(f"last({_q(f)}) AS {_q(f)}" for f in fields)
    quiet = " AND ".join(f"{_q(StateField.STATE)} != '{s}'" for s in _QUIET)
    return f"SELECT {selected} FROM ({current_state()}) WHERE $timeFilter AND {quiet} GROUP BY {UNIT_GROUP}"


def last_telemetry(*fields: str) -> str:
    """The last value of each telemetry field per unit within the range (several selectors: see above)."""
    selected = ", ".join(f"last({_q(f)}) AS {_q(f)}" for f in fields)
    return (
        f"SELECT {selected} FROM {_q(Measurement.TELEMETRY)} WHERE $timeFilter AND {FILTER} "
        f"GROUP BY {UNIT_GROUP}"
    )


def state_since() -> str:
    """Per unit: the latest change within the range, stamped with its time ("since")."""
    return (
        f"SELECT last({_q(EventField.TO)}) AS changed_to FROM {long_term(Measurement.UNIT_EVENT)} "
        f"WHERE $timeFilter AND {FILTER} GROUP BY {UNIT_GROUP}"
    )


def telemetry_series(field: str, *, by: str = Tag.UNIT_ID) -> str:
    """Mean of one telemetry field per interval, one series per ``by`` tag (and unit)."""
    group = _q(Tag.UNIT_ID) if by == Tag.UNIT_ID else f"{_q(Tag.UNIT_ID)}, {_q(by)}"
    return (
        f"SELECT mean({_q(field)}) FROM {_q(Measurement.TELEMETRY)} WHERE $timeFilter AND {FILTER} "
        f"GROUP BY time($__interval), {group} fill(none)"
    )


def state_timeline() -> str:
    """The state of each minute, one series per unit."""
    return (
        f"SELECT last({_q(StateField.STATE)}) AS {_q(StateField.STATE)} FROM {long_term(Measurement.UNIT_STATE)} "
        f"WHERE $timeFilter AND {FILTER} GROUP BY time(1m), {_q(Tag.UNIT_ID)} fill(none)"
    )


def events() -> str:
    """State changes, newest first."""
    fields = ", ".join(_q(f) for f in (EventField.FROM, EventField.TO, EventField.REASON, EventField.CODE))
    return (
        f"SELECT {fields} FROM {long_term(Measurement.UNIT_EVENT)} WHERE $timeFilter AND {FILTER} "
        f"GROUP BY {_q(Tag.UNIT_ID)} ORDER BY time DESC"
    )


def availability() -> str:
    """In-spec share of accounted time, percent (``off`` and never connected excluded: store.schema)."""
    accounted = " + ".join(f"sum({_q(seconds_field(s))})" for s in ACCOUNTED)
    return f"100 * sum({_q(seconds_field(State.IN_SPEC))}) / ({accounted}) AS availability_pct"


def hours() -> str:
    """Hours per state (every state of store.schema, so a new state gets its column)."""
    return ", ".join(f"sum({_q(seconds_field(s))}) / 3600 AS {s}_h" for s in STATES)


def uptime(group: str) -> str:
    """Availability and hours per state over the range, per ``group`` (tags, comma-separated)."""
    return (
        f"SELECT {availability()}, {hours()} FROM {long_term(Measurement.UNIT_STATE)} "
        f"WHERE $timeFilter AND {FILTER} GROUP BY {group}"
    )


def uptime_series(by: str) -> str:
    """Availability per interval, one series per ``by`` tag."""
    return (
        f"SELECT {availability()} FROM {long_term(Measurement.UNIT_STATE)} WHERE $timeFilter AND {FILTER} "
        f"GROUP BY time($__interval), {_q(by)} fill(none)"
    )


_INSTANCE: Final = f"$timeFilter AND {_q(Tag.INSTANCE)} =~ /^$instance$/"


def ingest_rate(field: StatsField) -> str:
    """Per-second rate of an ingester counter, per instance."""
    return (
        f"SELECT non_negative_derivative(last({_q(field)}), 1s) FROM {_q(Measurement.STATS)} "
        f"WHERE {_INSTANCE} GROUP BY time($__interval), {_q(Tag.INSTANCE)} fill(none)"
    )


def ingest_gauge(field: StatsField) -> str:
    """Highest value of an ingester gauge per interval, per instance."""
    return (
        f"SELECT max({_q(field)}) FROM {_q(Measurement.STATS)} WHERE {_INSTANCE} "
        f"GROUP BY time($__interval), {_q(Tag.INSTANCE)} fill(none)"
    )


def rejection_pct() -> str:
    """Share of received messages rejected, percent per interval and instance."""
    rejected, received = _q(StatsField.POINTS_REJECTED), _q(StatsField.MESSAGES_RECEIVED)
    return (
        f"SELECT 100 * non_negative_derivative(last({rejected})) / non_negative_derivative(last({received})) "
        f"AS rejected_pct FROM {_q(Measurement.STATS)} WHERE {_INSTANCE} "
        f"GROUP BY time($__interval), {_q(Tag.INSTANCE)} fill(none)"
    )


def spool_fill_pct(where: str = _INSTANCE, every: str = "$__interval") -> str:
    """How full each ingester's spool is, percent of its limit."""
    used, limit = _q(StatsField.SPOOL_BYTES), _q(StatsField.SPOOL_MAX_BYTES)
    return (
        f"SELECT 100 * max({used}) / max({limit}) AS spool_pct FROM {_q(Measurement.STATS)} "
        f"WHERE {where} GROUP BY time({every}), {_q(Tag.INSTANCE)} fill(none)"
    )


def rejected_by_reason() -> str:
    """Rejected messages per interval, one series per reason code."""
    return (
        f"SELECT count({_q(RejectedField.PAYLOAD_BYTES)}) FROM {_q(Measurement.REJECTED)} "
        f"WHERE $timeFilter GROUP BY time($__interval), {_q(Tag.REASON)} fill(none)"
    )


def rejected_of_unit() -> str:
    """The unit's rejected messages (unit id is a field of ``rejected``: it may be unknown)."""
    fields = ", ".join(_q(f) for f in (RejectedField.UNIT_ID, RejectedField.DETAIL, RejectedField.PAYLOAD))
    return (
        f"SELECT {fields} FROM {_q(Measurement.REJECTED)} WHERE $timeFilter AND "
        f"{_q(RejectedField.UNIT_ID)} =~ /^$unit$/ GROUP BY {_q(Tag.REASON)} ORDER BY time DESC LIMIT 100"
    )
