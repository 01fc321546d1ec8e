"""Every name oxyfleet stores in InfluxDB, spelt once: measurements, tags, fields and the unit states.

The ingester writes, the health engine reads and writes, the dashboards and alert rules query and the
CLI reports; all of them take their names from here, so renaming a field is one edit and a typo is an
``AttributeError`` instead of an empty Grafana panel. ``tests/unit/test_layout.py`` fails when a
measurement or field name appears as a string literal anywhere else.

The members are :class:`~enum.StrEnum`, so they format as their value in f-strings and compare equal to
plain strings read back from InfluxDB.

Telemetry field names are the payload's own (``purity_pct``, ``flow_lpm``...): the pydantic models in
:mod:`devices.payload` are the single source of truth for those (the device contract), and
:func:`telemetry_fields` exposes them here for queries.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from core.settings import LONG_RETENTION_POLICY
from devices.payload import PAYLOAD_MODELS

__all__ = [
    "ACCOUNTED",
    "AGGREGATED",
    "AGGREGATES",
    "LATE_AFTER_MS",
    "LONG_POLICY",
    "STATES",
    "UNIT_TAGS",
    "UNREGISTERED",
    "ConnectionField",
    "DayField",
    "EventField",
    "HistoryField",
    "LateField",
    "Measurement",
    "OxygenField",
    "RejectedField",
    "State",
    "StateField",
    "StatsField",
    "StatusField",
    "Tag",
    "TelemetryField",
    "aggregate_field",
    "qualified",
    "seconds_field",
    "telemetry_fields",
]


class Measurement(StrEnum):
    """The measurements of the ``oxyfleet`` database."""

    TELEMETRY = "telemetry"  # one point per reading, at the device's timestamp
    REJECTED = "rejected"  # the dead-letter record of a refused message
    UNIT_CONNECTION = "unit_connection"  # a device's online/offline (its MQTT will)
    LATE_DATA = "late_data"  # a late upload arrived: which unit and time range to re-evaluate
    STATS = "oxyfleet_ingest"  # the ingester's own counters
    UNIT_STATE = "unit_state"  # health engine: one point per unit per minute
    UNIT_EVENT = "unit_event"  # health engine: one point per state transition
    UNIT_STATUS = "unit_status"  # health engine: each unit's live status (what `status` and the API read)
    UNIT_HISTORY = "unit_history"  # health engine: a fault found in a late upload, notified once
    TELEMETRY_1M = "telemetry_1m"  # health engine: per unit per minute min/mean/max, kept long-term
    UNIT_DAY = "unit_day"  # health service: per unit per local day, seconds per state and oxygen, long-term


class Tag(StrEnum):
    """Tag keys. Low cardinality only: never the raw topic, free text or payload values."""

    UNIT_ID = "unit_id"
    KIND = "kind"
    MODEL = "model"
    HOSPITAL = "hospital"
    PROVINCE = "province"
    REASON = "reason"  # rejected: the rejection reason code
    INSTANCE = "instance"  # rejected, oxyfleet_ingest: which ingester


# Tags every unit-scoped point carries, from the inventory (sorted: the order InfluxDB stores them in).
UNIT_TAGS: Final = (Tag.HOSPITAL, Tag.KIND, Tag.MODEL, Tag.PROVINCE, Tag.UNIT_ID)

# Tag value for units that are not in the inventory.
UNREGISTERED: Final = "unregistered"

# A reading older than this when it arrives is late: the ingester writes a late_data marker so the health
# engine knows which unit and range to re-evaluate without scanning history.
LATE_AFTER_MS: Final = 30_000
# late_data markers are stamped inside the minute the readings arrived in, not at the arrival instant
# (so that a redelivery overwrites its marker): a marker may be up to this much older, or newer, than the
# moment it was written. The health engine widens its look for markers by this much on both sides.
LATE_MARKER_WINDOW_MS: Final = 60_000


class State(StrEnum):
    """What the health engine says about a unit."""

    IN_SPEC = "in_spec"
    UNDERPERFORMING = "underperforming"
    POWER_FAILURE = "power_failure"
    NO_DATA = "no_data"
    OFF = "off"
    NEVER_CONNECTED = "never_connected"  # an inventory unit that has never reported: not held against anyone


STATES: Final[tuple[str, ...]] = (
    State.IN_SPEC,
    State.UNDERPERFORMING,
    State.POWER_FAILURE,
    State.NO_DATA,
    State.OFF,
    State.NEVER_CONNECTED,
)
# The states availability is computed over; "off" (standby by staff) is excluded.
ACCOUNTED: Final[tuple[str, ...]] = (State.IN_SPEC, State.UNDERPERFORMING, State.POWER_FAILURE, State.NO_DATA)


class StateField(StrEnum):
    """Fields of ``unit_state`` (besides the seconds per state, :func:`seconds_field`)."""

    STATE = "state"
    REASON = "reason"
    CODE = "code"  # severity: 0 fine or off, 1 warning, 2 critical
    IN_SPEC = "in_spec"  # 1 when the minute's dominant state is in_spec
    MAINTENANCE_DUE = "maintenance_due"


# Telemetry fields aggregated per unit and minute into telemetry_1m (purity, flow, pressure), and the
# statistics kept of each.
AGGREGATED: Final = ("purity_pct", "flow_lpm", "outlet_kpa")
AGGREGATES: Final = ("min", "mean", "max")


class OxygenField(StrEnum):
    """Oxygen delivered, in ``telemetry_1m`` (per minute) and ``unit_day`` (per day).

    Litres of oxygen at or above the model's low-purity threshold (each such reading stands for one
    reporting interval of its flow), and how many readings were counted: what the monthly report sums,
    kept with the health results so that it outlives raw telemetry.
    """

    LITRES = "oxygen_l"
    READINGS = "oxygen_readings"


class DayField(StrEnum):
    """Fields of ``unit_day`` (besides the seconds per state, :func:`seconds_field`, and :class:`OxygenField`).

    One series per hospital (tags hospital and province); a unit's day is a point in it at the local day's
    start plus a per-unit offset, the unit id a field. A marker point (``UNITS`` set, no unit id) at the
    day's start itself says the hospital's day was rolled up whole.
    """

    UNIT_ID = "unit_id"
    DAY_START_MS = "day_start_ms"  # the local day [start, end) the point sums, as epoch ms
    DAY_END_MS = "day_end_ms"
    MAINTENANCE_DUE = "maintenance_due"  # the flag of the day's last minute
    DUE_MS = "due_ms"  # when that last minute was
    WRITTEN_MS = "written_ms"  # when the rollup was made: of two points for one unit and day, the newest wins
    UNITS = "units"  # marker only: how many units the hospital's day holds


def aggregate_field(field: str, stat: str) -> str:
    """The ``telemetry_1m`` field for one statistic of one telemetry field (e.g. ``purity_pct_min``)."""
    if field not in AGGREGATED or stat not in AGGREGATES:
        msg = f"not an aggregated field/statistic: {field} {stat}"
        raise ValueError(msg)
    return f"{field}_{stat}"


# The retention policy of the health results (unit_state, unit_event, unit_status, unit_history,
# telemetry_1m) on the v1 API. The static dashboards and alert rules read them under this name; the
# processes take it from ``OXYFLEET_INFLUX__LONG_RETENTION_POLICY``, whose default it is.
LONG_POLICY: Final = LONG_RETENTION_POLICY


def qualified(measurement: Measurement, retention_policy: str | None) -> str:
    """``measurement`` in InfluxQL, under ``retention_policy`` when one is given (the default otherwise)."""
    if not retention_policy:
        return str(measurement)
    return '"' + retention_policy.replace('"', '\\"') + '".' + str(measurement)


def seconds_field(state: str) -> str:
    """The ``unit_state`` field holding the seconds a minute spent in ``state`` (e.g. ``in_spec_s``)."""
    return f"{State(state)}_s"


class StatusField(StrEnum):
    """Fields of ``unit_status`` (besides state, reason and code, named as in :class:`StateField`)."""

    SINCE_MS = "since_ms"
    LAST_READING_MS = "last_reading_ms"
    PENDING_STATE = "pending_state"  # a condition seen at "now" but shorter than the sustain window
    PENDING_REASON = "pending_reason"
    UPDATED_MS = "updated_ms"  # when the engine wrote it
    # What a restarted engine resumes from instead of scanning all telemetry (``health.engine``).
    FIRST_READING_MS = "first_reading_ms"
    RUN_HOURS = "run_hours"


class HistoryField(StrEnum):
    """Fields of ``unit_history`` (the point's time is the episode's start)."""

    END_MS = "end_ms"
    NOTIFIED_MS = "notified_ms"


class EventField(StrEnum):
    """Fields of ``unit_event``."""

    FROM = "from"
    TO = "to"
    FROM_REASON = "from_reason"
    REASON = "reason"
    CODE = "code"


class LateField(StrEnum):
    """Fields of ``late_data``."""

    FROM_MS = "from_ms"
    TO_MS = "to_ms"
    COUNT = "count"


class ConnectionField(StrEnum):
    """Fields of ``unit_connection``."""

    ONLINE = "online"


class RejectedField(StrEnum):
    """Fields of ``rejected``."""

    DETAIL = "detail"
    PAYLOAD = "payload"
    PAYLOAD_BYTES = "payload_bytes"
    RECEIVED_AT = "received_at"
    TOPIC = "topic"
    UNIT_ID = "unit_id"


class TelemetryField(StrEnum):
    """Telemetry fields the store adds to the payload's own (which :func:`telemetry_fields` lists)."""

    SEQ = "seq"  # the device's message counter
    ALARM_COUNT = "alarm_count"  # len(alarms); the codes themselves are the comma-joined ``alarms`` field


class StatsField(StrEnum):
    """Fields of ``oxyfleet_ingest`` that dashboards and alert rules read.

    The ingester names its counters in ``ingest/stats.py`` and ``ingest/pipeline.py`` (Telegraf's
    vocabulary); ``tests/unit/test_dashboards_files.py`` checks that a real snapshot carries every member.
    """

    MESSAGES_RECEIVED = "messages_received"
    POINTS_WRITTEN = "points_written"
    POINTS_REJECTED = "points_rejected"
    WRITE_RETRIES = "write_retries"
    LAST_BATCH_MS = "last_batch_ms"
    BACKLOG = "backlog"
    OLDEST_UNWRITTEN_AGE_S = "oldest_unwritten_age_s"
    RECONNECTS = "reconnects"
    SPOOL_BATCHES = "spool_batches"
    SPOOL_BYTES = "spool_bytes"
    SPOOL_MAX_BYTES = "spool_max_bytes"
    SPOOL_OLDEST_AGE_S = "spool_oldest_age_s"
    SPOOL_FULL = "spool_full"
    SPOOL_REPLAY_POINTS_PER_S = "spool_replay_points_per_s"


def telemetry_fields(kind: str | None = None) -> tuple[str, ...]:
    """Telemetry field names (of one device kind, or of all), as the payload models define them."""
    models = [PAYLOAD_MODELS[kind]] if kind is not None else list(PAYLOAD_MODELS.values())
    names: dict[str, None] = {}
    for model in models:
        names.update(dict.fromkeys(model.measurement_fields()))
    return tuple(names)
