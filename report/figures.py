"""The figures of a report, from what :mod:`report.data` read: pure functions, no I/O.

Availability is the health engine's definition (:func:`health.rules.availability`: in-spec time over
accounted time, ``off`` excluded), over the part of the month after a unit's commissioning. Units that
have never sent a reading are listed apart and count nowhere. Patients per day is an estimate and is
labelled so everywhere: litres delivered per day over what the model delivers per day at its rated flow,
times the patients the model is declared to serve at that flow (a concentrator: one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from health.rules import availability
from report.data import FAULT_STATES, MonthData, Period, booked_from
from store.schema import STATES, State

if TYPE_CHECKING:
    from devices.inventory import Unit

__all__ = ["Fault", "Report", "UnitRow", "build_report", "patients_at_rated_flow"]

_DAY_MS: Final = 86400_000


@dataclass(frozen=True, slots=True)
class UnitRow:
    """One unit's month."""

    unit: Unit
    hours: dict[str, float]
    availability_pct: float | None
    prev_availability_pct: float | None
    litres: float
    days_booked: float
    patients_per_day: float | None
    maintenance_due: bool


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault that began in the month: a transition into underperforming, power failure or no data."""

    unit_id: str
    hospital: str
    state: str
    reason: str
    start_ms: int
    duration_s: float | None  # None: still going on when the report was made


@dataclass(slots=True)
class Report:
    """One report: a hospital, a province or a donor source, for one month."""

    by: str
    name: str
    period: Period
    units: list[UnitRow]
    never_connected: list[Unit]
    faults: list[Fault]
    availability_pct: float | None
    prev_availability_pct: float | None
    litres: float
    patients_per_day_docs: float | None
    patients_per_day_concentrators: float | None
    target_pct: float
    strips: dict[str, list[str]] = field(default_factory=dict)
    purity: dict[str, list[float]] = field(default_factory=dict)

    @property
    def hours(self) -> dict[str, float]:
        """Hours per state, summed over the reporting units."""
        return {s: sum(r.hours[s] for r in self.units) for s in STATES}

    @property
    def maintenance_due(self) -> list[UnitRow]:
        """Units whose run hours call for a service."""
        return [r for r in self.units if r.maintenance_due]


def patients_at_rated_flow(unit: Unit) -> float | None:
    """Patients the model serves at its rated flow: the model's declared figure; a concentrator: one."""
    declared = getattr(unit.spec, "patients_at_rated_flow", None)
    if declared is not None:
        return float(declared)
    return 1.0 if unit.kind == "concentrator" else None


def _pct(seconds: dict[str, float] | None) -> float | None:
    share = availability(seconds or {})
    return None if share is None else share * 100.0


def _faults(data: MonthData, units: dict[str, Unit], period: Period) -> list[Fault]:
    faults: list[Fault] = []
    by_unit: dict[str, list[tuple[int, str, str]]] = {}
    for e in data.events:
        by_unit.setdefault(e.unit_id, []).append((e.at_ms, e.state, e.reason))
    for uid, events in by_unit.items():
        unit = units[uid]
        first_ms = booked_from(unit, period.zone)
        for i, (at, state, reason) in enumerate(events):
            if state not in FAULT_STATES or not period.start_ms <= at < period.end_ms or at < first_ms:
                continue
            end = events[i + 1][0] if i + 1 < len(events) else None
            faults.append(
                Fault(uid, unit.hospital, state, reason, at, None if end is None else (end - at) / 1000)
            )
    faults.sort(key=lambda f: (f.start_ms, f.unit_id))
    return faults


def build_report(
    by: str,
    name: str,
    units: dict[str, Unit],
    data: MonthData,
    period: Period,
    *,
    target_pct: float = 95.0,
    now_ms: int | None = None,
) -> Report:
    """Figures per unit (worst first), totals and faults for one scope."""
    rows: list[UnitRow] = []
    never: list[Unit] = []
    docs_patients: list[float] = []
    conc_patients: list[float] = []
    for uid, unit in units.items():
        if uid not in data.ever_reported:
            never.append(unit)
            continue
        seconds = data.seconds.get(uid, dict.fromkeys(STATES, 0.0))
        start = max(period.start_ms, booked_from(unit, period.zone))
        end = period.end_ms if now_ms is None else min(period.end_ms, now_ms)
        days = max(0.0, (end - start) / _DAY_MS)
        litres = data.litres.get(uid, 0.0)
        per_rated = patients_at_rated_flow(unit)
        patients = None
        if per_rated is not None and days > 0:
            patients = litres / days / (unit.spec.rated_flow_lpm * 1440.0) * per_rated
            (docs_patients if unit.kind == "docs" else conc_patients).append(patients)
        rows.append(
            UnitRow(
                unit=unit,
                hours={s: seconds.get(s, 0.0) / 3600.0 for s in STATES},
                availability_pct=_pct(seconds),
                prev_availability_pct=_pct(data.prev_seconds.get(uid)),
                litres=litres,
                days_booked=days,
                patients_per_day=patients,
                maintenance_due=data.maintenance_due.get(uid, False),
            )
        )
    # Worst first: lowest availability, then the most fault hours; units with nothing booked last.
    rows.sort(
        key=lambda r: (
            r.availability_pct is None,
            r.availability_pct if r.availability_pct is not None else 0.0,
            -(r.hours[State.UNDERPERFORMING] + r.hours[State.POWER_FAILURE] + r.hours[State.NO_DATA]),
            r.unit.unit_id,
        )
    )
    total = {s: sum(data.seconds.get(r.unit.unit_id, {}).get(s, 0.0) for r in rows) for s in STATES}
    prev_total = {s: sum(data.prev_seconds.get(r.unit.unit_id, {}).get(s, 0.0) for r in rows) for s in STATES}
    listed = {r.unit.unit_id: r.unit for r in rows}
    return Report(
        by=by,
        name=name,
        period=period,
        units=rows,
        never_connected=sorted(never, key=lambda u: u.unit_id),
        faults=_faults(data, listed, period),
        availability_pct=_pct(total),
        prev_availability_pct=_pct(prev_total),
        litres=sum(r.litres for r in rows),
        patients_per_day_docs=sum(docs_patients) if docs_patients else None,
        patients_per_day_concentrators=sum(conc_patients) if conc_patients else None,
        target_pct=target_pct,
        strips=data.strips,
        purity=data.purity,
    )
