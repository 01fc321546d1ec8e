"""The fleet's live status as the health engine last stored it (``unit_status``).

``oxyfleet status`` and the API read it, so neither has to re-evaluate the fleet (a cold evaluation of
20,000 units costs the engine seconds of its own cycle; InfluxDB answers the stored status of 20,000 units in
about 0.8-1 s).

The engine writes one point per unit per hour (at the hour's start) and rewrites it whenever what is
shown changes, so the latest status is in the current or the previous hour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from health.model import UnitStatus
from health.rules import Condition
from store.schema import Measurement, StateField, StatusField, Tag, qualified

if TYPE_CHECKING:
    from devices.inventory import Inventory
    from store.reader import InfluxQL

__all__ = ["latest_rows", "statuses", "stored_status"]

_HOUR_MS = 3600_000


def latest_rows(
    reader: InfluxQL, now_ms: int, retention_policy: str | None = None
) -> dict[str, dict[str, Any]]:
    """Each unit's latest stored ``unit_status`` point, as a row (a restarted engine resumes from them)."""
    since = now_ms - now_ms % _HOUR_MS - _HOUR_MS
    source = qualified(Measurement.UNIT_STATUS, retention_policy)
    rows = reader.rows(f"SELECT * FROM {source} WHERE time >= {int(since)}ms")  # noqa: S608 - an int
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        unit_id = str(row.get(Tag.UNIT_ID))
        seen = latest.get(unit_id)
        if seen is None or int(row[StatusField.UPDATED_MS] or 0) >= int(seen[StatusField.UPDATED_MS] or 0):
            latest[unit_id] = row
    return latest


def stored_status(
    reader: InfluxQL, inventory: Inventory, now_ms: int, retention_policy: str | None = None
) -> dict[str, UnitStatus]:
    """Each inventory unit's latest stored status (units the engine has not written yet are absent)."""
    return statuses(latest_rows(reader, now_ms, retention_policy), inventory)


def statuses(rows: dict[str, dict[str, Any]], inventory: Inventory) -> dict[str, UnitStatus]:
    """The statuses of :func:`latest_rows` for the inventory's units.

    Apart from :func:`stored_status` so that a caller can load the inventory while InfluxDB answers.
    """
    out: dict[str, UnitStatus] = {}
    for unit_id, row in rows.items():
        unit = inventory.get(unit_id)
        if unit is None:
            continue
        pending_state = str(row.get(StatusField.PENDING_STATE) or "")
        last = row.get(StatusField.LAST_READING_MS)
        out[unit_id] = UnitStatus(
            unit,
            Condition(str(row[StateField.STATE]), str(row.get(StateField.REASON) or "")),
            int(row[StatusField.SINCE_MS]),
            None if last is None else int(last),
            bool(row.get(StateField.MAINTENANCE_DUE)),
            Condition(pending_state, str(row.get(StatusField.PENDING_REASON) or ""))
            if pending_state
            else None,
        )
    return out
