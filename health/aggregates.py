"""Per-minute aggregates of raw telemetry (``telemetry_1m``): what year-long charts read once raw data expired.

Computed by InfluxDB itself (``GROUP BY time(1m)``, InfluxQL, which 1.x, 2.x and 3 Core all serve) and
written back by the health engine, which knows when a minute is complete and when a late upload changed
old minutes; a continuous query (1.x only) or a task (2.x only) would not work everywhere, and neither
re-aggregates late uploads.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Final

from store.lineproto import line
from store.schema import AGGREGATED, AGGREGATES, Measurement, Tag, aggregate_field

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from devices.inventory import Inventory, Unit
    from store.reader import InfluxQL

__all__ = ["aggregate_lines", "minute_lines"]

_NS_PER_MS: Final = 1_000_000
MINUTE: Final = 60_000
_SELECT: Final = ", ".join(
    f"{stat}({name}) AS {aggregate_field(name, stat)}" for name in AGGREGATED for stat in AGGREGATES
)


def aggregate_lines(
    reader: InfluxQL,
    inventory: Inventory,
    tags: Callable[[Unit], str],
    start_ms: int,
    end_ms: int,
    units: set[str] | None = None,
) -> list[str]:
    """``telemetry_1m`` lines for the whole minutes in ``[start_ms, end_ms)`` (inventory units only)."""
    if end_ms <= start_ms or (units is not None and not units):
        return []
    where = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"
    if units is not None:
        # Inventory ids match ^[A-Za-z0-9][A-Za-z0-9_.-]*$, so quoting them is enough.
        where += " AND (" + " OR ".join(f"{Tag.UNIT_ID} = '{u}'" for u in sorted(units)) + ")"
    rows = reader.rows(
        f"SELECT {_SELECT} FROM {Measurement.TELEMETRY} WHERE {where} "  # noqa: S608 - constants, ints, ids
        f"GROUP BY time(1m), {Tag.UNIT_ID} fill(none)"
    )
    out = []
    for row in rows:
        unit = inventory.get(str(row.get(Tag.UNIT_ID)))
        if unit is None:
            continue
        fields = {
            aggregate_field(name, stat): float(row[aggregate_field(name, stat)])
            for name in AGGREGATED
            for stat in AGGREGATES
            if row.get(aggregate_field(name, stat)) is not None
        }
        if fields:
            out.append(line(Measurement.TELEMETRY_1M, tags(unit), fields, int(row["time"]) * _NS_PER_MS))
    return out


def minute_lines(
    readings: Mapping[str, Sequence[tuple[Any, ...]]],
    inventory: Inventory,
    tags: Callable[[Unit], str],
    start_ms: int,
    end_ms: int,
) -> list[str]:
    """``telemetry_1m`` lines for the whole minutes in ``[start_ms, end_ms)`` from readings in hand.

    ``readings``: per unit, time-sorted tuples whose items 3, 4 and 5 are purity, flow and outlet
    pressure (the engine's reading cache), in :data:`AGGREGATED` order. Same numbers as
    :func:`aggregate_lines`, without asking InfluxDB for what the engine already read.
    """
    out: list[str] = []
    if end_ms <= start_ms:
        return out
    for unit_id, rows in readings.items():
        unit = inventory.get(unit_id)
        if unit is None or not rows:
            continue
        i = bisect.bisect_left(rows, start_ms, key=_time)
        n = len(rows)
        for minute in range(start_ms, end_ms, MINUTE):
            j = bisect.bisect_left(rows, minute + MINUTE, lo=i, key=_time)
            if j > i:
                fields: dict[str, object] = {}
                for k, name in enumerate(AGGREGATED, start=3):
                    values = [r[k] for r in rows[i:j] if r[k] is not None]
                    if values:
                        fields[aggregate_field(name, "min")] = float(min(values))
                        fields[aggregate_field(name, "mean")] = sum(values) / len(values)
                        fields[aggregate_field(name, "max")] = float(max(values))
                if fields:
                    out.append(line(Measurement.TELEMETRY_1M, tags(unit), fields, minute * _NS_PER_MS))
            i = j
            if i >= n:
                break
    return out


def _time(row: tuple[Any, ...]) -> int:
    return int(row[0])
