"""What the health engine produces: a unit's status at the end of an evaluation, and an evaluation's result.

Separate from the engine so that alerts, uptime and the API can use these types without importing the
engine (which reports state changes through a callback instead of calling the alerter).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from store.schema import State

if TYPE_CHECKING:
    from collections.abc import Iterable

    from devices.inventory import Unit
    from health.rules import Condition, Segment

__all__ = ["Evaluation", "UnitStatus", "select_units", "state_counts"]


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """Where a unit stands at the end of an evaluation."""

    unit: Unit
    condition: Condition
    since_ms: int
    last_reading_ms: int | None
    maintenance_due: bool
    # The condition the latest readings show when it differs from ``condition`` but has not yet lasted the
    # sustain window: shown as "pending" so a unit that just started reporting is not called "no data".
    pending: Condition | None = None


@dataclass
class Evaluation:
    """Result of evaluating all units over a range."""

    start_ms: int
    end_ms: int
    segments: dict[str, list[Segment]] = field(default_factory=dict)
    status: dict[str, UnitStatus] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    # What the engine's "already written" cache learns once InfluxDB has confirmed ``lines``: per unit,
    # minute (or -event time) -> written value. Applied by the engine only after a successful write.
    written: dict[str, dict[int, object]] = field(default_factory=dict)
    # (unit, time) of every transition found in the written range, written now or before: any other stored
    # unit_event in that range no longer stands (a late upload showed the state never changed).
    events: set[tuple[str, int]] = field(default_factory=set)

    def state_counts(self) -> dict[str, int]:
        """How many units are in each state at the end of the range."""
        return state_counts(self.status.values())


def state_counts(statuses: Iterable[UnitStatus]) -> dict[str, int]:
    """How many of ``statuses`` are in each state."""
    counts: dict[str, int] = defaultdict(int)
    for status in statuses:
        counts[status.condition.state] += 1
    return dict(sorted(counts.items()))


def select_units(
    statuses: Iterable[UnitStatus],
    *,
    state: str | None = None,
    hospital: str | None = None,
    province: str | None = None,
) -> list[UnitStatus]:
    """The units matching every given filter, worst first: the order of ``oxyfleet status`` and the API.

    Worst is the highest severity, then anything not in spec, then the longest-standing condition; units
    that never connected come last. Names
    match case-insensitively, because people type "rsud flores tengah" and "papua" as often as not.
    """
    hospital_key = None if hospital is None else hospital.casefold()
    province_key = None if province is None else province.casefold()
    rows = [
        s
        for s in statuses
        if (state is None or s.condition.state == state)
        and (hospital_key is None or s.unit.hospital.casefold() == hospital_key)
        and (province_key is None or s.unit.province.casefold() == province_key)
    ]
    rows.sort(
        key=lambda s: (
            s.condition.state == State.NEVER_CONNECTED,  # listed apart, last: not a fault of the unit
            -s.condition.code,
            s.condition.state == State.IN_SPEC,
            s.since_ms,
            s.unit.unit_id,
        )
    )
    return rows
