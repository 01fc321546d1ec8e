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
from bisect import bisect_right
from typing import TYPE_CHECKING, Final

import structlog

from devices.inventory import Inventory, InventoryError, Unit, load_inventory
from store.lineproto import UnitTags

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

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
        self.check_interval_s = check_interval_s
        self.clock = clock
        self.inventory = load_inventory(path)  # a broken file at startup is a configuration error
        self._tags = _tags(self.inventory)
        self._moves = _moves(self.inventory)
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
        self._warn_rewritten(inventory)
        self.inventory = inventory
        self._tags = _tags(inventory)
        self._moves = _moves(inventory)
        self._seen_unregistered.clear()
        self.reloads += 1
        log.info("ingest.inventory_reloaded", path=str(self.path), units=len(inventory))

    def _warn_rewritten(self, new: Inventory) -> None:
        """An edit that changes a unit's tags without a new dated row rewrites its past: say so once.

        Readings already stored keep the old tags while redeliveries and late uploads of the same
        readings would get the new ones, a second copy in another series (issue 19).
        """
        old = self.inventory
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
