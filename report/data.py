"""What a report reads from InfluxDB: few, server-side aggregated InfluxQL queries per report.

Seconds per state, the maintenance flag and oxygen delivered come from the daily rollups (``unit_day``,
written by the health service, :mod:`health.rollup`) for every hospital day that has one, and from the
stored minutes (``unit_state``, and ``telemetry_1m`` for oxygen) for the rest of the month only: the
current day, a day not yet rolled up, and the edge hours of a month counted in another zone than the
hospital's. Why: InfluxDB 1.6 pays about series x shards, and the rollups are one series per hospital
(the unit id a field), so a month for 20,000 units is one query over ~400 series instead of sums
over 20,000 unit series and five shard groups (78 s measured; docs/benchmarks.md). Both ways give the
same sums (tests/integration/test_report.py reads every scope both ways).

Per-hour detail is read from the minutes only for the units that need it: those commissioned during
the months compared (hours before commissioning are not booked) and those plotted (state strip, purity).

Oxygen delivered: for each reading whose purity is at or above its model's low-purity threshold, its
flow times the model's reporting interval; the health engine sums it per minute (``telemetry_1m``), so
it outlives raw telemetry (90 days).

Long module: the rollup-or-minutes split and the per-scope queries share one reader (its scope filter,
policies and units); split apart they would pass all of it around.
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
    DayField,
    EventField,
    Measurement,
    OxygenField,
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
_DAY_MS: Final = 86400_000
# unit_day columns a report reads, in this order (report.data._Reader._rollups indexes them).
_DAY_COLUMNS: Final = (
    DayField.UNIT_ID,
    DayField.DAY_START_MS,
    DayField.DAY_END_MS,
    DayField.WRITTEN_MS,
    DayField.UNITS,
    *(seconds_field(s) for s in STATES),
)
_DAY_DETAIL: Final = (OxygenField.LITRES, OxygenField.READINGS, DayField.MAINTENANCE_DUE, DayField.DUE_MS)
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
    rolled_days: int = 0  # unit-days read from daily rollups (the rest came from the minutes)


@dataclass(slots=True)
class Totals:
    """Sums over one period per unit: seconds per state, last maintenance flag (with its time), oxygen."""

    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: dict[str, tuple[int, bool]] = field(default_factory=dict)
    litres: dict[str, float] = field(default_factory=dict)
    readings: dict[str, int] = field(default_factory=dict)
    rolled_days: int = 0

    def flag(self, uid: str, at_ms: int, due: bool) -> None:
        """The maintenance flag of the unit's latest minute wins."""
        if uid not in self.flags or at_ms >= self.flags[uid][0]:
            self.flags[uid] = (at_ms, due)

    def add_oxygen(self, uid: str, litres: float | None, readings: float | None) -> None:
        """Add litres and readings counted (nothing stored, or nothing counted, adds nothing)."""
        if not litres and not readings:
            return
        self.litres[uid] = self.litres.get(uid, 0.0) + float(litres or 0.0)
        self.readings[uid] = self.readings.get(uid, 0) + int(readings or 0)


def _uncovered(start_ms: int, end_ms: int, days: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start_ms, end_ms)`` minus the (disjoint) days, as merged intervals."""
    out: list[tuple[int, int]] = []
    cursor = start_ms
    for d0, d1 in sorted(days):
        if d0 > cursor:
            out.append((cursor, d0))
        cursor = max(cursor, d1)
    if cursor < end_ms:
        out.append((cursor, end_ms))
    return out


def _or_filters(tag: str, values: Iterable[str]) -> list[str]:
    """``(tag = 'a' OR ...)`` clauses, a hundred values each."""
    ordered = sorted(values)
    return [
        "(" + " OR ".join(f"{tag} = {quote(v)}" for v in ordered[i : i + 100]) + ")"
        for i in range(0, len(ordered), 100)
    ]


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
        *,
        use_rollups: bool = True,
    ) -> None:
        self.reader = reader
        self.use_rollups = use_rollups
        self.units = units
        self.scope = scope_where
        self.zone = zone
        # The health results live in the long-term policy; raw telemetry stays in the default one.
        self.state = qualified(Measurement.UNIT_STATE, retention_policy)
        self.event = qualified(Measurement.UNIT_EVENT, retention_policy)
        self.minutes = qualified(Measurement.TELEMETRY_1M, retention_policy)
        self.day = qualified(Measurement.UNIT_DAY, retention_policy)

    def _where(self, start_ms: int, end_ms: int, extra: str = "") -> str:
        where = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms{self.scope}"
        return f"{where} AND {extra}" if extra else where

    def _rollups(
        self, period: Period, *, detail: bool
    ) -> tuple[dict[str, set[tuple[int, int]]], list[list[Any]]]:
        """The daily rollups inside ``period``: per hospital the days rolled up whole, and their unit rows.

        A day counts only where its hospital's marker is (the whole day was written) and it lies inside the
        period (a hospital in another zone than the report's has a day at each end that is not). Of two
        points for one unit and day (a changed offset), the newest is kept. Rows are the raw value lists in
        :data:`_DAY_COLUMNS` order (``detail``: with oxygen and maintenance): at 20,000 units a month is
        600,000 rows, and a dict per row was most of a report's time (profiled).
        """
        if not self.use_rollups:
            return {}, []
        columns = _DAY_COLUMNS + (_DAY_DETAIL if detail else ())
        answer = self.reader.raw(
            f"SELECT {', '.join(f'{c}' for c in columns)} FROM {self.day} "  # noqa: S608 - ints, escaped literals
            f"WHERE {self._where(period.start_ms - _DAY_MS, period.end_ms + _DAY_MS)} GROUP BY {Tag.HOSPITAL}"
        )
        covered: dict[str, set[tuple[int, int]]] = {}
        newest: dict[tuple[str, str, int], list[Any]] = {}
        first, last, units = period.start_ms, period.end_ms, self.units
        for result in answer.get("results", [])[:1]:
            for series in result.get("series", []):
                hospital = str(series.get("tags", {}).get(Tag.HOSPITAL))
                if series["columns"][1:] != list(columns):
                    raise ValueError(f"unexpected unit_day columns {series['columns']}")
                for v in series.get("values", []):
                    # v: time, unit id, day start, day end, written, units (marker), seconds..., detail...
                    start, end = v[2], v[3]
                    if start is None or end is None or start < first or end > last or end <= start:
                        continue
                    if v[5] is not None:
                        covered.setdefault(hospital, set()).add((start, end))
                    elif v[1] in units:
                        key = (hospital, v[1], start)
                        old = newest.get(key)
                        if old is None or (v[4] or 0) > (old[4] or 0):
                            newest[key] = v
        used = [v for (h, _, start), v in newest.items() if (start, v[3]) in covered.get(h, ())]
        return covered, used

    def totals(self, period: Period, *, detail: bool = True) -> Totals:
        """Seconds per state, the last maintenance flag and oxygen per unit over the period.

        From the daily rollups where a hospital's day has one, from the minutes (``unit_state``,
        ``telemetry_1m``) for the rest of the period: the same sums either way. Without ``detail`` (the
        previous month) the rollups' oxygen and maintenance flags are not read.
        """
        out = Totals()
        covered, used = self._rollups(period, detail=detail)
        n = len(STATES)
        sums: dict[str, list[float]] = {}
        for v in used:
            acc = sums.get(v[1])
            if acc is None:
                acc = sums[v[1]] = [0.0] * n
            for k in range(n):
                acc[k] += v[6 + k] or 0.0
            if detail:
                out.add_oxygen(v[1], v[6 + n], v[7 + n])
                if v[9 + n] is not None:
                    out.flag(v[1], int(v[9 + n]), bool(v[8 + n]))
        out.seconds = {uid: dict(zip(STATES, acc, strict=True)) for uid, acc in sums.items()}
        out.rolled_days = len(used)
        # The rest of the period per hospital; hospitals sharing the same rest are read together.
        hospitals = {u.hospital for u in self.units.values()} | set(covered)
        groups: dict[tuple[tuple[int, int], ...], set[str]] = {}
        for hospital in hospitals:
            rest = _uncovered(period.start_ms, period.end_ms, covered.get(hospital, set()))
            groups.setdefault(tuple(rest), set()).add(hospital)
        for intervals, members in groups.items():
            # One group: no hospital filter (the scope's own), as without rollups.
            filters = [""] if len(groups) == 1 else _or_filters(Tag.HOSPITAL, members)
            for start, end in intervals:
                for extra in filters:
                    self._minutes(start, end, extra, out)
        return out

    def _minutes(self, start_ms: int, end_ms: int, extra: str, out: Totals) -> None:
        """Add the stored minutes of ``[start_ms, end_ms)`` (states, flag, oxygen) to ``out``."""
        sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
        where = self._where(start_ms, end_ms, extra)
        answer = self.reader.raw(
            f"SELECT {sums} FROM {self.state} WHERE {where} GROUP BY {Tag.UNIT_ID}; "  # noqa: S608
            f"SELECT last({StateField.MAINTENANCE_DUE}) AS due FROM {self.state} WHERE {where} "
            f"GROUP BY {Tag.UNIT_ID}; "
            f"SELECT sum({OxygenField.LITRES}) AS litres, sum({OxygenField.READINGS}) AS n FROM {self.minutes} "
            f"WHERE {where} GROUP BY {Tag.UNIT_ID}"
        )
        for i, result in enumerate(answer.get("results", [])):
            for series in result.get("series", []):
                uid = series.get("tags", {}).get(Tag.UNIT_ID)
                if uid not in self.units:
                    continue
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    if i == 0:
                        booked = out.seconds.setdefault(uid, dict.fromkeys(STATES, 0.0))
                        for s in STATES:
                            booked[s] += float(row.get(s) or 0.0)
                    elif i == 1 and row.get("due") is not None:
                        out.flag(uid, int(row["time"]), bool(row["due"]))
                    elif i == 2:
                        out.add_oxygen(uid, row.get("litres"), row.get("n"))

    def state_sums(self, period: Period, totals: Totals) -> dict[str, dict[str, float]]:
        """Seconds per state per unit over the period, from its commissioning on."""
        seconds = {uid: dict(v) for uid, v in totals.seconds.items()}
        sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
        # Units commissioned inside the period: book only from their commissioning (hourly detail for
        # them, from the minutes: they are few, and their first day is not a whole day).
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
        return seconds

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
        """Ten-minute mean purity of the plotted units while delivering (standby air is not product).

        From the per-minute aggregates (minutes in which every reading delivered flow), not raw readings:
        they outlive the raw retention, so a report of any month has its chart, and a month of them is a
        tenth of the points (one per minute instead of one per reading).
        """
        out: dict[str, list[float]] = {uid: [] for uid in unit_ids}
        purity, flow = aggregate_field("purity_pct", "mean"), aggregate_field("flow_lpm", "min")
        for clause in _id_filters(out):
            for row in self.reader.rows(
                f"SELECT mean({purity}) AS p FROM {self.minutes} "  # noqa: S608
                f"WHERE {self._where(period.start_ms, period.end_ms, f'{clause} AND {flow} > 0')} "
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
    rollups: bool = True,
) -> MonthData:
    """Read one report's data: this month and the previous one, over ``units`` (the scope).

    ``retention_policy`` is where the health results live (``store.retention.results_policy``).
    ``rollups=False`` reads every minute even where a daily rollup exists (to check they agree).
    """
    scope = ""
    if hospital:
        scope += f" AND {Tag.HOSPITAL} = {quote(hospital)}"
    if province:
        scope += f" AND {Tag.PROVINCE} = {quote(province)}"
    q = _Reader(reader, units, scope, period.zone, retention_policy, use_rollups=rollups)
    data = MonthData()
    now, before = q.totals(period), q.totals(period.previous(), detail=False)
    data.seconds = q.state_sums(period, now)
    data.maintenance_due = {uid: due for uid, (_, due) in now.flags.items()}
    data.prev_seconds = q.state_sums(period.previous(), before)
    data.litres, data.readings = now.litres, now.readings
    data.rolled_days = now.rolled_days + before.rolled_days
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
