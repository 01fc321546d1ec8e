"""Daily rollups (``unit_day``): per unit and local day, the seconds per state, maintenance and oxygen.

Why: a monthly report summed per-minute ``unit_state`` over a month, and on InfluxDB 1.6 that costs about
series x shards spanned, not points: 20,000 unit series over the five 7-day shard groups a month crosses
took 78 s even with one pre-summed point per unit and day (docs/benchmarks.md). So the rollup is stored
the way InfluxDB reads fast: **one series per hospital** (tags hospital and province, as ``unit_state``
carries them), the unit id a *field*, each unit's day one point at the local day's start plus a
deterministic per-unit offset inside the day. A month for 20,000 units is then ~620,000 points in ~400
series, read back with one ``SELECT *`` (measured: 7.5 s, against 78 s).

- **Offsets.** A 64-bit BLAKE2b hash of the unit id modulo the day's nanoseconds (0 excluded: it holds the
  hospital's marker). Two units of one hospital that collide are separated deterministically at write
  (sorted by id, the later one probes forward) over the units the inventory ever assigned to the hospital
  plus those written, so a partial re-roll puts a unit where the full roll did. Should the assignment
  change in between and a unit land elsewhere, the reader keeps the newest point of a unit and day
  (``written_ms``).
- **Markers.** After a hospital's whole day is written, a marker point at the day's start (``units``)
  says so; the report uses a day's rollup only where the marker is, and reads the minutes elsewhere (the
  current day, a day not yet rolled up, a day only partly inside the report's month in another zone).
- **Days** are the hospital's local days (the report's zones: the shell passes ``zone_of``, since zone
  rules live in :mod:`report.zones`, above this layer). A unit that moved mid-day has a row under each
  hospital, with the seconds booked there (the engine tags each minute with the assignment in force).
- **Oxygen** comes from ``telemetry_1m`` (``oxygen_l``, ``oxygen_readings``, :mod:`health.aggregates`), so
  it survives the 90-day expiry of raw telemetry.
- **When.** A day is rolled up once it can no longer change in the normal course (its end is older than
  the engine's trailing window, the late threshold and two cycles); again for the units a late upload
  changed (the engine's late work, :meth:`Rollup.note_late`); and at start for any completed day of the
  last :data:`CATCH_UP_DAYS` without a marker. ``oxyfleet health rollup`` (re)builds a month on demand.

The rollup runs in its own thread with its own reader and sink, so a day's queries (seconds to a minute
at 20,000 units) never hold up the engine's 15 s cycle.

Long module: the point layout (offsets, markers), reading a day, and the three ways a day gets rolled up
(completed, late, missing after a start) are one contract with :mod:`report.data`, which reads it back;
kept together so the layout and its writers change in one place.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog

from core.errors import SinkError, SinkFatalError
from store.lineproto import line, tag_set
from store.reader import quote
from store.schema import (
    LATE_AFTER_MS,
    STATES,
    DayField,
    Measurement,
    OxygenField,
    StateField,
    Tag,
    qualified,
    seconds_field,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from zoneinfo import ZoneInfo

    from devices.inventory import Inventory
    from store.reader import InfluxQL

__all__ = [
    "CATCH_UP_DAYS",
    "DayRow",
    "Rollup",
    "day_lines",
    "local_days",
    "marker_lines",
    "offsets",
    "unit_offset_ns",
]

log = structlog.get_logger("health.rollup")

# Completed days looked at for a missing rollup after a start (older ones: `oxyfleet health rollup`).
CATCH_UP_DAYS: Final = 35
_NS_PER_MS: Final = 1_000_000
_DAY_MS: Final = 86400_000
_HOSPITALS_PER_QUERY: Final = 100
_UNITS_PER_QUERY: Final = 400
# A late span re-rolls from this much before its first reading: the engine re-evaluates from the sustain
# window plus five minutes before it (health.engine.evaluate_range's overlap).
_LATE_MARGIN_MS: Final = 3600_000


def unit_offset_ns(unit_id: str, day_ns: int) -> int:
    """Where a unit's point sits inside a day of ``day_ns``: a 64-bit hash of its id, never 0 (the marker)."""
    digest = hashlib.blake2b(unit_id.encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "big") % (day_ns - 1)


def offsets(unit_ids: Iterable[str], day_ns: int) -> dict[str, int]:
    """Offsets of units sharing a hospital's day, collisions resolved in id order by probing forward."""
    taken: set[int] = set()
    out: dict[str, int] = {}
    for uid in sorted(set(unit_ids)):
        at = unit_offset_ns(uid, day_ns)
        while at in taken:
            at = at % (day_ns - 1) + 1
        taken.add(at)
        out[uid] = at
    return out


def local_days(zone: ZoneInfo, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The local days (``[start, end)`` in epoch ms) of ``zone`` that intersect ``[start_ms, end_ms)``."""
    first = datetime.fromtimestamp(start_ms / 1000, tz=zone).date()
    days: list[tuple[int, int]] = []
    day = first
    while True:
        d0 = _midnight(day, zone)
        if d0 >= end_ms:
            return days
        d1 = _midnight(day + timedelta(days=1), zone)
        if d1 > start_ms:
            days.append((d0, d1))
        day += timedelta(days=1)


def _midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


@dataclass(slots=True)
class DayRow:
    """One unit's day under one hospital."""

    hospital: str
    province: str
    unit_id: str
    seconds: dict[str, float] = field(default_factory=dict)
    due: bool | None = None
    due_ms: int | None = None
    litres: float = 0.0
    readings: int = 0


def day_lines(
    rows: Iterable[DayRow],
    day: tuple[int, int],
    written_ms: int,
    members: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """``unit_day`` lines of one day; ``members``: per hospital, the units collisions are resolved over."""
    d0, d1 = day
    day_ns = (d1 - d0) * _NS_PER_MS
    by_hospital: dict[tuple[str, str], list[DayRow]] = {}
    for row in rows:
        by_hospital.setdefault((row.hospital, row.province), []).append(row)
    out: list[str] = []
    for (hospital, province), group in sorted(by_hospital.items()):
        tags = tag_set({Tag.HOSPITAL: hospital, Tag.PROVINCE: province})
        at = offsets([r.unit_id for r in group] + list((members or {}).get(hospital, ())), day_ns)
        for row in sorted(group, key=lambda r: r.unit_id):
            fields: dict[str, object] = {
                DayField.UNIT_ID: row.unit_id,
                DayField.DAY_START_MS: d0,
                DayField.DAY_END_MS: d1,
                **{seconds_field(s): float(row.seconds.get(s, 0.0)) for s in STATES},
                OxygenField.LITRES: float(row.litres),
                OxygenField.READINGS: int(row.readings),
                DayField.WRITTEN_MS: written_ms,
            }
            if row.due is not None and row.due_ms is not None:
                fields[DayField.MAINTENANCE_DUE] = bool(row.due)
                fields[DayField.DUE_MS] = row.due_ms
            out.append(line(Measurement.UNIT_DAY, tags, fields, d0 * _NS_PER_MS + at[row.unit_id]))
    return out


def marker_lines(
    hospitals: Mapping[str, str], counts: Mapping[str, int], day: tuple[int, int], written_ms: int
) -> list[str]:
    """One marker per hospital (name -> province): its whole day is rolled up (``counts`` units)."""
    d0, d1 = day
    return [
        line(
            Measurement.UNIT_DAY,
            tag_set({Tag.HOSPITAL: hospital, Tag.PROVINCE: province}),
            {
                DayField.UNITS: int(counts.get(hospital, 0)),
                DayField.DAY_START_MS: d0,
                DayField.DAY_END_MS: d1,
                DayField.WRITTEN_MS: written_ms,
            },
            d0 * _NS_PER_MS,
        )
        for hospital, province in sorted(hospitals.items())
    ]


def _merge(answer: dict[str, Any], rows: dict[tuple[str, str], DayRow]) -> None:
    """Fold the three statements of :meth:`Rollup.read_day` (sums, last flag, oxygen) into ``rows``."""
    for i, result in enumerate(answer.get("results", [])):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                r = dict(zip(series["columns"], values, strict=True)) | tags
                key = (str(r[Tag.HOSPITAL]), str(r[Tag.UNIT_ID]))
                row = rows.get(key)
                if row is None:
                    row = rows[key] = DayRow(key[0], str(r.get(Tag.PROVINCE) or ""), key[1])
                if i == 0:
                    row.seconds = {s: float(r.get(s) or 0.0) for s in STATES}
                elif i == 1 and r.get("due") is not None:
                    row.due, row.due_ms = bool(r["due"]), int(r["time"])
                elif i == 2:
                    row.litres = float(r.get("litres") or 0.0)
                    row.readings = int(r.get("n") or 0)


def _or(tag: str, values: Iterable[str]) -> str:
    return "(" + " OR ".join(f"{tag} = {quote(v)}" for v in sorted(values)) + ")"


def _chunks(values: Iterable[str], size: int) -> list[list[str]]:
    ordered = sorted(values)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)] or [[]]


class Rollup:
    """Makes and remakes ``unit_day`` for the fleet; ``run`` is the health service's rollup thread."""

    def __init__(
        self,
        reader: InfluxQL,
        write: Callable[[list[str]], int],
        inventory: Callable[[], Inventory],
        zone_of: Callable[[str, str], ZoneInfo],
        *,
        long_rp: str | None = None,
        settle_ms: int = 900_000 + LATE_AFTER_MS + 30_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.write = write
        self.inventory = inventory
        self.zone_of = zone_of
        self.long_rp = long_rp
        # How long after a day's end its minutes stop changing in the normal course (the engine's trailing
        # window, the late threshold and two cycles): only then is the day rolled up.
        self.settle_ms = settle_ms
        self.clock = clock
        self._late: dict[str, int] = {}  # unit -> earliest changed ms, from the engine's late work
        self._lock = threading.Lock()
        self.days_rolled = 0

    # --- what exists ---------------------------------------------------------------------------------

    def hospitals(self) -> dict[str, tuple[str, ZoneInfo]]:
        """Every hospital the inventory names (current rows and history): its province and zone."""
        inv = self.inventory()
        out: dict[str, tuple[str, ZoneInfo]] = {}
        for current in inv.units.values():
            for unit in inv.history.get(current.unit_id, (current,)):
                if unit.hospital not in out:
                    out[unit.hospital] = (unit.province, self.zone_of(unit.hospital, unit.province))
        return out

    def members(self) -> dict[str, set[str]]:
        """Per hospital, every unit the inventory ever assigned to it (what offsets are resolved over)."""
        inv = self.inventory()
        out: dict[str, set[str]] = {}
        for current in inv.units.values():
            for unit in inv.history.get(current.unit_id, (current,)):
                out.setdefault(unit.hospital, set()).add(unit.unit_id)
        return out

    def zones(self) -> dict[str, tuple[ZoneInfo, dict[str, str]]]:
        """Zone key -> (zone, {hospital: province})."""
        out: dict[str, tuple[ZoneInfo, dict[str, str]]] = {}
        for hospital, (province, zone) in self.hospitals().items():
            out.setdefault(zone.key, (zone, {}))[1][hospital] = province
        return out

    def ready_ms(self) -> int:
        """Days ending at or before this are complete."""
        return int(self.clock() * 1000) - self.settle_ms

    # --- one day -------------------------------------------------------------------------------------

    def read_day(
        self, day: tuple[int, int], hospitals: Iterable[str], units: set[str] | None = None
    ) -> list[DayRow]:
        """Seconds per state, last maintenance flag and oxygen per (hospital, unit) over one day."""
        d0, d1 = day
        state = qualified(Measurement.UNIT_STATE, self.long_rp)
        minutes = qualified(Measurement.TELEMETRY_1M, self.long_rp)
        sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
        group = f"GROUP BY {Tag.HOSPITAL}, {Tag.PROVINCE}, {Tag.UNIT_ID}"
        rows: dict[tuple[str, str], DayRow] = {}
        unit_chunks = _chunks(units, _UNITS_PER_QUERY) if units is not None else [None]
        for hs in _chunks(hospitals, _HOSPITALS_PER_QUERY):
            for us in unit_chunks:
                if not hs or (us is not None and not us):
                    continue
                where = f"time >= {int(d0)}ms AND time < {int(d1)}ms AND {_or(Tag.HOSPITAL, hs)}"
                if us is not None:
                    where += f" AND {_or(Tag.UNIT_ID, us)}"
                answer = self.reader.raw(
                    f"SELECT {sums} FROM {state} WHERE {where} {group}; "  # noqa: S608 - quoted literals, ints
                    f"SELECT last({StateField.MAINTENANCE_DUE}) AS due FROM {state} WHERE {where} {group}; "
                    f"SELECT sum({OxygenField.LITRES}) AS litres, sum({OxygenField.READINGS}) AS n "
                    f"FROM {minutes} WHERE {where} {group}"
                )
                _merge(answer, rows)
        return list(rows.values())

    def roll_day(
        self, day: tuple[int, int], hospitals: Mapping[str, str], units: set[str] | None = None
    ) -> int:
        """Roll up one local day for ``hospitals`` (name -> province), all units or only ``units``.

        Returns the points written. The markers go last, and only for a whole day written without a
        refusal: a day half written is found missing and redone.
        """
        rows = self.read_day(day, hospitals, units)
        written_ms = int(self.clock() * 1000)
        lines = day_lines(rows, day, written_ms, self.members())
        refused = self.write(lines)
        if units is None and not refused:
            counts: dict[str, int] = {}
            for row in rows:
                counts[row.hospital] = counts.get(row.hospital, 0) + 1
            self.write(marker_lines(hospitals, counts, day, written_ms))
            self.days_rolled += 1
        return len(lines)

    # --- ranges, late work, catching up --------------------------------------------------------------

    def roll_range(self, start_ms: int, end_ms: int, *, complete_only: bool = True) -> int:
        """Roll up every hospital's local days intersecting ``[start_ms, end_ms)``; returns days rolled."""
        return sum(
            self.roll_zone(zone, hospitals, start_ms, end_ms, complete_only=complete_only, whole=False)
            for zone, hospitals in self.zones().values()
        )

    def roll_zone(
        self,
        zone: ZoneInfo,
        hospitals: Mapping[str, str],
        start_ms: int,
        end_ms: int,
        *,
        complete_only: bool = True,
        whole: bool = True,
    ) -> int:
        """Roll up the local days of ``zone`` inside ``[start_ms, end_ms)`` (``whole=False``: touching it)."""
        ready = self.ready_ms() if complete_only else None
        done = 0
        for day in local_days(zone, start_ms, end_ms):
            outside = day[0] < start_ms or day[1] > end_ms
            if (whole and outside) or (ready is not None and day[1] > ready):
                continue
            self.roll_day(day, hospitals)
            done += 1
        return done

    def note_late(self, _now_ms: int, spans: Mapping[str, tuple[int, int]]) -> None:
        """The engine re-evaluated these units from these times (its late work): their days need redoing.

        Called from the engine's cycle (``HealthEngine.on_cycle``); only records, the rollup thread works.
        """
        if not spans:
            return
        with self._lock:
            for uid, (first, _last) in spans.items():
                self._late[uid] = min(self._late.get(uid, first), first)

    def redo_late(self) -> int:
        """Roll up again the completed days of units whose history a late upload changed."""
        with self._lock:
            late, self._late = self._late, {}
        if not late:
            return 0
        ready = self.ready_ms()
        inv = self.inventory()
        hospitals = self.hospitals()
        work: dict[tuple[str, int, int], tuple[dict[str, str], set[str]]] = {}
        for uid, first in late.items():
            current = inv.units.get(uid)
            if current is None:
                continue
            for unit in inv.history.get(uid, (current,)):
                province, zone = hospitals[unit.hospital]
                for d0, d1 in local_days(zone, first - _LATE_MARGIN_MS, ready):
                    if d1 <= ready:
                        hs, us = work.setdefault((zone.key, d0, d1), ({}, set()))
                        hs[unit.hospital] = province
                        us.add(uid)
        for (_zone, d0, d1), (hs, us) in sorted(work.items()):
            self.roll_day((d0, d1), hs, us)
        if work:
            log.info("health.rollup_late_redone", units=len(late), days=len({(d0, d1) for _, d0, d1 in work}))
        return len(work)

    def missing(self, days_back: int = CATCH_UP_DAYS) -> list[tuple[tuple[int, int], dict[str, str]]]:
        """Completed local days of the last ``days_back`` without a marker, newest first, per zone."""
        ready = self.ready_ms()
        since = ready - (days_back + 1) * _DAY_MS
        rows = self.reader.rows(
            f"SELECT {DayField.UNITS} FROM {qualified(Measurement.UNIT_DAY, self.long_rp)} "  # noqa: S608
            f"WHERE time >= {int(since)}ms GROUP BY {Tag.HOSPITAL}"
        )
        have = {(str(r[Tag.HOSPITAL]), int(r["time"])) for r in rows}
        out: list[tuple[tuple[int, int], dict[str, str]]] = []
        for zone, hospitals in self.zones().values():
            for day in local_days(zone, ready - days_back * _DAY_MS, ready):
                if day[1] > ready:
                    continue
                lacking = {h: p for h, p in hospitals.items() if (h, day[0]) not in have}
                if lacking:
                    out.append((day, lacking))
        out.sort(key=lambda item: -item[0][0])
        return out

    def step(self) -> bool:
        """Late work first, then one missing day; True when more missing days remain."""
        self.redo_late()
        todo = self.missing()
        if not todo:
            return False
        day, hospitals = todo[0]
        began = time.perf_counter()
        points = self.roll_day(day, hospitals)
        log.info(
            "health.rollup_day",
            day_start_ms=day[0],
            hospitals=len(hospitals),
            points=points,
            ms=round((time.perf_counter() - began) * 1000),
            remaining=len(todo) - 1,
        )
        return len(todo) > 1

    def run(self, stop: threading.Event, every_s: float = 60.0) -> None:
        """Until ``stop``: every ``every_s``, redo late days and make missing ones (back to back while behind)."""
        while not stop.is_set():
            behind = False
            try:
                behind = self.step()
            except SinkFatalError:
                log.exception("health.rollup_stopped")
                return
            except SinkError as exc:
                log.warning("health.rollup_failed", error=str(exc), note="retrying")
            except Exception:  # a bug here must not end the rollups silently while the engine runs on
                log.exception("health.rollup_error", note="retrying")
            stop.wait(1.0 if behind else every_s)
