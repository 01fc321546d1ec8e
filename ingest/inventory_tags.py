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
from typing import TYPE_CHECKING, Final

import structlog

from core.inventory_watch import InventoryWatcher
from store.lineproto import UnitTags

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devices.inventory import Inventory

__all__ = ["InventoryTags"]

log = structlog.get_logger("ingest.inventory")

_MAX_REMEMBERED: Final = 10_000


def _tags(inventory: Inventory) -> dict[str, UnitTags]:
    return {
        u.unit_id: UnitTags(hospital=u.hospital, model=u.model, province=u.province)
        for u in inventory.units.values()
    }


class InventoryTags:
    """A :class:`~store.lineproto.TagLookup` over an inventory file."""

    def __init__(
        self, path: Path, check_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        # A broken file at startup is a configuration error: InventoryError propagates.
        self.watcher = InventoryWatcher(path, check_interval_s, events="ingest", clock=clock)
        self._tags = _tags(self.inventory)
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

    def __call__(self, unit_id: str) -> UnitTags:
        """Tags for ``unit_id``; ``unregistered`` ones for units not in the inventory."""
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
        if self.watcher.refresh():
            self._tags = _tags(self.inventory)
            self._seen_unregistered.clear()
