"""Inventory-backed tags for every point: model, hospital and province per unit, reloaded on change.

The file is checked (one ``stat``) at most every ``check_interval_s`` from the pipeline thread, between
batches, so a technician's edit shows up in new points within seconds, without a restart. A broken edit
never takes the ingester down: the previous inventory stays in force and the problems are logged with
their line numbers. Units that are not in the inventory are tagged ``unregistered``, counted and logged
once each: they are stored, never rejected, because a unit missing from a spreadsheet is an inventory
problem, not bad data.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import structlog

from devices.inventory import Inventory, InventoryError, load_inventory
from store.lineproto import UnitTags

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

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
        self.check_interval_s = check_interval_s
        self.clock = clock
        self.inventory = load_inventory(path)  # a broken file at startup is a configuration error
        self._tags = _tags(self.inventory)
        self._signature = self._stat()
        self._next_check = clock() + check_interval_s
        self._default = UnitTags()
        self._seen_unregistered: set[str] = set()
        self.unregistered = 0
        self.reloads = 0
        self.reload_errors = 0

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

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
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval_s
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            inventory = load_inventory(self.path)
        except InventoryError as exc:
            self.reload_errors += 1
            log.error(  # noqa: TRY400 - the problems list is the useful part, not a traceback
                "ingest.inventory_invalid",
                path=str(self.path),
                problems=exc.problems[:20],
                count=len(exc.problems),
                note="the previous inventory stays in force",
            )
            return
        self.inventory = inventory
        self._tags = _tags(inventory)
        self._seen_unregistered.clear()
        self.reloads += 1
        log.info("ingest.inventory_reloaded", path=str(self.path), units=len(inventory))
