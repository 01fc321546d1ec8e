"""Inventory-backed tags for every point: model, hospital and province per unit, reloaded on change.

The file is checked from the pipeline thread, between batches, by the one reload rule every process
follows (:class:`~core.inventory_watch.InventoryWatcher`: at most every ``check_interval_s``; a broken
edit keeps the previous inventory and is logged once with its line numbers), so a technician's edit shows
up in new points within seconds, without a restart. Units that are not in the inventory are tagged ``unregistered``, counted and logged
once each: they are stored, never rejected, because a unit missing from a spreadsheet is an inventory
problem, not bad data.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import TYPE_CHECKING, Final

import structlog

from core.inventory_watch import InventoryWatcher
from store.lineproto import UnitTags

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devices.inventory import Inventory, Unit

__all__ = ["InventoryTags"]

log = structlog.get_logger("ingest.inventory")

_MAX_REMEMBERED: Final = 10_000


def _unit_tags(u: Unit) -> UnitTags:
    return UnitTags(hospital=u.hospital, model=u.model, province=u.province)


def _tags(inventory: Inventory) -> dict[str, UnitTags]:
    return {u.unit_id: _unit_tags(u) for u in inventory.units.values()}


def _moves(inventory: Inventory) -> dict[str, tuple[list[int], list[UnitTags]]]:
    """Units with several inventory rows: (start ms of each row, its tags), as ``Inventory.at`` orders them."""
    out: dict[str, tuple[list[int], list[UnitTags]]] = {}
    for unit_id, rows in inventory.history.items():
        starts = [int(r.valid_from.timestamp() * 1000) if r.valid_from else -(2**62) for r in rows]
        out[unit_id] = (starts, [_unit_tags(r) for r in rows])
    return out


class InventoryTags:
    """A :class:`~store.lineproto.TagLookup` over an inventory file."""

    def __init__(
        self, path: Path, check_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        # A broken file at startup is a configuration error: InventoryError propagates.
        self.watcher = InventoryWatcher(path, check_interval_s, events="ingest", clock=clock)
        self._tags = _tags(self.inventory)
        self._moves = _moves(self.inventory)
        self._default = UnitTags()
        self._seen_unregistered: set[str] = set()
        self.unregistered = 0

    @property
    def inventory(self) -> Inventory:
        """The inventory in force."""
        return self.watcher.inventory

    @property
    def reloads(self) -> int:
        """Edits taken into force."""
        return self.watcher.reloads

    @property
    def reload_errors(self) -> int:
        """Edits refused (the previous inventory stayed in force)."""
        return self.watcher.reload_errors

    def __call__(self, unit_id: str, at_ms: int | None = None) -> UnitTags:
        """Tags of ``unit_id`` in force at ``at_ms`` (now when None); ``unregistered`` for unknown units."""
        if at_ms is not None and unit_id in self._moves:
            starts, tags_then = self._moves[unit_id]
            return tags_then[max(0, bisect_right(starts, at_ms) - 1)]
        tags = self._tags.get(unit_id)
        if tags is not None:
            return tags
        self.unregistered += 1
        if unit_id not in self._seen_unregistered and len(self._seen_unregistered) < _MAX_REMEMBERED:
            self._seen_unregistered.add(unit_id)
            log.warning(
                "ingest.unit_unregistered",
                unit_id=unit_id,
                inventory=str(self.path),
                note="stored with tags 'unregistered'; add it to the inventory",
            )
        return self._default

    def refresh(self) -> None:
        """Reload the file if it changed since the last check (cheap when it did not)."""
        before = self.inventory
        if self.watcher.refresh():
            self._warn_rewritten(before, self.inventory)
            self._tags = _tags(self.inventory)
            self._moves = _moves(self.inventory)
            self._seen_unregistered.clear()

    @staticmethod
    def _warn_rewritten(old: Inventory, new: Inventory) -> None:
        """An edit that changes a unit's tags without a new dated row rewrites its past: say so once.

        Readings already stored keep the old tags while redeliveries and late uploads of the same
        readings would get the new ones, a second copy in another series (issue 19).
        """
        changed = [
            unit_id
            for unit_id, unit in new.units.items()
            if (before := old.units.get(unit_id)) is not None
            and _unit_tags(before) != _unit_tags(unit)
            and len(new.history.get(unit_id, ())) <= len(old.history.get(unit_id, ()))
        ]
        if changed:
            log.warning(
                "ingest.inventory_history_rewritten",
                units=changed[:20],
                count=len(changed),
                note="hospital/model/province edited in place: add a row with valid_from for a move instead",
            )
