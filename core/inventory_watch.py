"""The inventory in force while people edit its file: the one hot-reload rule for every process.

The ingester (tags on every point) and the health engine (which units to judge, by which model's
thresholds) both follow a technician's edit without a restart, and must agree on what happens:

- the file is looked at (one ``stat``) at most every ``check_interval_s``; it is read again only when its
  modification time or size changed;
- an edit that does not validate never takes a process down: the previous inventory stays in force and
  the problems are logged once with their line numbers (not at every check until someone fixes it);
- a broken file at startup is the caller's configuration error (:class:`InventoryError` propagates).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import structlog

from devices.inventory import Inventory, InventoryError, load_inventory

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["InventoryWatcher"]

log = structlog.get_logger("core.inventory")

_PROBLEMS_LOGGED: Final = 20


class InventoryWatcher:
    """Holds the inventory loaded from ``path`` and reloads it by the rule above.

    ``events`` names the process in the log events (``ingest.inventory_reloaded``,
    ``health.inventory_invalid``), so an operator sees which process took or refused an edit.
    """

    def __init__(
        self,
        path: Path,
        check_interval_s: float = 2.0,
        *,
        events: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._reloaded = f"{events}.inventory_reloaded"
        self._invalid = f"{events}.inventory_invalid"
        self.clock = clock
        self._signature = self._stat()
        self.inventory: Inventory = load_inventory(path)
        self._next_check = clock() + check_interval_s
        self.reloads = 0
        self.reload_errors = 0

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Reload the file if it changed since the last look; True when a new inventory took force."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.check_interval_s
        signature = self._stat()
        if signature == self._signature:
            return False
        # Remembered before reading: a broken edit is reported once, and again only after the next edit.
        self._signature = signature
        try:
            inventory = load_inventory(self.path)
        except InventoryError as exc:
            self.reload_errors += 1
            log.error(  # noqa: TRY400 - the problems list is the useful part, not a traceback
                self._invalid,
                path=str(self.path),
                problems=exc.problems[:_PROBLEMS_LOGGED],
                count=len(exc.problems),
                note="the previous inventory stays in force",
            )
            return False
        self.inventory = inventory
        self.reloads += 1
        log.info(self._reloaded, path=str(self.path), units=len(inventory))
        return True
