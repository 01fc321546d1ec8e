"""The health engine: reads telemetry with InfluxQL, classifies every inventory unit, writes the results.

Every cycle (default 15 s) it re-evaluates a trailing window (default 15 min) for all units and writes
``unit_state`` (one point per unit per complete minute) and ``unit_event`` (one point per transition).
Writes are idempotent (same series and time overwrite), so re-evaluating a window that received late
readings simply corrects it, and a restart loses nothing: the state in force before the window is read
back from ``unit_state``. Long ranges (``oxyfleet health --once --since 7d``) are evaluated in slices that
overlap by more than the sustain window, so a condition spanning two slices is booked from its start.

The engine holds no state that cannot be rebuilt from InfluxDB; it is one process per fleet.

Long module: the cycle, the window splice, the reading cache and the late-data re-evaluation share the
engine's caches, and splitting them across modules would only pass those caches around; the pure rules
(:mod:`health.rules`), the result types (:mod:`health.model`) and uptime (:mod:`health.uptime`) live apart.
"""

from __future__ import annotations

import bisect
import functools
import gc
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import structlog

from core.errors import SinkError, SinkFatalError
from core.inventory_watch import InventoryWatcher
from health.aggregates import aggregate_lines, minute_lines
from health.model import Evaluation, UnitStatus
from health.rules import (
    MINUTE_MS,
    NEVER,
    Condition,
    Segment,
    accounting_start,
    classify,
    minutes,
    raw_segments,
    sustain,
    transitions,
    whole_minute,
)
from health.status import latest_rows
from store.lineproto import escape_tag, field_set, line, tag_set
from store.schema import (
    AGGREGATED,
    LATE_AFTER_MS,
    LATE_MARKER_WINDOW_MS,
    STATES,
    UNIT_TAGS,
    EventField,
    HistoryField,
    LateField,
    Measurement,
    State,
    StateField,
    StatusField,
    Tag,
    aggregate_field,
    qualified,
    seconds_field,
)

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from pathlib import Path

    from devices.inventory import Inventory, Unit
    from store.reader import InfluxQL
    from store.writer import InfluxSink

__all__ = ["Evaluation", "HealthEngine", "UnitStatus"]

log = structlog.get_logger("health.engine")

# The readings the rules look at (a field a kind lacks reads as null). The DOCS plants' own fields are asked
# only when the inventory has plants: InfluxDB 1.x opens a cursor per series and field, so every field
# asked costs time for every unit, whether the unit sends it or not.
_FIELDS: Final = "purity_pct, flow_lpm, setpoint_lpm, outlet_kpa, temp_c, running, power, alarms, run_hours"
_DOCS_FIELDS: Final = "product_flow_lpm, product_kpa, compressor_temp_c, dew_point_c"
_NS_PER_MS: Final = 1_000_000
_SLICE_MS: Final = 3600_000
# Ranges at least this long are read as two concurrent time slices (see :meth:`HealthEngine._readings`).
_SPLIT_MS: Final = 3 * 60_000
# How much of the older minutes after a first start ever is read per cycle (see HealthEngine.book_older).
_OLDER_STEP_MS: Final = 6 * 60_000


# (time ms, condition, run hours, purity, flow, outlet pressure): the last three for the minute aggregates.
Reading = tuple[int, Condition, float | None, float | None, float | None, float | None]


def _reading(row: dict[str, Any], spec: Any) -> Reading:  # noqa: ANN401 - ModelSpec
    return (
        int(row["time"]),
        classify(row, spec),
        row.get("run_hours"),
        row.get("purity_pct"),
        row.get("flow_lpm"),
        row.get("outlet_kpa"),
    )


def _time(reading: Reading) -> int:
    return reading[0]


@dataclass
class UnitFacts:
    """What the engine knows of each unit beyond the readings in hand, so silence does not erase it.

    ``first``: the first reading ever (nothing is booked before it; the unit is never_connected until
    then); ``last``: the latest reading (the "last reading" of status); ``hours``: the highest run hours
    reported (maintenance stays due through silence).
    """

    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)

    def seen(self, unit_id: str, first_ms: int, last_ms: int, hours: float | None) -> None:
        """Readings from ``first_ms`` to ``last_ms`` (and run hours up to ``hours``) are in hand."""
        known = self.first.get(unit_id)
        if known is None or first_ms < known:
            self.first[unit_id] = first_ms
        if last_ms > self.last.get(unit_id, -1):
            self.last[unit_id] = last_ms
        if hours is not None and hours > self.hours.get(unit_id, -1.0):
            self.hours[unit_id] = hours


def load_facts(
    reader: InfluxQL, before_ms: int | None = None, long_rp: str | None = None, units: set[str] | None = None
) -> UnitFacts:
    """First and last reading and run hours per unit, from telemetry (last ones before ``before_ms``).

    Selectors on several fields return time 0 in InfluxQL, so each field is its own statement, in one
    request; every reading carries at least one of running, purity and flow (the payload contract).
    Raw telemetry expires (90 days by default) while its per-minute aggregates in ``long_rp`` stay, so
    first and last are also read from those: a unit silent for longer is no_data, not never_connected.
    (Run hours are not aggregated: after the raw period the maintenance flag comes from new readings.)
    ``units`` limits the scan to those units (a restarted engine scans only units it has no stored status for).
    """
    only = _unit_filter(units) if units is not None else ""
    where = "" if before_ms is None else f" WHERE time < {int(before_ms)}ms"
    if only:
        where = f"{where} AND {only}" if where else f" WHERE {only}"
    everything = f" WHERE {only}" if only else ""
    probes = ("running", "purity_pct", "flow_lpm")
    minutes = qualified(Measurement.TELEMETRY_1M, long_rp)
    kept = (aggregate_field("purity_pct", "mean"), aggregate_field("flow_lpm", "mean"))
    # Constants and an int only: nothing to inject.
    statements = [
        f"SELECT first({f}) FROM {Measurement.TELEMETRY}{everything} GROUP BY {Tag.UNIT_ID}"  # noqa: S608
        for f in probes
    ]
    statements += [
        f"SELECT last({f}) FROM {Measurement.TELEMETRY}{where} GROUP BY {Tag.UNIT_ID}"  # noqa: S608
        for f in (*probes, "run_hours")
    ]
    statements += [f"SELECT first({f}) FROM {minutes}{everything} GROUP BY {Tag.UNIT_ID}" for f in kept]  # noqa: S608
    statements += [f"SELECT last({f}) FROM {minutes}{where} GROUP BY {Tag.UNIT_ID}" for f in kept]  # noqa: S608
    answer = reader.raw("; ".join(statements))
    facts, older = UnitFacts(), UnitFacts()
    n = len(probes)
    for i, result in enumerate(answer.get("results", [])):
        # Raw readings first; the aggregates (stamped at the minute's start) only for units with none left.
        into = facts if i <= 2 * n else older
        j = i if i <= 2 * n else i - (2 * n + 1)
        for series in result.get("series", []):
            unit_id = series.get("tags", {}).get(Tag.UNIT_ID)
            if not unit_id or not series.get("values"):
                continue
            t, value = series["values"][0][0], series["values"][0][1]
            if j < (n if into is facts else len(kept)):
                into.seen(unit_id, int(t), -1, None)
            elif into is older or j < 2 * n:
                into.last[unit_id] = max(into.last.get(unit_id, -1), int(t))
            elif value is not None:
                facts.hours[unit_id] = float(value)
    for unit_id, first in older.first.items():
        facts.first.setdefault(unit_id, first)
    for unit_id, last in older.last.items():
        facts.last.setdefault(unit_id, last)
    return facts


_STATE_HEAD: Final = escape_tag(Measurement.UNIT_STATE)


def _status_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What :meth:`HealthEngine._status_lines` compares, from a stored ``unit_status`` row."""
    pending = row.get(StatusField.PENDING_STATE) or ""
    last = row.get(StatusField.LAST_READING_MS)
    return (
        int(row["time"]),
        Condition(row[StateField.STATE], row.get(StateField.REASON) or ""),
        None if row.get(StatusField.SINCE_MS) is None else int(row[StatusField.SINCE_MS]),
        bool(row.get(StateField.MAINTENANCE_DUE)),
        Condition(pending, row.get(StatusField.PENDING_REASON) or "") if pending else None,
        None if last is None else int(last) // 60_000,
    )


@functools.lru_cache(maxsize=4096)
def _minute_fields(condition: Condition, seconds: tuple[float, ...], due: bool) -> str:
    """A ``unit_state`` point's fields: the same few combinations for most of the fleet's minutes, so cached."""
    fields: dict[str, object] = {
        StateField.STATE: condition.state,
        StateField.REASON: condition.reason,
        StateField.CODE: condition.code,
        StateField.IN_SPEC: 1 if condition.state == State.IN_SPEC else 0,
        StateField.MAINTENANCE_DUE: due,
    }
    fields.update({seconds_field(state): float(sec) for state, sec in zip(STATES, seconds, strict=True)})
    return field_set(fields)


def _unit_filter(units: set[str]) -> str:
    """An InfluxQL condition matching these units (inventory ids match ``^[A-Za-z0-9][A-Za-z0-9_.-]*$``)."""
    return "(" + " OR ".join(f"{Tag.UNIT_ID} = '{u}'" for u in sorted(units)) + ")"


@functools.lru_cache(maxsize=200_000)
def _tags(unit: Unit) -> str:
    values = (unit.hospital, unit.kind, unit.model, unit.province, unit.unit_id)
    return tag_set(dict(zip(UNIT_TAGS, values, strict=True)))


def _tags_at(inventory: Inventory, unit: Unit, at_ms: int) -> str:
    """The tags of ``unit`` as its inventory assignment stood at ``at_ms`` (one lookup when it never moved)."""
    if unit.unit_id not in inventory.history:
        return _tags(unit)
    return _tags(inventory.at(unit.unit_id, at_ms) or unit)


class HealthEngine:
    """Evaluates the fleet; ``run`` loops, ``evaluate_range`` does one (possibly long) range."""

    def __init__(
        self,
        reader: InfluxQL,
        sink: InfluxSink | None,
        inventory_path: Path,
        *,
        sustain_s: float = 120.0,
        lookback_s: float = 900.0,
        cycle_s: float = 15.0,
        clock: Any = time.time,  # noqa: ANN401 - a () -> float clock
        on_change: Callable[[UnitStatus, Condition, int], None] | None = None,
        on_history: Callable[[Unit, Condition, int, int, int], None] | None = None,
        long_rp: str | None = None,
    ) -> None:
        self.reader = reader
        self.sink = sink
        self.inventory_path = inventory_path
        # Looked at once per cycle, by the same rule as the ingester's (keep the previous one on errors).
        self._inventory = InventoryWatcher(inventory_path, 0.0, events="health")
        self.sustain_ms = round(sustain_s * 1000)
        self.lookback_ms = round(lookback_s * 1000)
        self.cycle_s = cycle_s
        self.clock = clock
        self.last_status: dict[str, UnitStatus] = {}
        # Called for every change of a unit's current state (never on the first cycle): the service wires
        # it to the alerter, so the engine knows nothing of MQTT or webhooks.
        self.on_change = on_change
        # Called once per fault found inside a late upload (unit, condition, start, end, now).
        self.on_history = on_history
        # Called after each good cycle with (now, the late work's spans: unit -> (first, last) late reading):
        # the daily rollups (health.rollup) redo the days those re-evaluations changed.
        self.on_cycle: Callable[[int, dict[str, tuple[int, int]]], None] | None = None
        self._status_written: dict[str, tuple[Any, ...]] = {}
        # The retention policy the engine's results (and ``sink``'s writes) live in; None: the default.
        self.long_rp = long_rp
        self._aggregated_until: int | None = None
        self._late_checked_ms: int | None = None
        self._cache: dict[str, list[Reading]] = {}
        self._cache_until: int | None = None
        self._segments: dict[str, list[Segment]] = {}
        self._written: dict[str, dict[int, Any]] = {}
        self.facts = UnitFacts()
        self._facts_loaded = False
        # After a restart: the minute from which the window is evaluated again from raw readings (what the
        # previous engine stored before it is final), and what the first cycle resumes from there.
        self._resume_from = 0
        self._resume_priors: dict[str, Condition] | None = None
        self._resume_heads: dict[str, Segment] = {}
        # Ranges at least this long are read as two concurrent time slices (None: always one query).
        self.split_ms: int | None = _SPLIT_MS
        # After a first start ever: the window's minutes before the resume point, still to be booked.
        self._older: _Older | None = None
        self._kinds_of: Inventory | None = None  # the inventory ``_docs`` was computed for
        self._collected_at = time.monotonic()
        self._tag_sets: dict[
            str, tuple[Unit, str]
        ] = {}  # the last full garbage collection (see :meth:`cycle`)
        self._docs = True
        # The earliest minute of a cycle whose write failed: the next cycle re-evaluates from there.
        self._unconfirmed_from: int | None = None
        self.cycles = 0
        self.last_cycle_at = 0.0  # engine clock, seconds
        self.last_cycle_ms = 0.0
        # Current state per unit as of the last cycle; alerts fire when it changes (never on the first cycle).
        self.current: dict[str, Condition] = {}

    @property
    def inventory(self) -> Inventory:
        """The inventory in force (reloaded at the start of a cycle when its file changed)."""
        return self._inventory.inventory

    def _results(self, measurement: Measurement) -> str:
        """One of the engine's own measurements in InfluxQL, under the policy it writes them to."""
        return qualified(measurement, self.long_rp)

    def _resume(self, start: int, now_ms: int) -> None:
        """Pick up from what an earlier engine stored instead of re-reading the fleet's whole history.

        ``unit_status`` holds each unit's state, since, first and last reading and run hours; the stored
        ``unit_state`` minutes are final up to where the earlier engine stopped re-evaluating (its last
        minute minus the late margin, the sustain window and two no-data limits). So the first cycle reads
        raw telemetry only from there, takes each unit's state at that point from its status (or from the
        first transition stored after it), and scans telemetry history only for units without a stored
        status. A first start ever, or one after the engine was down longer than the window, evaluates
        the whole window as before.
        """
        stored = self.reader.rows(
            f"SELECT last({StateField.STATE}) FROM {self._results(Measurement.UNIT_STATE)}"  # noqa: S608
        )
        last_minute = int(stored[0]["time"]) if stored else None
        # The late-upload checkpoint starts where the stored results end (read here once for both).
        self._late_checked_ms = last_minute if last_minute is not None else now_ms - self.lookback_ms
        if last_minute is None:
            # A first start ever: nothing is stored, so it resumes from the same point a restart would and
            # books the window's older minutes afterwards, a slice per cycle (:meth:`book_older`). The scan
            # of telemetry history waits too, except for units silent since that point (see _cycle).
            final = now_ms - LATE_AFTER_MS - self.sustain_ms - 2 * self.pad_ms
            final -= final % MINUTE_MS
            if final > start:
                self._resume_from = final
                self._resume_priors = {}
                self._older = _Older(start, final, start)
                return
        rows = latest_rows(self.reader, now_ms, self.long_rp) if last_minute is not None else {}
        self.facts = self._stored_facts(rows)
        if last_minute is None:
            return
        # The earlier engine's last cycle was no earlier than the end of its last minute, nor than the last
        # status it wrote; what it could still have changed then starts the late margin, the sustain window
        # and two no-data limits before. Never later than this engine's clock (results stored by `--once`
        # may reach past it).
        stopped = max(
            [last_minute + MINUTE_MS, *(int(r.get(StatusField.UPDATED_MS) or 0) for r in rows.values())]
        )
        final = min(stopped, now_ms) - LATE_AFTER_MS - self.sustain_ms - 2 * self.pad_ms
        final -= final % MINUTE_MS
        if final <= start:
            return  # down longer than the window: evaluate it whole, priors from unit_state
        self._resume_from = final
        self._resume_at(final, now_ms, rows)

    def _stored_facts(self, rows: dict[str, dict[str, Any]]) -> UnitFacts:
        """First and last reading and run hours from the stored status; telemetry scanned only for the rest."""
        facts, scan = UnitFacts(), set()
        for unit_id in self.inventory.units:
            row = rows.get(unit_id)
            first = None if row is None else row.get(StatusField.FIRST_READING_MS)
            if row is None or first is None:
                scan.add(unit_id)  # never reported, or stored by an engine that did not keep these
                continue
            facts.first[unit_id] = int(first)
            if row.get(StatusField.LAST_READING_MS) is not None:
                facts.last[unit_id] = int(row[StatusField.LAST_READING_MS])
            if row.get(StatusField.RUN_HOURS) is not None:
                facts.hours[unit_id] = float(row[StatusField.RUN_HOURS])
        if scan:
            # Unit filters go in the URL: beyond a few hundred units one unfiltered scan is cheaper anyway.
            found = load_facts(self.reader, long_rp=self.long_rp, units=scan if len(scan) <= 500 else None)
            facts.first.update({u: v for u, v in found.first.items() if u in scan})
            facts.last.update({u: v for u, v in found.last.items() if u in scan})
            facts.hours.update({u: v for u, v in found.hours.items() if u in scan})
        return facts

    def _scan_hours(self, units: set[str]) -> None:
        """The last run hours ever reported by ``units`` (the one part of a history scan a start needs)."""
        if not units:
            return
        only = f" WHERE {_unit_filter(units)}" if len(units) <= 500 else ""
        rows = self.reader.rows(
            f"SELECT last(run_hours) FROM {Measurement.TELEMETRY}{only} GROUP BY {Tag.UNIT_ID}"  # noqa: S608 - inventory ids
        )
        hours = self.facts.hours
        for row in rows:
            unit_id, value = row.get(Tag.UNIT_ID), row.get("last")
            if unit_id in units and value is not None:
                hours[unit_id] = max(hours.get(unit_id, float(value)), float(value))
                self._status_written.pop(unit_id, None)

    def _merge_facts(self, found: UnitFacts, units: set[str] | None) -> None:
        """Add what a history scan found (for ``units``; None: all) to the facts in hand."""
        facts = self.facts
        for into, scanned, pick in (
            (facts.first, found.first, min),
            (facts.last, found.last, max),
            (facts.hours, found.hours, max),
        ):
            for unit_id, value in scanned.items():
                if units is None or unit_id in units:
                    into[unit_id] = pick(into.get(unit_id, value), value)  # type: ignore[assignment]

    def _resume_at(self, final: int, now_ms: int, rows: dict[str, dict[str, Any]]) -> None:
        """Each unit's state at the resume point ``final``, and since when it held (for its status)."""
        events = self.reader.rows(
            f'SELECT {Tag.UNIT_ID}, "{EventField.FROM}", {EventField.FROM_REASON} '  # noqa: S608 - an int
            f"FROM {self._results(Measurement.UNIT_EVENT)} WHERE time >= {final}ms AND time < {now_ms}ms"
        )
        priors: dict[str, Condition] = {}
        for event in sorted(events, key=lambda r: int(r["time"])):
            # The state before the first transition after the resume point is the state at that point.
            priors.setdefault(
                event[Tag.UNIT_ID], Condition(event[EventField.FROM], event.get(EventField.FROM_REASON) or "")
            )
        missing = set()
        for unit_id in self.inventory.units:
            row = rows.get(unit_id)
            if unit_id in priors:
                continue
            if row is None or row.get(StatusField.SINCE_MS) is None or int(row[StatusField.SINCE_MS]) > final:
                missing.add(unit_id)
                continue
            condition = Condition(row[StateField.STATE], row.get(StateField.REASON) or "")
            priors[unit_id] = condition
            # Its state since then, so the status keeps its "since" across the restart.
            self._resume_heads[unit_id] = Segment(int(row[StatusField.SINCE_MS]), final, condition)
        if missing:
            stored_priors = self.stored_priors(final, missing if len(missing) <= 500 else None)
            priors.update({u: c for u, c in stored_priors.items() if u in missing})
        self._resume_priors = priors
        self._status_written = {u: _status_key(row) for u, row in rows.items()}
        self._stored_minutes(final, now_ms)
        log.info("health.resumed", from_ms=final, units_without_status=len(missing))

    def _stored_minutes(self, from_ms: int, now_ms: int) -> None:
        """Remember the minutes an earlier engine stored after the resume point, so unchanged ones are not rewritten.

        Reading them back costs InfluxDB far less than taking them again (a write of ~11 fields per unit and
        minute, with the cache snapshots and compactions it brings).
        """
        names = [seconds_field(state) for state in STATES]
        rows = self.reader.rows(
            f"SELECT {Tag.UNIT_ID}, {StateField.STATE}, {StateField.REASON}, {StateField.MAINTENANCE_DUE}, "  # noqa: S608 - constants, ints
            f"{', '.join(names)} FROM {self._results(Measurement.UNIT_STATE)} "
            f"WHERE time >= {from_ms}ms AND time < {now_ms}ms"
        )
        conditions: dict[tuple[str, str], Condition] = {}
        for row in rows:
            if not row.get(StateField.STATE):
                continue
            c = (row[StateField.STATE], row.get(StateField.REASON) or "")
            condition = conditions.get(c) or conditions.setdefault(c, Condition(*c))
            seconds = tuple(float(row.get(name) or 0.0) for name in names)
            key = (condition, seconds, bool(row.get(StateField.MAINTENANCE_DUE)))
            self._written.setdefault(row[Tag.UNIT_ID], {})[int(row["time"])] = key

    def _aggregate(self, now_ms: int, late: LateWork) -> None:
        """Write per-minute aggregates for minutes now complete, and again for minutes late uploads changed.

        A minute is aggregated once readings can no longer arrive on time for it (LATE_AFTER_MS); later
        ones come with a late_data marker, and the units concerned are aggregated again over their span.
        Computed from the readings the engine holds anyway (no query); only the part of a late span older
        than the cached window is aggregated by InfluxDB.
        """
        ready = now_ms - LATE_AFTER_MS
        ready -= ready % MINUTE_MS
        since = self._aggregated_until
        if since is None:
            # After a start: resume after the last stored aggregate (within the window); a fleet never
            # aggregated starts now (`oxyfleet health --once --since` aggregates older ranges).
            field = aggregate_field(AGGREGATED[0], "max")
            # Bounded: only the window matters, and last() over all stored minutes reads every shard.
            stored = self.reader.rows(
                f"SELECT last({field}) FROM {self._results(Measurement.TELEMETRY_1M)} "  # noqa: S608 - ints
                f"WHERE time >= {ready - self.lookback_ms}ms"
            )
            last = int(stored[0]["time"]) + MINUTE_MS if stored else ready
            since = min(ready, max(last, ready - self.lookback_ms))
        # Catch up at most a few minutes per cycle (after a start, the whole window is behind), so a start
        # does not cost one cycle several times over.
        ready = min(ready, since + 3 * MINUTE_MS)
        # The cache holds readings from the window's start (after a restart, from the resume point).
        cached_from = max(now_ms - self.lookback_ms, self._resume_from) - self.pad_ms
        cached_from += (-cached_from) % MINUTE_MS
        lines: list[str] = []
        if since < min(cached_from, ready):
            lines += aggregate_lines(self.reader, self.inventory, _tags, since, min(cached_from, ready), None)
        lines += minute_lines(self._cache, self.inventory, _tags, max(since, cached_from), ready)
        if late.spans:
            low = min(a for a, _ in late.spans.values())
            low -= low % MINUTE_MS
            high = min(max(b for _, b in late.spans.values()) + MINUTE_MS, ready)
            units = set(late.spans)
            cache = {u: rows for u, rows in self._cache.items() if u in units}
            lines += minute_lines(cache, self.inventory, _tags, max(low, cached_from), high)
            if low < cached_from:
                lines += aggregate_lines(self.reader, self.inventory, _tags, low, cached_from, units)
        self.write(lines)
        self._aggregated_until = max(since, ready)

    # --- reading -------------------------------------------------------------------------------------

    def _readings(
        self, start_ms: int, end_ms: int, units: set[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        where = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"
        if units is not None:
            # Inventory ids match ^[A-Za-z0-9][A-Za-z0-9_.-]*$, so quoting them is enough.
            where += " AND (" + " OR ".join(f"unit_id = '{u}'" for u in sorted(units)) + ")"
        # unit_id as a column, not GROUP BY unit_id: one series in the answer instead of one per unit
        # made InfluxDB 1.6 answer 40 % faster for 5,000 units (the query is the larger half of a cycle).
        fields = f"{_FIELDS}, {_DOCS_FIELDS}" if self._has_docs() else _FIELDS
        query = f"SELECT {Tag.UNIT_ID}, {fields} FROM {Measurement.TELEMETRY} WHERE "  # noqa: S608
        by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if units is not None or self.split_ms is None or end_ms - start_ms < self.split_ms:
            for row in self.reader.rows(query + where):
                by_unit[row[Tag.UNIT_ID]].append(row)
            return by_unit
        # InfluxDB 1.x answers one query on one core: a long range is asked as two time slices at once, so
        # it uses both, and the first slice is decoded while the second is still being answered. Slices
        # come back in time order, so each unit's rows stay sorted.
        middle = (start_ms + end_ms) // 2
        halves = (
            f"time >= {int(start_ms)}ms AND time < {int(middle)}ms",
            f"time >= {int(middle)}ms AND time < {int(end_ms)}ms",
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(self.reader.rows, query + halves[1])
            for half in (self.reader.rows(query + halves[0]), later.result()):
                for row in half:
                    by_unit[row[Tag.UNIT_ID]].append(row)
        return by_unit

    def _unit_tags(self, unit: Unit) -> str:
        """The unit's current tag set, by id (hashing the whole frozen Unit for a cache costs more)."""
        known = self._tag_sets.get(unit.unit_id)
        if known is not None and known[0] is unit:
            return known[1]
        tags = _tags(unit)
        self._tag_sets[unit.unit_id] = (unit, tags)
        return tags

    def _has_docs(self) -> bool:
        inventory = self.inventory
        if self._kinds_of is not inventory:
            self._kinds_of = inventory
            self._docs = any(u.spec.kind == "docs" for u in inventory.units.values())
        return self._docs

    def stored_priors(self, at_ms: int, units: set[str] | None = None) -> dict[str, Condition]:
        """The effective state each unit had just before ``at_ms``, as stored by earlier evaluations."""
        only = f" AND {_unit_filter(units)}" if units else ""
        rows = self.reader.rows(
            f"SELECT last({StateField.STATE}) AS state, last({StateField.REASON}) AS reason "  # noqa: S608
            f"FROM {self._results(Measurement.UNIT_STATE)} WHERE time < {int(at_ms)}ms AND time >= {int(at_ms) - 2 * 3600_000}ms"
            f"{only} GROUP BY {Tag.UNIT_ID}"
        )
        return {r[Tag.UNIT_ID]: Condition(r["state"], r.get("reason") or "") for r in rows if r.get("state")}

    # --- evaluating ----------------------------------------------------------------------------------

    @property
    def pad_ms(self) -> int:
        """How far before a range readings are needed to know the state at its start."""
        longest = max((u.spec.report_interval_s for u in self.inventory.units.values()), default=10)
        return round(max(longest * 3, 60) * 1000)

    def fetch(self, start_ms: int, end_ms: int, units: set[str] | None = None) -> dict[str, list[Reading]]:
        """Classified readings per inventory unit, time-sorted: ``(time_ms, condition, run_hours)``."""
        out: dict[str, list[Reading]] = {}
        for unit_id, rows in self._readings(start_ms, end_ms, units).items():
            unit = self.inventory.units.get(unit_id)
            if unit is not None:
                out[unit_id] = sorted((_reading(r, unit.spec) for r in rows), key=_time)
        return out

    def evaluate(  # noqa: C901, PLR0912, PLR0915 - one pass per unit: timeline, minutes, events, status
        self,
        start_ms: int,
        end_ms: int,
        *,
        write_from_ms: int | None = None,
        priors: dict[str, Condition] | None = None,
        units: set[str] | None = None,
        readings: dict[str, list[Reading]] | None = None,
        only_changes: bool = False,
        facts: UnitFacts | None = None,
    ) -> Evaluation:
        """Evaluate every inventory unit over ``[start_ms, end_ms)``; build lines for ``[write_from_ms, end_ms)``.

        ``readings`` may come from the engine's cache (cycles) instead of a query; ``only_changes`` skips
        lines identical to what this engine already wrote (cycles rewrite a 15-minute window every 15 s,
        and almost all of it is unchanged); what it wrote is remembered only once the write succeeded
        (:meth:`confirm`). ``facts`` carries each unit's first reading, last reading and run hours through
        ranges without readings (the engine's own for cycles).
        """
        write_from = start_ms if write_from_ms is None else write_from_ms
        priors = self.stored_priors(start_ms) if priors is None else priors
        facts = self.facts if facts is None else facts
        if readings is None:
            readings = self.fetch(start_ms - self.pad_ms, end_ms, units)
        result = Evaluation(start_ms, end_ms)
        for unit in self.inventory.units.values():
            if units is not None and unit.unit_id not in units:
                continue
            uid = unit.unit_id
            rows = readings.get(uid, [])
            if rows:
                facts.seen(
                    uid, rows[0][0], rows[-1][0], max((r[2] for r in rows if r[2] is not None), default=None)
                )
            begin, first = accounting_start(unit.commissioned_ms, facts.first.get(uid), start_ms, end_ms)
            if begin >= end_ms:
                continue  # not commissioned yet: nothing to book, nothing to show
            prior = priors.get(uid)
            if prior is not None and prior.state == State.NEVER_CONNECTED and first < end_ms:
                prior = None  # its first readings arrived (late): nothing is known before them
            if first > start_ms:
                prior = None if first < end_ms else prior
            interval_ms = round(unit.spec.report_interval_s * 1000)
            raw = (
                raw_segments(rows, first, end_ms, interval_ms, max(3 * interval_ms, 60_000))
                if first < end_ms
                else []
            )
            segments = sustain(raw, self.sustain_ms, prior)
            if first > begin:
                segments = [Segment(begin, first, NEVER), *segments]
            result.segments[uid] = segments
            hours = facts.hours.get(uid)
            due = hours is not None and hours - unit.last_service_run_hours >= unit.spec.service_interval_h
            tags = self._unit_tags(unit)
            # A unit moved between hospitals (inventory rows with valid_from, issue 19): each minute and
            # event is booked under the assignment in force then, so per-hospital uptime follows the move.
            moved = uid in self.inventory.history
            written = self._written.get(uid, {}) if only_changes else None
            confirm: dict[int, object] = {}
            for minute in minutes(segments, max(write_from, begin), end_ms):
                seconds = tuple(minute.seconds.values())
                if written is not None:
                    key = (minute.condition, seconds, due)
                    if written.get(minute.start_ms) == key:
                        continue
                    confirm[minute.start_ms] = key
                booked = _tags_at(self.inventory, unit, minute.start_ms) if moved else tags
                body = _minute_fields(minute.condition, seconds, due)
                result.lines.append(f"{_STATE_HEAD},{booked} {body} {minute.start_ms * _NS_PER_MS}")
            for change in transitions(segments, prior):
                if change.at_ms < write_from:
                    continue
                result.events.add((uid, change.at_ms))
                event = line(
                    Measurement.UNIT_EVENT,
                    _tags_at(self.inventory, unit, change.at_ms) if moved else tags,
                    {
                        EventField.FROM: change.before.state,
                        EventField.TO: change.after.state,
                        EventField.FROM_REASON: change.before.reason,
                        EventField.REASON: change.after.reason,
                        EventField.CODE: change.after.code,
                    },
                    change.at_ms * _NS_PER_MS,
                )
                if written is not None:
                    if written.get(-change.at_ms) == event:
                        continue
                    confirm[-change.at_ms] = event  # events keyed by negative time, beside the minutes
                result.lines.append(event)
            if written is not None:
                result.written[uid] = confirm
            if segments:
                last = segments[-1]
                pending = raw[-1].condition if raw and raw[-1].condition != last.condition else None
                result.status[uid] = UnitStatus(
                    unit, last.condition, last.start_ms, facts.last.get(uid), due, pending
                )
        return result

    def confirm(self, evaluation: Evaluation) -> None:
        """InfluxDB accepted ``evaluation``'s lines: remember them so later cycles skip what is unchanged."""
        for uid, entries in evaluation.written.items():
            written = self._written.setdefault(uid, {})
            written.update(entries)
            for stale in [k for k in written if abs(k) < evaluation.start_ms]:
                del written[stale]

    def write(self, lines: list[str]) -> int:
        """Write result lines (idempotent); returns how many the server refused."""
        if self.sink is None or not lines:
            return 0
        refused = 0
        for i in range(0, len(lines), 5000):
            refused += len(self.sink.write(lines[i : i + 5000]).rejected)
        if refused:
            log.error("health.points_refused", count=refused)
        return refused

    def evaluate_range(
        self,
        start_ms: int,
        end_ms: int,
        units: set[str] | None = None,
        progress: Callable[[int], None] | None = None,
        *,
        collect: dict[str, list[Segment]] | None = None,
    ) -> Evaluation:
        """Evaluate and write a long range in one-hour slices; ``progress(ms_done)`` after each slice.

        Each slice starts ``overlap`` (sustain window + 5 min) before the part the previous slice already
        covered, takes the state the previous slice had there as its prior, and rewrites the overlap:
        minutes near a slice's end can hold a pending condition (too short to judge yet), and only the
        next slice knows whether it lasted. The first slice likewise starts ``overlap`` before
        ``start_ms`` with the stored state as prior, so a restart corrects what the previous run left
        pending; when nothing is stored yet, writing starts at ``start_ms``. First and last readings and
        run hours come from telemetry before the range and are carried from slice to slice, so a silent
        slice keeps its maintenance flag. ``collect`` receives each unit's whole timeline (late-upload
        history looks for faults in it).
        """
        overlap = self.sustain_ms + 5 * MINUTE_MS
        start_ms -= start_ms % MINUTE_MS
        begin = start_ms - overlap
        priors = self.stored_priors(begin)
        if units is not None:
            priors = {u: c for u, c in priors.items() if u in units}
        write_from = begin if priors else start_ms
        if not priors:
            begin = start_ms
        facts = load_facts(self.reader, begin, self.long_rp)
        evaluation = Evaluation(start_ms, start_ms)
        cursor = start_ms
        while cursor < end_ms:
            stop = min(cursor + _SLICE_MS, end_ms)
            if evaluation.segments:
                begin = write_from = cursor - overlap
                priors = {u: _condition_at(segs, begin) for u, segs in evaluation.segments.items() if segs}
            evaluation = self.evaluate(
                begin, stop, write_from_ms=write_from, priors=priors, units=units, facts=facts
            )
            self.write(evaluation.lines)
            if self.sink is not None:
                self.write(
                    aggregate_lines(self.reader, self.inventory, _tags, max(cursor, start_ms), stop, units)
                )
            self._drop_stale_events(evaluation, write_from, stop, units)
            if collect is not None:
                for unit_id, segs in evaluation.segments.items():
                    head = [
                        Segment(g.start_ms, min(g.end_ms, begin), g.condition)
                        for g in collect.get(unit_id, [])
                        if g.start_ms < begin
                    ]
                    collect[unit_id] = _splice(head, segs)
            cursor = stop
            if progress is not None:
                progress(stop - start_ms)
        if units is None:
            self.last_status = evaluation.status
        return evaluation

    def cycle(self) -> Evaluation:
        """One cycle: refresh the cached readings, re-evaluate the trailing window up to now, write changes.

        Nothing the engine remembers about what is stored (the written-lines cache, the late-upload
        checkpoint, the status cache) moves before InfluxDB confirmed the write: after a failed write the
        next cycle re-evaluates the whole window and writes what was lost.

        The cyclic garbage collector is held off during a cycle and what the cycle made is frozen after it:
        at 20,000 units the reading cache is millions of objects that hold no reference cycles (they are
        freed by reference counting), and the collector's full passes over them cost a fifth of a cycle.
        Once an hour everything is unfrozen and collected, so cyclic garbage of other threads that was
        frozen meanwhile is not kept for good.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._cycle()
        finally:
            if time.monotonic() - self._collected_at >= 3600:
                gc.unfreeze()
                gc.collect()
                self._collected_at = time.monotonic()
            # A cycle leaves a few dozen unreachable objects at most (measured at 2,000 units): frozen with
            # the rest until the hourly collection rather than paying a pass over the cycle's survivors.
            gc.freeze()
            if enabled:
                gc.enable()

    def _cycle(self) -> Evaluation:
        self._inventory.refresh()
        now_ms = int(self.clock() * 1000)
        start = now_ms - self.lookback_ms
        start -= start % MINUTE_MS
        started = time.perf_counter()
        if not self._facts_loaded:
            self._resume(start, now_ms)
            self._facts_loaded = True
        start = max(start, self._resume_from)
        late = self._reevaluate_late(start, now_ms)
        changed_from = self._refresh_cache(start - self.pad_ms, now_ms, late.refetch)
        if self._older is not None and self._older.facts_pending and not self._segments:
            # A first start ever: units that reported since the resume point show first, last reading and
            # run hours in what was just read; history is scanned now only for the silent ones.
            silent = {u for u in self.inventory.units if not self._cache.get(u)}
            if silent:
                self._merge_facts(
                    load_facts(
                        self.reader, long_rp=self.long_rp, units=silent if len(silent) <= 500 else None
                    ),
                    silent,
                )
        evaluation = self._evaluate_window(start, now_ms, changed_from, late)
        status_lines, status_keys = self._status_lines(evaluation, now_ms)
        try:
            refused = self.write(evaluation.lines + status_lines)
        except SinkError:
            self._unconfirmed_from = start
            raise
        self.confirm(evaluation)
        if late.refetch:
            self._drop_stale_events(evaluation, start, now_ms, late.refetch)
        self._status_written.update(status_keys)
        self._unconfirmed_from = None
        self._history(late, evaluation, now_ms)
        if self.sink is not None:
            self._aggregate(now_ms, late)
        self._late_checked_ms = late.checked_to
        if self.on_cycle is not None:
            self.on_cycle(now_ms, late.spans)
        self.last_status = evaluation.status
        self._alert(evaluation, now_ms)
        self.cycles += 1
        self.last_cycle_at = now_ms / 1000
        self.last_cycle_ms = round((time.perf_counter() - started) * 1000, 1)
        counts = evaluation.state_counts()
        log.info(
            "health.cycle",
            units=len(evaluation.status),
            points=len(evaluation.lines),
            refused=refused,
            ms=self.last_cycle_ms,
            **counts,
        )
        return evaluation

    @property
    def booking_older(self) -> bool:
        """Whether minutes of the window before a first start's resume point are still to be booked."""
        return self._older is not None

    def book_older(self) -> Evaluation | None:  # noqa: C901, PLR0912 - one slice: readings, evaluation, seam
        """Book the next slice of the minutes a first start ever left behind its resume point.

        A first start evaluates only from where a restart would resume (about 5 minutes back), so its
        status comes within a cycle; the rest of the window is read and booked here, ``_OLDER_STEP_MS`` of
        readings per call, carrying each unit's timeline and its last readings from slice to slice (a
        slice re-evaluates from the sustain window and two no-data limits before its start, as steady
        cycles do, so a condition spanning two slices is booked from its start). The last slice runs on
        into the live window with the engine's cached readings, so the state at the resume point follows
        from the minutes before it: a condition that began before it is booked from its start and a
        transition at the seam is written, while one that never happened is deleted. Nothing here alerts
        (the live cycles did, and the units' current states are taken over silently). A failed write is
        retried by the next call.
        """
        older = self._older
        if older is None:
            return None
        now_ms = self._cache_until or older.end
        if older.facts_pending:
            # First the run hours of units whose readings in hand carry none (firmware may send them
            # seldom), so maintenance stays due; their statuses are written again with them.
            self._scan_hours({u for u in self.inventory.units if u not in self.facts.hours})
            older.facts_pending = False
            return Evaluation(now_ms, now_ms)
        stop = min(older.cursor + _OLDER_STEP_MS, older.end)
        pad = self.pad_ms  # a pass over the inventory: once, not per unit
        fetch_from = older.cursor - (pad if older.cursor == older.start else 0)
        fresh = self.fetch(fetch_from, stop)
        if older.segments:
            begin = older.cursor - self.sustain_ms - 2 * pad
            begin = max(older.start, begin - begin % MINUTE_MS)
            priors = {u: _condition_at(segs, begin) for u, segs in older.segments.items() if segs}
        else:
            begin, priors = older.start, {}
        last = stop == older.end
        readings: dict[str, list[Reading]] = {}
        for unit_id in set(older.readings) | set(fresh):
            kept = older.readings.get(unit_id, [])
            rows = kept[bisect.bisect_left(kept, begin - pad, key=_time) :] + fresh.get(unit_id, [])
            if last:
                live = self._cache.get(unit_id, [])
                rows += live[bisect.bisect_left(live, older.end, key=_time) :]
            readings[unit_id] = rows
        if last:
            for unit_id, live in self._cache.items():
                readings.setdefault(unit_id, live[bisect.bisect_left(live, older.end, key=_time) :])
        end = max(now_ms, older.end) if last else stop
        evaluation = self.evaluate(
            begin, end, write_from_ms=begin, priors=priors, readings=readings, only_changes=True
        )
        for unit_id, segs in evaluation.segments.items():
            # Each unit's timeline from the older range's start, so a status keeps its "since".
            head = [
                Segment(g.start_ms, min(g.end_ms, begin), g.condition)
                for g in older.segments.get(unit_id, [])
                if g.start_ms < begin
            ]
            evaluation.segments[unit_id] = spliced = _splice(head, segs)
            status = evaluation.status.get(unit_id)
            if status is not None and spliced:
                evaluation.status[unit_id] = replace(status, since_ms=spliced[-1].start_ms)
        status_lines, status_keys = self._status_lines(evaluation, now_ms) if last else ([], {})
        self.write(evaluation.lines + status_lines)
        self.confirm(evaluation)
        self._drop_stale_events(evaluation, begin, end, None)
        if not last:
            older.cursor, older.readings, older.segments = stop, readings, evaluation.segments
            return evaluation
        # The live window from here on goes on from this timeline; the statuses it changed are written,
        # and the units' current states are taken over silently (no alert: nothing changed now).
        self._status_written.update(status_keys)
        self._segments.update(evaluation.segments)
        self.last_status.update(evaluation.status)
        for unit_id, status in evaluation.status.items():
            if unit_id in self.current:
                self.current[unit_id] = status.condition
        self._older = None
        log.info("health.older_minutes_booked", from_ms=older.start, to_ms=older.end)
        return evaluation

    def _drop_stale_events(
        self, evaluation: Evaluation, from_ms: int, to_ms: int, units: set[str] | None
    ) -> None:
        """Delete stored transitions in ``[from_ms, to_ms)`` that a re-evaluation no longer finds.

        A unit silent while its readings waited in a broker or a device buffer got an in_spec -> no_data
        event live; once the readings are in, the state never changed, and the event must go (overwriting
        cannot remove a point). InfluxQL DELETE exists in InfluxDB 1.x only; on 2.x and 3 Core the stale
        event stays and a warning says so.
        """
        if self.sink is None or to_ms <= from_ms or (units is not None and not units):
            return
        where = f"time >= {int(from_ms)}ms AND time < {int(to_ms)}ms"
        if units is not None:
            where += " AND (" + " OR ".join(f"{Tag.UNIT_ID} = '{u}'" for u in sorted(units)) + ")"
        rows = self.reader.rows(
            f"SELECT {Tag.UNIT_ID}, {EventField.CODE} FROM {self._results(Measurement.UNIT_EVENT)} WHERE {where}"  # noqa: S608 - inventory ids, ints
        )
        found = ((r[Tag.UNIT_ID], int(r["time"])) for r in rows)
        stale = [key for key in found if key not in evaluation.events]
        if not stale:
            return
        try:
            self.reader.execute(
                "; ".join(
                    f"DELETE FROM {Measurement.UNIT_EVENT} WHERE {Tag.UNIT_ID} = '{u}' "  # noqa: S608 - inventory ids, ints
                    f"AND time >= {t}ms AND time <= {t}ms"
                    for u, t in stale
                )
            )
        except SinkError as exc:
            log.warning("health.stale_events_kept", count=len(stale), error=str(exc)[:200])
            return
        for u, t in stale:
            self._written.get(u, {}).pop(-t, None)
        log.info("health.stale_events_deleted", count=len(stale))

    def _status_lines(
        self, evaluation: Evaluation, now_ms: int
    ) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
        """``unit_status`` points for units whose status changed, so ``status`` reads instead of evaluating.

        One point per unit per hour (the hour's start is its time, rewritten while the hour lasts), and only
        when something shown changed; the last-reading time counts at minute resolution, or every unit
        would be rewritten every cycle.
        """
        hour = now_ms - now_ms % 3600_000
        lines: list[str] = []
        keys: dict[str, tuple[Any, ...]] = {}
        for unit_id, st in evaluation.status.items():
            last = st.last_reading_ms
            key = (
                hour,
                st.condition,
                st.since_ms,
                st.maintenance_due,
                st.pending,
                None if last is None else last // 60_000,
            )
            before = self._status_written.get(unit_id)
            if before == key:
                continue
            keys[unit_id] = key
            hours = self.facts.hours.get(unit_id)
            if before is not None and before[:5] == key[:5]:
                # Only the last reading moved on (most of a reporting fleet, every minute): rewrite just
                # those fields of this hour's point; InfluxDB merges the fields of a point written twice.
                small: dict[str, object] = {StatusField.UPDATED_MS: now_ms, StatusField.LAST_READING_MS: last}
                if hours is not None:
                    small[StatusField.RUN_HOURS] = float(hours)
                lines.append(line(Measurement.UNIT_STATUS, _tags(st.unit), small, hour * _NS_PER_MS))
                continue
            fields: dict[str, object] = {
                StateField.STATE: st.condition.state,
                StateField.REASON: st.condition.reason,
                StateField.CODE: st.condition.code,
                StateField.MAINTENANCE_DUE: st.maintenance_due,
                StatusField.SINCE_MS: st.since_ms,
                StatusField.UPDATED_MS: now_ms,
                StatusField.PENDING_STATE: st.pending.state if st.pending else "",
                StatusField.PENDING_REASON: st.pending.reason if st.pending else "",
            }
            if last is not None:
                fields[StatusField.LAST_READING_MS] = last
            first = self.facts.first.get(unit_id)
            if first is not None:
                fields[StatusField.FIRST_READING_MS] = first
            if hours is not None:
                fields[StatusField.RUN_HOURS] = float(hours)
            lines.append(line(Measurement.UNIT_STATUS, _tags(st.unit), fields, hour * _NS_PER_MS))
        return lines, keys

    def _evaluate_window(self, start: int, now_ms: int, changed_from: int, late: LateWork) -> Evaluation:
        """The trailing window, evaluated only as far back as new readings can change anything.

        Before ``changed_from - sustain - 2 x no-data limit`` the previous cycle's states are final (a
        pending condition is shorter than the sustain window), so steady cycles evaluate a few minutes per
        unit instead of the whole window and splice the result onto what they had. The first cycle, a
        cycle after a failed write, and units whose older readings changed (late uploads) get the whole
        window; the latter start from the state the late re-evaluation found at the window's start, so a
        backlog does not create a transition at the window's start that never happened.
        """
        refetch = late.refetch
        if not self._segments or self._unconfirmed_from is not None:
            priors = (
                self._resume_priors
                if not self._segments
                else {
                    u: late.priors.get(u) or _condition_at(segs, start)
                    for u, segs in self._segments.items()
                    if segs
                }
            )
            if priors is not None and late.priors:
                priors = {**priors, **late.priors}
            evaluation = self.evaluate(start, now_ms, readings=self._cache, only_changes=True, priors=priors)
            if not self._segments:
                for unit_id, held in self._resume_heads.items():
                    resumed = evaluation.segments.get(unit_id)
                    now_status = evaluation.status.get(unit_id)
                    if resumed and now_status is not None:
                        evaluation.segments[unit_id] = resumed = _splice([held], resumed)
                        evaluation.status[unit_id] = replace(now_status, since_ms=resumed[-1].start_ms)
            self._segments = evaluation.segments
            return evaluation
        tail_from = changed_from - self.sustain_ms - 2 * self.pad_ms
        tail_from = max(start, tail_from - tail_from % MINUTE_MS)
        context = tail_from - self.pad_ms
        steady = self._steady(start, tail_from, now_ms, changed_from, refetch)
        slow = set(self.inventory.units) - refetch - set(steady.status)
        views = {
            u: rows[bisect.bisect_left(rows, context, key=_time) :]
            for u, rows in self._cache.items()
            if u in slow
        }
        priors = {u: _condition_at(segs, tail_from) for u, segs in self._segments.items() if segs}
        evaluation = self.evaluate(
            tail_from, now_ms, readings=views, only_changes=True, priors=priors, units=slow
        )
        evaluation.lines += steady.lines
        evaluation.status.update(steady.status)
        evaluation.written.update(steady.written)
        if refetch:
            whole = {
                u: late.priors.get(u) or _condition_at(segs, start)
                for u, segs in self._segments.items()
                if segs and u in refetch
            }
            full = self.evaluate(
                start, now_ms, readings=self._cache, only_changes=True, priors=whole, units=refetch
            )
            evaluation.lines += full.lines
            evaluation.status.update(full.status)
            evaluation.segments.update(full.segments)
            evaluation.written.update(full.written)
            evaluation.events |= full.events
        for unit_id, tail in evaluation.segments.items():
            if unit_id in refetch:
                self._segments[unit_id] = tail
                continue
            head = [
                Segment(g.start_ms, min(g.end_ms, tail_from), g.condition)
                for g in self._segments.get(unit_id, [])
                if g.start_ms < tail_from and g.end_ms > start
            ]
            spliced = _splice(head, tail)
            self._segments[unit_id] = spliced
            status = evaluation.status.get(unit_id)
            if status is not None and spliced:
                evaluation.status[unit_id] = replace(status, since_ms=spliced[-1].start_ms)
        evaluation.segments = self._segments
        return evaluation

    def _steady(  # noqa: C901 - one pass, every way out of the fast path listed in order
        self, start: int, tail_from: int, now_ms: int, changed_from: int, refetch: set[str]
    ) -> Evaluation:
        """Units whose new readings all show the condition they are in: their state simply goes on.

        Most of a fleet, most of the time. For them the timeline's last segment is extended to now and
        only the newly completed minutes are written, instead of rebuilding a few minutes of timeline
        per unit (the larger part of a steady cycle at 20,000 units). Any change, gap, pending condition
        or late upload sends the unit through :meth:`evaluate` instead.
        """
        out = Evaluation(tail_from, now_ms)
        facts = self.facts
        for unit_id, segs in self._segments.items():
            status = self.last_status.get(unit_id)
            rows = self._cache.get(unit_id)
            if not segs or not rows or status is None or status.pending is not None or unit_id in refetch:
                continue
            last = segs[-1]
            condition = last.condition
            if condition.state in (State.NO_DATA, State.NEVER_CONNECTED) or status.condition != condition:
                continue
            unit = status.unit
            no_data_ms = max(3 * round(unit.spec.report_interval_s * 1000), 60_000)
            i = bisect.bisect_left(rows, changed_from, key=_time)
            if i == 0:
                continue
            previous = rows[i - 1][0]
            hours = None
            for t, c, h, *_ in rows[i:]:
                if (c is not condition and c != condition) or t - previous > no_data_ms:
                    break
                previous = t
                if h is not None:
                    hours = h
            else:
                if now_ms - previous > no_data_ms:
                    continue
                facts.seen(unit_id, rows[0][0], previous, hours)
                hours_now = facts.hours.get(unit_id)
                due = (
                    hours_now is not None
                    and hours_now - unit.last_service_run_hours >= unit.spec.service_interval_h
                )
                seconds = tuple(whole_minute(condition.state).values())
                key = (condition, seconds, due)
                body = _minute_fields(condition, seconds, due)
                moved = unit_id in self.inventory.history
                tags = self._unit_tags(unit)
                written = self._written.get(unit_id, {})
                confirm: dict[int, object] = {}
                first = max(tail_from, last.start_ms + (-last.start_ms) % MINUTE_MS)
                for m in range(first, now_ms - MINUTE_MS + 1, MINUTE_MS):
                    if written.get(m) == key:
                        continue
                    confirm[m] = key
                    booked = _tags_at(self.inventory, unit, m) if moved else tags
                    out.lines.append(f"{_STATE_HEAD},{booked} {body} {m * _NS_PER_MS}")
                out.written[unit_id] = confirm
                kept = [g for g in segs[:-1] if g.end_ms > start]
                self._segments[unit_id] = [*kept, Segment(last.start_ms, now_ms, condition)]
                out.status[unit_id] = UnitStatus(unit, condition, last.start_ms, facts.last.get(unit_id), due)
        return out

    def _refresh_cache(self, keep_from_ms: int, now_ms: int, refetch: set[str]) -> int:
        """Fetch only what is new since the last cycle (plus the ingester's late margin), per unit.

        Readings younger than LATE_AFTER_MS when they arrive are re-fetched next cycle anyway (and not
        classified again); older ones come with a late_data marker and their unit is re-fetched whole
        (``refetch``). Returns the time from which readings may have changed.
        """
        fetch_from = keep_from_ms
        if self._cache_until is not None:
            fetch_from = max(keep_from_ms, self._cache_until - LATE_AFTER_MS)
        fresh = self._readings(fetch_from, now_ms)
        if refetch:
            fresh.update(self._readings(keep_from_ms, now_ms, refetch))
        for unit_id in set(self._cache) | set(fresh):
            unit = self.inventory.units.get(unit_id)
            if unit is None:
                self._cache.pop(unit_id, None)
                continue
            cached = self._cache.get(unit_id, [])
            lo = bisect.bisect_left(cached, keep_from_ms, key=_time)
            split = keep_from_ms if unit_id in refetch else fetch_from
            hi = bisect.bisect_left(cached, split, key=_time)
            known = {r[0]: r for r in cached[hi:]}
            new = []
            for row in fresh.get(unit_id, []):
                t = int(row["time"])
                new.append(known.get(t) or _reading(row, unit.spec))
            new.sort(key=_time)
            self._cache[unit_id] = cached[lo:hi] + new
        self._cache_until = now_ms
        return fetch_from

    def _reevaluate_late(self, window_start_ms: int, now_ms: int) -> LateWork:
        """Re-evaluate history that late uploads (``late_data`` markers) changed, before the trailing window.

        The checkpoint (``checked_to``) is committed by the cycle only after its writes succeeded.
        """
        checked = self._late_checked_ms
        if checked is None:
            # First cycle: catch up on uploads that arrived while the engine was not running.
            rows = self.reader.rows(
                f"SELECT last({StateField.STATE}) FROM {self._results(Measurement.UNIT_STATE)}"  # noqa: S608
            )
            checked = int(rows[0]["time"]) if rows else now_ms - self.lookback_ms
        rows = self.reader.rows(
            f"SELECT {Tag.UNIT_ID}, {LateField.FROM_MS}, {LateField.TO_MS} FROM {Measurement.LATE_DATA} "  # noqa: S608 - constants and ints
            # Widened by the marker window on both sides (store.schema.LATE_MARKER_WINDOW_MS): a marker
            # seen twice only re-evaluates that unit again; one stamped before our last look is not missed.
            f"WHERE time >= {checked - LATE_MARKER_WINDOW_MS}ms "
            f"AND time < {now_ms + LATE_MARKER_WINDOW_MS}ms GROUP BY {Tag.UNIT_ID}"
        )
        work = LateWork(checked_to=now_ms)
        earliest: dict[str, int] = {}
        for row in rows:
            unit_id = row[Tag.UNIT_ID]
            if unit_id not in self.inventory.units:
                continue
            work.refetch.add(unit_id)
            from_ms, to_ms = (
                int(row[LateField.FROM_MS]),
                int(row.get(LateField.TO_MS) or row[LateField.FROM_MS]),
            )
            low, high = work.spans.get(unit_id, (from_ms, to_ms))
            work.spans[unit_id] = (min(low, from_ms), max(high, to_ms))
            if from_ms < window_start_ms:
                earliest[unit_id] = min(earliest.get(unit_id, from_ms), from_ms)
                self.facts.seen(unit_id, from_ms, to_ms, None)
        if not earliest:
            return work
        began = min(earliest.values())
        evaluation = self.evaluate_range(began, window_start_ms, units=set(earliest), collect=work.timelines)
        work.priors = {
            u: _condition_at(segs, window_start_ms - 1) for u, segs in evaluation.segments.items() if segs
        }
        log.info(
            "health.late_data_reevaluated",
            units=len(earliest),
            from_ms=began,
            hours=round((window_start_ms - began) / 3600_000, 2),
        )
        return work

    def _history(self, late: LateWork, evaluation: Evaluation, now_ms: int) -> None:
        """Notify, once, faults that began and ended inside a late upload (nobody could see them live).

        Each is recorded in ``unit_history`` (time = the fault's start) before it is sent, and one already
        recorded is never sent again, so a restart re-reading the same uploads stays silent.
        """
        found: list[tuple[str, Condition, int, int]] = []
        for unit_id, (from_ms, to_ms) in late.spans.items():
            segs = (
                _splice(
                    [g for g in late.timelines.get(unit_id, []) if g.start_ms < evaluation.start_ms],
                    [g for g in evaluation.segments.get(unit_id, []) if g.start_ms >= evaluation.start_ms],
                )
                if late.timelines.get(unit_id)
                else evaluation.segments.get(unit_id, [])
            )
            found += [(unit_id, c, a, b) for c, a, b in _episodes(segs) if from_ms <= a and b <= to_ms]
        if not found or self.sink is None:
            return
        units = sorted({u for u, *_ in found})
        low = min(a for *_, a, _ in found)
        stored = self.reader.rows(
            f"SELECT {Tag.UNIT_ID}, {HistoryField.END_MS} FROM {self._results(Measurement.UNIT_HISTORY)} "  # noqa: S608 - ids match the inventory pattern
            f"WHERE time >= {low}ms AND (" + " OR ".join(f"{Tag.UNIT_ID} = '{u}'" for u in units) + ")"
        )
        known = {(r[Tag.UNIT_ID], int(r["time"])) for r in stored}
        fresh = [f for f in found if (f[0], f[2]) not in known]
        if not fresh:
            return
        self.write(
            [
                line(
                    Measurement.UNIT_HISTORY,
                    _tags(self.inventory.units[u]),
                    {
                        StateField.STATE: c.state,
                        StateField.REASON: c.reason,
                        StateField.CODE: c.code,
                        HistoryField.END_MS: b,
                        HistoryField.NOTIFIED_MS: now_ms,
                    },
                    a * _NS_PER_MS,
                )
                for u, c, a, b in fresh
            ]
        )
        if self.on_history is not None:
            for u, c, a, b in fresh:
                self.on_history(self.inventory.units[u], c, a, b, now_ms)

    def _alert(self, evaluation: Evaluation, now_ms: int) -> None:
        for unit_id, status in evaluation.status.items():
            before = self.current.get(unit_id)
            self.current[unit_id] = status.condition
            if before is None or before == status.condition or self.on_change is None:
                continue
            if before.state == State.NEVER_CONNECTED and status.condition.state == State.IN_SPEC:
                continue  # a new unit's first readings: nothing to raise or clear
            self.on_change(status, before, now_ms)

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Cycle until ``stop``; transient InfluxDB trouble is logged and retried next cycle."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set() and (end is None or time.monotonic() < end):
            began = time.monotonic()
            try:
                self.cycle()
                if self._older is not None:
                    self.book_older()  # after the cycle's alerts went out, so it never delays them
            except SinkFatalError:
                raise
            except SinkError as exc:
                log.warning("health.cycle_failed", error=str(exc), note="retrying next cycle")
            stop.wait(max(0.0, self.cycle_s - (time.monotonic() - began)))


@dataclass
class _Older:
    """The window's minutes a first start ever left behind its resume point: ``[start, end)``, booked up to ``cursor``."""

    start: int
    end: int
    cursor: int
    facts_pending: bool = True  # the first step scans telemetry history (first reading, run hours)
    readings: dict[str, list[Reading]] = field(default_factory=dict)  # the last slice's, for the next
    segments: dict[str, list[Segment]] = field(default_factory=dict)  # the timeline booked so far


@dataclass
class LateWork:
    """What one cycle learnt from late-upload markers; ``checked_to`` is committed after a good write."""

    checked_to: int
    refetch: set[str] = field(default_factory=set)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # unit -> (first, last) late reading
    priors: dict[str, Condition] = field(default_factory=dict)  # state at the window's start, re-evaluated
    timelines: dict[str, list[Segment]] = field(default_factory=dict)  # re-evaluated history before it


def _episodes(segments: list[Segment]) -> list[tuple[Condition, int, int]]:
    """Faults along a timeline: runs of underperforming/power_failure, with their worst condition."""
    out: list[tuple[Condition, int, int]] = []
    run: list[Segment] = []
    for seg in [*segments, None]:
        if seg is not None and seg.condition.state in (State.UNDERPERFORMING, State.POWER_FAILURE):
            run.append(seg)
            continue
        if run:
            worst = max(run, key=lambda g: (g.condition.code, g.duration_ms)).condition
            out.append((worst, run[0].start_ms, run[-1].end_ms))
            run = []
    return out


def _splice(head: list[Segment], tail: list[Segment]) -> list[Segment]:
    out = [g for g in head if g.end_ms > g.start_ms]
    for seg in tail:
        if out and out[-1].condition == seg.condition and out[-1].end_ms == seg.start_ms:
            out[-1] = Segment(out[-1].start_ms, seg.end_ms, seg.condition)
        else:
            out.append(seg)
    return out


def _condition_at(segments: list[Segment], at_ms: int) -> Condition:
    for seg in segments:
        if seg.start_ms <= at_ms < seg.end_ms:
            return seg.condition
    return segments[-1].condition if at_ms >= segments[-1].end_ms else segments[0].condition
