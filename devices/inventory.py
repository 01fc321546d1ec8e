"""The fleet inventory: which units exist, what they are and where they serve.

A CSV file, because fleet lists arrive as spreadsheets (donor lists, hospital registers). One row per
unit with the columns in :data:`COLUMNS`; lines starting with ``#`` are comments. Every problem in the
file is reported at once with its line number, so a technician fixes the spreadsheet in one pass. The
file may be saved the way spreadsheet programs save it in any locale (semicolons or tabs, Windows-1252 or
UTF-8 with or without BOM, a title row above the header): :mod:`devices.csvfile` reads it.

Units move between hospitals. Stored points carry the hospital as a tag, so the tags of a reading must
be those in force *at the reading's time*: otherwise a reading redelivered (or uploaded late) after an
edit lands in a second series next to its first copy, and per-hospital counts and uptime count it twice
(issue 19). Hence the optional column ``valid_from`` (a date, meaning 00:00 UTC, or an RFC 3339 time with
zone): a unit may have several rows, each in force from its ``valid_from`` until the next one. A move is
a new row, never an edit of the old one. The first row of a unit also covers the time before its
``valid_from`` (a row without one is in force from the beginning), so adding history never turns old
readings into ``unregistered`` ones. :meth:`Inventory.at` answers "which row was in force then"; the
ingester tags with it, and the health engine must book uptime with it too (docs/health.md).
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devices.catalog import ModelSpec, load_catalog
from devices.csvfile import TableError, decode, read_table
from devices.regions import province_zone
from devices.spec import KINDS, UNIT_ID_RE

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "SAMPLE_INVENTORY",
    "Inventory",
    "InventoryError",
    "Unit",
    "load_inventory",
    "parse_inventory",
]

COLUMNS: Final = (
    "unit_id",
    "kind",
    "model",
    "serial",
    "hospital",
    "province",
    "source",
    "commissioned",
    "last_service_run_hours",
)
# Columns a file may leave out; ``valid_from`` is only needed once a unit has moved.
OPTIONAL_COLUMNS: Final = ("valid_from",)
SAMPLE_INVENTORY: Final = Path(__file__).resolve().parent / "inventory.csv"
_TEXT_LIMIT: Final = 120


class InventoryError(ValueError):
    """The inventory has problems; ``problems`` lists them as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Unit:
    """One registered unit."""

    unit_id: str
    kind: str
    model: str
    serial: str
    hospital: str
    province: str
    source: str
    commissioned: date | datetime  # a date (local midnight in the province) or an aware timestamp
    last_service_run_hours: float
    spec: ModelSpec
    valid_from: datetime | None = None  # this row is in force from then on (None: from the beginning)

    @property
    def commissioned_ms(self) -> int:
        """Commissioning as epoch ms: nothing is booked for the unit before it."""
        return commissioned_ms(self.commissioned, self.province)


def _epoch_ms(when: datetime | int) -> int:
    return when if isinstance(when, int) else int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Units by id (the row in force when the file was read), their history, and the file.

    ``history`` holds only units with more than one row, oldest first, so the common case (no move)
    costs one dictionary miss in :meth:`at`.
    """

    units: dict[str, Unit]
    path: Path | None = None
    history: dict[str, tuple[Unit, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def get(self, unit_id: str) -> Unit | None:
        """The unit, or None when it is not registered."""
        return self.units.get(unit_id)

    def at(self, unit_id: str, when: datetime | int) -> Unit | None:
        """The row of ``unit_id`` in force at ``when`` (aware datetime or epoch ms); None if unregistered.

        That is the last row whose ``valid_from`` is not after ``when``, or the first row for earlier
        times. Readings, their redeliveries and late uploads all get the same answer, whatever was
        edited in between, as long as moves are added as rows.
        """
        rows = self.history.get(unit_id)
        if rows is None:
            return self.units.get(unit_id)
        starts = [_epoch_ms(r.valid_from) if r.valid_from else -(2**62) for r in rows]
        return rows[max(0, bisect_right(starts, _epoch_ms(when)) - 1)]

    def select(
        self,
        *,
        hospital: str | None = None,
        province: str | None = None,
        kind: str | None = None,
        model: str | None = None,
        source: str | None = None,
    ) -> Iterator[Unit]:
        """Units matching every given filter (case-insensitive), in file order."""
        wanted = {"hospital": hospital, "province": province, "kind": kind, "model": model, "source": source}
        for unit in self.units.values():
            if all(v is None or getattr(unit, k).casefold() == v.casefold() for k, v in wanted.items()):
                yield unit


def commissioned_ms(commissioned: date | datetime, province: str) -> int:
    """Epoch ms of a commissioning date (local midnight in ``province``) or timestamp."""
    if not isinstance(commissioned, datetime):
        commissioned = datetime.combine(commissioned, time(0), province_zone(province))
    return int(commissioned.timestamp() * 1000)


def parse_commissioned(raw: str) -> date | datetime:
    """A date (``2021-08-17``) or an RFC 3339 timestamp with its zone (``2021-08-17T09:30:00+08:00``).

    Raises:
        ValueError: neither, or a timestamp without a zone (its instant would be a guess).
    """
    if len(raw) == len("YYYY-MM-DD"):
        return date.fromisoformat(raw)
    stamp = datetime.fromisoformat(raw.replace("z", "Z"))
    if stamp.tzinfo is None:
        msg = "a timestamp needs its zone"
        raise ValueError(msg)
    return stamp


def _text(row: dict[str, str], column: str, where: str, problems: list[str]) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        problems.append(f"{where}: {column} is empty")
    elif len(value) > _TEXT_LIMIT:
        problems.append(f"{where}: {column} is longer than {_TEXT_LIMIT} characters")
    elif any(ch in value for ch in "\n\r\t"):
        problems.append(f"{where}: {column} contains a line break or tab")
    return value


def parse_inventory(  # noqa: C901, PLR0912, PLR0915 - one flat list of row checks reads best
    text: str,
    name: str = "inventory.csv",
    catalog: dict[str, ModelSpec] | None = None,
    today: date | None = None,
    now: datetime | None = None,
) -> Inventory:
    """Parse and validate inventory CSV text; raise InventoryError listing every problem."""
    catalog = catalog if catalog is not None else load_catalog()
    today = today or date.today()  # noqa: DTZ011 - commissioning dates are calendar dates
    horizon_ms = commissioned_ms(datetime.combine(today + timedelta(days=1), time(0), UTC), "")
    try:  # delimiter, title rows, header names as spreadsheets save them (devices/csvfile.py)
        table = read_table(text, name, COLUMNS)
    except TableError as exc:
        raise InventoryError(exc.problems) from None
    problems: list[str] = []
    header, header_line = table.header, table.header_line
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS and c not in OPTIONAL_COLUMNS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns {', '.join(unknown)}")
        raise InventoryError(
            [f"{name}:{header_line}: header: {'; '.join(parts)} (expected: {','.join(COLUMNS)})"]
        )
    rows: dict[str, list[Unit]] = {}
    first_line: dict[tuple[str, datetime | None], int] = {}
    for line, values in table.rows:
        if not values or all(not v.strip() for v in values):
            continue
        where = f"{name}:{line}"
        if len(values) != len(header):
            problems.append(f"{where}: {len(values)} fields, expected {len(header)}")
            continue
        row = dict(zip(header, values, strict=True))
        n = len(problems)
        unit_id = (row.get("unit_id") or "").strip()
        valid_from = _valid_from(row, where, problems)
        bad_date = len(problems) > n  # a bad valid_from says nothing about duplicates
        if not UNIT_ID_RE.fullmatch(unit_id):
            problems.append(f"{where}: unit_id {unit_id!r} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$")
        elif bad_date:
            pass
        elif (unit_id, valid_from) in first_line:
            same = " with the same valid_from" if valid_from else ""
            problems.append(
                f"{where}: unit_id {unit_id} duplicates line {first_line[unit_id, valid_from]}{same}"
            )
        else:
            first_line[unit_id, valid_from] = line
        kind = (row.get("kind") or "").strip()
        if kind not in KINDS:
            problems.append(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        model = (row.get("model") or "").strip()
        spec = catalog.get(model)
        if spec is None:
            problems.append(
                f"{where}: model {model!r} is not in the models file ({', '.join(sorted(catalog))})"
            )
        elif kind in KINDS and spec.kind != kind:
            problems.append(f"{where}: model {model} is a {spec.kind}, but kind says {kind}")
        texts = {c: _text(row, c, where, problems) for c in ("serial", "hospital", "province", "source")}
        raw_date = (row.get("commissioned") or "").strip()
        commissioned: date | datetime
        try:
            commissioned = parse_commissioned(raw_date)
            # Future = after today ends (UTC): "today" in Papua is already tomorrow's date in UTC terms.
            if commissioned_ms(commissioned, texts["province"]) >= horizon_ms:
                problems.append(f"{where}: commissioned {raw_date} is in the future")
        except ValueError:
            problems.append(
                f"{where}: commissioned {raw_date!r} is not a date like 2021-08-17 "
                "or an RFC 3339 timestamp like 2021-08-17T09:30:00+08:00"
            )
            commissioned = today
        raw_hours = (row.get("last_service_run_hours") or "").strip()
        try:
            hours = float(_decimal_point(raw_hours))
            if not 0 <= hours <= 1_000_000:
                problems.append(f"{where}: last_service_run_hours {raw_hours} is outside 0 to 1000000")
        except ValueError:
            problems.append(f"{where}: last_service_run_hours {raw_hours!r} is not a number")
            hours = 0.0
        if len(problems) == n and spec is not None:
            rows.setdefault(unit_id, []).append(
                Unit(
                    unit_id,
                    kind,
                    model,
                    texts["serial"],
                    texts["hospital"],
                    texts["province"],
                    texts["source"],
                    commissioned,
                    hours,
                    spec,
                    valid_from,
                )
            )
    units, history = _effective(rows, name, problems, datetime.now(tz=UTC) if now is None else now)
    if problems:
        raise InventoryError(problems)
    return Inventory(units, history=history)


def _valid_from(row: dict[str, str], where: str, problems: list[str]) -> datetime | None:
    """The optional ``valid_from`` cell: a date (00:00 UTC) or an RFC 3339 time with a zone."""
    raw = (row.get("valid_from") or "").strip()
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), tzinfo=UTC)
        when = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(
            f"{where}: valid_from {raw!r} is not a date like 2026-03-01 or a time like 2026-03-01T08:00Z"
        )
        return None
    if when.tzinfo is None:
        problems.append(f"{where}: valid_from {raw!r} needs a zone (Z or +hh:mm)")
        return None
    return when.astimezone(UTC)


def _effective(
    rows: dict[str, list[Unit]], name: str, problems: list[str], now: datetime
) -> tuple[dict[str, Unit], dict[str, tuple[Unit, ...]]]:
    """The row in force ``now`` per unit, and the ordered rows of units that have more than one."""
    units: dict[str, Unit] = {}
    history: dict[str, tuple[Unit, ...]] = {}
    for unit_id, unit_rows in rows.items():
        if len(unit_rows) == 1:
            units[unit_id] = unit_rows[0]
            continue
        ordered = tuple(sorted(unit_rows, key=lambda u: u.valid_from or datetime.min.replace(tzinfo=UTC)))
        if sum(1 for u in ordered if u.valid_from is None) > 1:
            continue  # reported as a duplicate already
        if len({u.kind for u in ordered}) > 1:
            problems.append(f"{name}: unit_id {unit_id}: its rows disagree on kind (a unit keeps its kind)")
            continue
        history[unit_id] = ordered
        current = ordered[0]
        for u in ordered:
            if u.valid_from is None or u.valid_from <= now:
                current = u
        units[unit_id] = current
    return units, history


def _decimal_point(number: str) -> str:
    """``1234,5`` as spreadsheets in comma-decimal locales save it; a thousands separator is refused."""
    return number.replace(",", ".") if number.count(",") == 1 and "." not in number else number


def load_inventory(path: Path, catalog: dict[str, ModelSpec] | None = None) -> Inventory:
    """Read and validate an inventory file, in any encoding and delimiter spreadsheets save (csvfile)."""
    try:
        text, _encoding = decode(path.read_bytes(), str(path))
    except OSError as exc:
        raise InventoryError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except TableError as exc:
        raise InventoryError(exc.problems) from None
    inventory = parse_inventory(text, str(path), catalog)
    return Inventory(inventory.units, path, inventory.history)


def write_inventory(units: Iterable[Unit]) -> str:
    """CSV text for ``units`` (used to generate the sample and in tests)."""
    units = list(units)
    dated = any(u.valid_from is not None for u in units)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, *(OPTIONAL_COLUMNS if dated else ())])
    for u in units:
        since = [u.valid_from.isoformat().replace("+00:00", "Z") if u.valid_from else ""] if dated else []
        writer.writerow(
            [
                u.unit_id,
                u.kind,
                u.model,
                u.serial,
                u.hospital,
                u.province,
                u.source,
                u.commissioned.isoformat(),
                f"{u.last_service_run_hours:g}",
                *since,
            ]
        )
    return out.getvalue()
