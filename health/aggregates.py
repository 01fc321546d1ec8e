"""Per-minute aggregates of raw telemetry (``telemetry_1m``): what year-long charts read once raw data expired.

Computed by InfluxDB itself (``GROUP BY time(1m)``, InfluxQL, which 1.x, 2.x and 3 Core all serve) and
written back by the health engine, which knows when a minute is complete and when a late upload changed
old minutes; a continuous query (1.x only) or a task (2.x only) would not work everywhere, and neither
re-aggregates late uploads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from store.lineproto import line
from store.schema import AGGREGATED, AGGREGATES, Measurement, Tag, aggregate_field

if TYPE_CHECKING:
    from collections.abc import Callable

    from devices.inventory import Inventory, Unit
    from store.reader import InfluxQL

__all__ = ["aggregate_lines"]

_NS_PER_MS: Final = 1_000_000
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
