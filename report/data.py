"""What a report reads from InfluxDB: few, server-side aggregated InfluxQL queries per report.

Sums of ``unit_state`` seconds per unit and month run in InfluxDB (one row per unit), so a report for
20,000 units moves 20,000 rows, not 864 million minutes. Per-day and per-hour detail is read only for the
units that need it: those commissioned during the months compared (days before commissioning are not
booked) and those plotted (state strip, purity).

Oxygen delivered is summed from telemetry in InfluxDB too: ``sum(flow_lpm)`` over readings whose purity is
at or above the model's low-purity threshold, times the model's reporting interval (each reading stands
for one interval of flow). The query runs once per device model, because the threshold is the model's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final

from store.reader import quote
from store.schema import (
    ACCOUNTED,
    STATES,
    EventField,
    Measurement,
    State,
    StateField,
    Tag,
    aggregate_field,
    qualified,
    seconds_field,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from zoneinfo import ZoneInfo

    from devices.inventory import Unit
    from store.reader import InfluxQL

__all__ = ["FAULT_STATES", "Event", "MonthData", "Period", "booked_from", "read_month"]

FAULT_STATES: Final = frozenset({State.UNDERPERFORMING, State.POWER_FAILURE, State.NO_DATA})
# Units per regex in one query: InfluxQL has no IN (...); a regex of ids keeps one query per chunk.
_CHUNK: Final = 400
_SILENT: Final = frozenset({State.NO_DATA, State.NEVER_CONNECTED})
_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar month in a zone: ``[start, end)`` as aware datetimes and as epoch milliseconds."""

    year: int
    month: int
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        """First instant of the month, local."""
        return datetime(self.year, self.month, 1, tzinfo=self.zone)

    @property
    def end(self) -> datetime:
        """First instant of the next month, local."""
        y, m = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return datetime(y, m, 1, tzinfo=self.zone)

    @property
    def start_ms(self) -> int:
        """Start as epoch milliseconds."""
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """End as epoch milliseconds."""
        return int(self.end.timestamp() * 1000)

    @property
    def hours(self) -> int:
        """Hours in the month (743 or 745 where clocks change; none do in Indonesia)."""
        return round((self.end_ms - self.start_ms) / 3600_000)

    def previous(self) -> Period:
        """The month before, in the same zone."""
        y, m = (self.year - 1, 12) if self.month == 1 else (self.year, self.month - 1)
        return Period(y, m, self.zone)

    @classmethod
    def parse(cls, text: str, zone: ZoneInfo) -> Period:
        """``2026-11`` in ``zone``; a clear ValueError otherwise."""
        match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if not match or not 1 <= int(match[2]) <= 12:
            raise ValueError(f"month {text!r} is not like 2026-11")
        return cls(int(match[1]), int(match[2]), zone)


@dataclass(frozen=True, slots=True)
class Event:
    """One stored state transition of a unit."""

    unit_id: str
    at_ms: int
    state: str
    reason: str


@dataclass(slots=True)
class MonthData:
    """Everything read for one report, keyed by unit id."""

    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    prev_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    maintenance_due: dict[str, bool] = field(default_factory=dict)
    litres: dict[str, float] = field(default_factory=dict)
    readings: dict[str, int] = field(default_factory=dict)
    strips: dict[str, list[str]] = field(default_factory=dict)
    purity: dict[str, list[float]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    ever_reported: set[str] = field(default_factory=set)


def _id_filters(unit_ids: Iterable[str]) -> list[str]:
    """``unit_id =~ /^(a|b)$/`` clauses, one per chunk; inventory ids match a safe pattern (checked)."""
    ids = sorted(unit_ids)
    for uid in ids:
        if not _SAFE_ID.match(uid):
            raise ValueError(f"unit id {uid!r} cannot be used in a query")
    escaped = [re.escape(u) for u in ids]  # the safe pattern has no '/', so the regex literal holds
    return [f"{Tag.UNIT_ID} =~ /^({'|'.join(escaped[i : i + _CHUNK])})$/" for i in range(0, len(ids), _CHUNK)]


def booked_from(unit: Unit, zone: ZoneInfo) -> int:
    """Epoch ms from which a unit is booked: its commissioning (a bare date is local midnight)."""
    value: Any = unit.commissioned
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=zone).timestamp() * 1000)
    return 0


class _Reader:
    """The report's queries over one scope (a tag filter, and the inventory units in scope)."""

    def __init__(
        self,
        reader: InfluxQL,
        units: dict[str, Unit],
        scope_where: str,
        zone: ZoneInfo,
        retention_policy: str | None = None,
    ) -> None:
        self.reader = reader
        self.units = units
        self.scope = scope_where
        self.zone = zone
        # The health results live in the long-term policy; raw telemetry stays in the default one.
        self.state = qualified(Measurement.UNIT_STATE, retention_policy)
        self.event = qualified(Measurement.UNIT_EVENT, retention_policy)
        self.minutes = qualified(Measurement.TELEMETRY_1M, retention_policy)

    def _where(self, start_ms: int, end_ms: int, extra: str = "") -> str:
        where = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms{self.scope}"
        return f"{where} AND {extra}" if extra else where

    def state_sums(self, period: Period, *, due: bool) -> tuple[dict[str, dict[str, float]], dict[str, bool]]:
        """Seconds per state per unit over the period, from its commissioning on; last maintenance flag."""
        sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
        last = f", last({StateField.MAINTENANCE_DUE}) AS due" if due else ""
        rows = self.reader.rows(
            f"SELECT {sums}{last} FROM {self.state} "  # noqa: S608 - literals escaped
            f"WHERE {self._where(period.start_ms, period.end_ms)} GROUP BY {Tag.UNIT_ID}"
        )
        seconds: dict[str, dict[str, float]] = {}
        flags: dict[str, bool] = {}
        for row in rows:
            uid = row[Tag.UNIT_ID]
            if uid in self.units:
                seconds[uid] = {s: float(row.get(s) or 0.0) for s in STATES}
                flags[uid] = bool(row.get("due"))
        # Units commissioned inside the period: book only from their commissioning (daily detail for them).
        late = {
            uid: start
            for uid, unit in self.units.items()
            if period.start_ms < (start := booked_from(unit, period.zone)) < period.end_ms
        }
        for uid, unit in self.units.items():
            if uid in late or booked_from(unit, period.zone) >= period.end_ms:
                seconds.pop(uid, None)
        for clause in _id_filters(late):
            for row in self.reader.rows(
                f"SELECT {sums} FROM {self.state} "  # noqa: S608
                f"WHERE {self._where(period.start_ms, period.end_ms, clause)} "
                f"GROUP BY time(1h), {Tag.UNIT_ID} tz({quote(period.zone.key)})"
            ):
                uid = row[Tag.UNIT_ID]
                if row["time"] < late[uid] or all(row.get(s) is None for s in STATES):
                    continue
                booked = seconds.setdefault(uid, dict.fromkeys(STATES, 0.0))
                for s in STATES:
                    booked[s] += float(row.get(s) or 0.0)
        return seconds, flags

    def oxygen(self, period: Period) -> tuple[dict[str, float], dict[str, int]]:
        """Litres at or above each model's low-purity threshold, and the readings counted, per unit."""
        litres: dict[str, float] = {}
        counted: dict[str, int] = {}
        for model, spec in sorted({(u.model, u.spec) for u in self.units.values()}, key=lambda m: m[0]):
            extra = f"{Tag.MODEL} = {quote(model)} AND purity_pct >= {float(spec.purity_low_pct)!r}"
            for row in self.reader.rows(
                "SELECT sum(flow_lpm) AS flow, count(flow_lpm) AS n FROM "  # noqa: S608
                f"{Measurement.TELEMETRY} WHERE {self._where(period.start_ms, period.end_ms, extra)} "
                f"GROUP BY {Tag.UNIT_ID}"
            ):
                uid = row[Tag.UNIT_ID]
                if uid in self.units:
                    litres[uid] = float(row.get("flow") or 0.0) * spec.report_interval_s / 60.0
                    counted[uid] = int(row.get("n") or 0)
        return litres, counted

    def strips(self, period: Period, unit_ids: Iterable[str]) -> dict[str, list[str]]:
        """The dominant state of each hour of the month per unit ('' where nothing was booked)."""
        sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
        strips = {uid: [""] * period.hours for uid in unit_ids}
        for clause in _id_filters(strips):
            for row in self.reader.rows(
                f"SELECT {sums} FROM {self.state} "  # noqa: S608
                f"WHERE {self._where(period.start_ms, period.end_ms, clause)} "
                f"GROUP BY time(1h), {Tag.UNIT_ID} tz({quote(period.zone.key)})"
            ):
                uid = row[Tag.UNIT_ID]
                hour = (int(row["time"]) - period.start_ms) // 3600_000
                values = {s: float(row.get(s) or 0.0) for s in STATES}
                first_ms = booked_from(self.units[uid], period.zone)
                if 0 <= hour < period.hours and any(values.values()) and row["time"] + 3600_000 > first_ms:
                    strips[uid][hour] = max(values, key=lambda s: values[s])
        return strips

    def purity(self, period: Period, unit_ids: Iterable[str]) -> dict[str, list[float]]:
        """Ten-minute mean purity of the plotted units while delivering (standby air is not product)."""
        out: dict[str, list[float]] = {uid: [] for uid in unit_ids}
        for clause in _id_filters(out):
            for row in self.reader.rows(
                f"SELECT mean(purity_pct) AS p FROM {Measurement.TELEMETRY} "  # noqa: S608
                f"WHERE {self._where(period.start_ms, period.end_ms, clause + ' AND flow_lpm > 0')} "
                f"GROUP BY time(10m), {Tag.UNIT_ID} fill(none)"
            ):
                if row.get("p") is not None:
                    out[row[Tag.UNIT_ID]].append(float(row["p"]))
        return out

    def events(self, period: Period, until_ms: int) -> list[Event]:
        """Transitions from the start of the period until ``until_ms`` (to find when faults ended)."""
        rows = self.reader.rows(
            f'SELECT "{EventField.TO}", "{EventField.REASON}" FROM {self.event} '  # noqa: S608
            f"WHERE {self._where(period.start_ms, until_ms)} GROUP BY {Tag.UNIT_ID}"
        )
        events = [
            Event(
                row[Tag.UNIT_ID],
                int(row["time"]),
                str(row[EventField.TO]),
                str(row.get(EventField.REASON) or ""),
            )
            for row in rows
            if row[Tag.UNIT_ID] in self.units
        ]
        events.sort(key=lambda e: (e.unit_id, e.at_ms))
        return events

    def reported_before(self, end_ms: int, unit_ids: Iterable[str]) -> set[str]:
        """Which of these units ever sent a reading before ``end_ms`` (the never-connected check).

        Raw readings expire (90 days by default), their per-minute aggregates do not: a unit that reported
        only before the raw period is still one that connected once.
        """
        seen: set[str] = set()
        sources = (
            (Measurement.TELEMETRY, "purity_pct"),
            (self.minutes, aggregate_field("purity_pct", "mean")),
        )
        for clause in _id_filters(unit_ids):
            for source, column in sources:
                for row in self.reader.rows(
                    f"SELECT last({column}) AS p FROM {source} "  # noqa: S608
                    f"WHERE time < {int(end_ms)}ms AND {clause} GROUP BY {Tag.UNIT_ID}"
                ):
                    seen.add(row[Tag.UNIT_ID])
        return seen


def read_month(
    reader: InfluxQL,
    units: dict[str, Unit],
    period: Period,
    *,
    hospital: str | None = None,
    province: str | None = None,
    plotted: int = 40,
    now_ms: int | None = None,
    retention_policy: str | None = None,
) -> MonthData:
    """Read one report's data: this month and the previous one, over ``units`` (the scope).

    ``retention_policy`` is where the health results live (``store.retention.results_policy``).
    """
    scope = ""
    if hospital:
        scope += f" AND {Tag.HOSPITAL} = {quote(hospital)}"
    if province:
        scope += f" AND {Tag.PROVINCE} = {quote(province)}"
    q = _Reader(reader, units, scope, period.zone, retention_policy)
    data = MonthData()
    data.seconds, data.maintenance_due = q.state_sums(period, due=True)
    data.prev_seconds, _ = q.state_sums(period.previous(), due=False)
    data.litres, data.readings = q.oxygen(period)
    until = period.end_ms + 62 * 86400_000 if now_ms is None else max(now_ms, period.end_ms)
    data.events = q.events(period, until)
    # A unit with no reported time in the month is never connected unless it reported at some time before.
    silent = [
        uid for uid in units if sum(v for s, v in data.seconds.get(uid, {}).items() if s not in _SILENT) == 0
    ]
    data.ever_reported = set(units) - set(silent) | q.reported_before(period.end_ms, silent)
    worst = sorted(
        (uid for uid in units if uid in data.ever_reported),
        key=lambda uid: _availability_key(data.seconds.get(uid, {})),
    )[:plotted]
    data.strips = q.strips(period, worst)
    data.purity = q.purity(period, worst)
    return data


def _availability_key(seconds: dict[str, float]) -> float:
    accounted = sum(seconds.get(s, 0.0) for s in ACCOUNTED)
    return seconds.get(State.IN_SPEC, 0.0) / accounted if accounted else 2.0
