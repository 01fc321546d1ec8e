"""Per-minute aggregates of raw telemetry (``telemetry_1m``): what year-long charts read once raw data expired.

Computed by InfluxDB itself (``GROUP BY time(1m)``, InfluxQL, which 1.x, 2.x and 3 Core all serve) and
written back by the health engine, which knows when a minute is complete and when a late upload changed
old minutes; a continuous query (1.x only) or a task (2.x only) would not work everywhere, and neither
re-aggregates late uploads.

Each minute also carries the oxygen delivered in it (:class:`store.schema.OxygenField`): litres at or above
the unit's low-purity threshold (flow x reporting interval per reading) and the readings counted. The
monthly report sums these (through the daily rollups of :mod:`health.rollup`), so oxygen delivered
survives the expiry of raw telemetry and a month costs one point per unit and day, not every reading.
The threshold is the unit's model's, known here from the inventory; InfluxDB is asked once per distinct
threshold.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Final

from store.lineproto import line
from store.schema import AGGREGATED, AGGREGATES, Measurement, OxygenField, Tag, aggregate_field

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

# (position in a cached reading, field names of its min, mean and max), built once: a minute of the whole
# fleet is aggregated at once, and formatting the names per unit was a visible part of it.
_NAMES: Final[list[tuple[int, str, str, str]]] = [
    (k, aggregate_field(name, "min"), aggregate_field(name, "mean"), aggregate_field(name, "max"))
    for k, name in enumerate(AGGREGATED, start=3)
]


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
    oxygen = _oxygen(reader, inventory, where)
    out = []
    for row in rows:
        unit = inventory.get(str(row.get(Tag.UNIT_ID)))
        if unit is None:
            continue
        fields: dict[str, object] = {
            aggregate_field(name, stat): float(row[aggregate_field(name, stat)])
            for name in AGGREGATED
            for stat in AGGREGATES
            if row.get(aggregate_field(name, stat)) is not None
        }
        if fields:
            at = int(row["time"])
            flow, n = oxygen.get((unit.unit_id, at), (0.0, 0))
            fields[OxygenField.LITRES] = flow * unit.spec.report_interval_s / 60.0
            fields[OxygenField.READINGS] = n
            out.append(line(Measurement.TELEMETRY_1M, tags(unit), fields, at * _NS_PER_MS))
    return out


def _oxygen(reader: InfluxQL, inventory: Inventory, where: str) -> dict[tuple[str, int], tuple[float, int]]:
    """Per (unit, minute): summed flow and count of the readings at or above the unit's purity threshold.

    One query per distinct threshold among the inventory's models (a handful); a row is kept only for a
    unit whose own model has that threshold. The unit's model comes from the inventory, not from the
    stored ``model`` tag, like the per-minute path (:func:`minute_lines`).
    """
    thresholds = sorted({float(u.spec.purity_low_pct) for u in inventory.units.values()})
    out: dict[tuple[str, int], tuple[float, int]] = {}
    for threshold in thresholds:
        for row in reader.rows(
            f"SELECT sum(flow_lpm) AS flow, count(flow_lpm) AS n FROM {Measurement.TELEMETRY} "  # noqa: S608
            f"WHERE {where} AND purity_pct >= {threshold!r} GROUP BY time(1m), {Tag.UNIT_ID} fill(none)"
        ):
            found = inventory.get(str(row.get(Tag.UNIT_ID)))
            if found is not None and float(found.spec.purity_low_pct) == threshold and row.get("n"):
                out[found.unit_id, int(row["time"])] = (float(row.get("flow") or 0.0), int(row["n"]))
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
        threshold = unit.spec.purity_low_pct
        per_reading_min = unit.spec.report_interval_s / 60.0
        i = bisect.bisect_left(rows, start_ms, key=_time)
        n = len(rows)
        for minute in range(start_ms, end_ms, MINUTE):
            j = bisect.bisect_left(rows, minute + MINUTE, lo=i, key=_time)
            if j > i:
                fields: dict[str, object] = {}
                for k, low, mean, high in _NAMES:
                    values = [r[k] for r in rows[i:j] if r[k] is not None]
                    if values:
                        fields[low] = float(min(values))
                        fields[mean] = sum(values) / len(values)
                        fields[high] = float(max(values))
                if fields:
                    # Same sum as InfluxDB's in aggregate_lines (flow summed first, then scaled).
                    delivered = [
                        r[4] for r in rows[i:j] if r[4] is not None and r[3] is not None and r[3] >= threshold
                    ]
                    fields[OxygenField.LITRES] = float(sum(delivered)) * per_reading_min
                    fields[OxygenField.READINGS] = len(delivered)
                    out.append(line(Measurement.TELEMETRY_1M, tags(unit), fields, minute * _NS_PER_MS))
            i = j
            if i >= n:
                break
    return out


def _time(row: tuple[Any, ...]) -> int:
    return int(row[0])
