"""Reading a table as people save it: a spreadsheet's CSV export, whatever its locale did to it.

Fleet lists come from spreadsheets. A spreadsheet program in an Indonesian (or German, French...) locale
saves "CSV" with semicolons, because the comma is the decimal separator there; older Windows programs
save Windows-1252 instead of UTF-8, without a BOM; "Unicode text" exports are UTF-16 with tabs; titles
sit above the header and empty columns trail to the right. This module turns all of those into rows
with their line numbers, and says precisely what is wrong when it cannot, so that a hospital clerk can
fix the file without a developer.

Encodings, in order: a BOM decides (UTF-8, UTF-16); otherwise strict UTF-8, which random Windows-1252
text with accents practically never passes; otherwise Windows-1252. That covers the files these
programs write; a statistical detector (``charset-normalizer``) would guess among dozens of code pages
from a few accented hospital names, and a wrong guess silently stores garbled names, while a failure
here names the line and the fix. A file that mixes UTF-8 and Windows-1252 (edited in two programs) is
refused with the line where the second one starts. The one ambiguity: Windows-1252 text in which every
accented capital (0xC2-0xDF) is followed by a punctuation byte 0x80-0xBF (``É`` then an en dash) is also valid UTF-8
and is read as such; one ordinary accented letter anywhere in the file (``é`` before a space) rules it out.

Delimiters: :class:`csv.Sniffer` (restricted to comma, semicolon, tab and bar) proposes; the known column
names decide, so a file whose first data line happens to hold more semicolons than commas is not misread
(and for a file without them, the one that gives most lines the same number of cells, so that the hint
about a wrong export shows its columns).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

__all__ = ["Table", "TableError", "decode", "read_table"]

DELIMITERS: Final = ",;\t|"
_NAMES: Final = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}
HEADER_SEARCH_LINES: Final = 10
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with BOM"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
_SAVE_AS: Final = "save it from the spreadsheet program as 'CSV UTF-8' (or 'CSV')"


class TableError(ValueError):
    """The file cannot be read as a table; ``problems`` say where (``file:line: message``) and what to do."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Table:
    """The header (names normalised) and the rows after it, each with its line number in the file."""

    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]]
    delimiter: str


def decode(raw: bytes, name: str) -> tuple[str, str]:
    """Text of a file and the encoding it was read as; :class:`TableError` when it is not text we read."""
    if raw.startswith(b"PK\x03\x04"):
        raise TableError(f"{name}: this is an Excel/LibreOffice workbook (.xlsx/.ods), not CSV; {_SAVE_AS}")
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise TableError(f"{name}: this is an old Excel workbook (.xls), not CSV; {_SAVE_AS}")
    for bom, codec, label in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec), label
            except UnicodeDecodeError as exc:
                raise TableError(
                    f"{name}:{_line_of(raw, exc.start)}: not {label} text ({exc.reason})"
                ) from None
    if b"\x00" in raw[:4096]:  # valid UTF-8, but never in a CSV: UTF-16 whose BOM was lost
        raise TableError(f"{name}: looks like UTF-16 text without a byte-order mark; {_SAVE_AS}")
    try:
        return raw.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    mixed = _first_valid_utf8_multibyte(raw)
    if mixed is not None:
        raise TableError(
            f"{name}:{_line_of(raw, utf8_error.start)}: this line is not UTF-8, but line "
            f"{_line_of(raw, mixed)} is: the file mixes two encodings (edited in two programs?); "
            f"{_SAVE_AS} again"
        )
    try:
        return raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{name}:{_line_of(raw, exc.start)}: byte 0x{raw[exc.start]:02x} is neither UTF-8 nor "
            f"Windows-1252 text; {_SAVE_AS}"
        ) from None


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _first_valid_utf8_multibyte(raw: bytes) -> int | None:
    """Offset of the first line that is UTF-8 beyond doubt.

    Such a line decodes, and to accented Latin letters or typographic punctuation (``é`` is ``Ã©`` read
    as Windows-1252); an isolated pair in Windows-1252 text (``É`` then an en dash) also decodes, but to
    an IPA letter, and is no evidence.
    """
    offset = 0
    for line in raw.split(b"\n"):
        if not line.isascii():
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if any("\u00a0" <= ch <= "\u017f" or "\u2010" <= ch <= "\u20ac" for ch in text):
                    return offset
        offset += len(line) + 1
    return None


def normalise(name: str) -> str:
    """Header cells as spreadsheets mangle them: ``" Unit ID "`` -> ``unit_id``."""
    return re.sub(r"[\s-]+", "_", name.strip().strip("\ufeff").lower())


def _parse(lines: list[str], delimiter: str) -> Iterator[list[str]]:
    return csv.reader(io.StringIO("\n".join(lines)), csv.excel, delimiter=delimiter)


def _known(cells: list[str], columns: Collection[str]) -> int:
    return sum(1 for c in cells if normalise(c) in columns)


def _choose_delimiter(lines: list[str], columns: Collection[str]) -> str:
    """The delimiter that makes the most known column names appear in one of the first lines.

    Only the sniffer's delimiter is used: its guesses at quoting (``doublequote``, ``escapechar``) go
    wrong on cells holding quotes, and every spreadsheet program quotes the one way ``csv.excel`` reads.
    """
    content = [line for line in lines if line.strip()][: HEADER_SEARCH_LINES * 2]
    candidates = list(DELIMITERS)
    # The sniffer gives up on some files (one column); the column names still decide then.
    with contextlib.suppress(csv.Error):
        candidates.insert(0, csv.Sniffer().sniff("\n".join(content), delimiters=DELIMITERS).delimiter)

    def score(delimiter: str) -> tuple[int, int]:
        """Known column names in the best line, then how many lines agree on a width above one cell."""
        try:
            rows = list(_parse(content[:HEADER_SEARCH_LINES], delimiter))
        except csv.Error:
            return 0, 0
        widths = Counter(len(row) for row in rows if len(row) > 1)
        return max((_known(row, columns) for row in rows), default=0), max(widths.values(), default=0)

    return max(candidates, key=score)  # the first best: the sniffer's choice wins ties


def read_table(text: str, name: str, columns: Collection[str]) -> Table:
    """Find the header among the first lines and read the rows after it.

    Lines starting with ``#`` are comments. Title rows above the header (one filled cell each, as
    spreadsheets export a sheet title) are skipped; trailing empty columns are dropped. Anything else
    that stops the file from being read raises :class:`TableError` with a hint at what the file is.
    """
    # Comment lines become empty lines, so line numbers stay those a spreadsheet or editor shows.
    lines = ["" if line.lstrip().startswith("#") else line for line in _LINE_BREAK.split(text)]
    delimiter = _choose_delimiter(lines, columns)
    reader = csv.reader(io.StringIO("\n".join(lines)), csv.excel, delimiter=delimiter)
    header: list[str] | None = None
    header_line = 0
    before: list[tuple[int, list[str]]] = []
    rows: list[tuple[int, list[str]]] = []
    last = 0  # a row starts on the line after the previous one ended (a quoted cell may span lines)
    try:
        for values in reader:
            line, last = last + 1, reader.line_num
            cells = _trim(values)
            if not cells:
                continue
            if header is None:
                if _known(cells, columns):
                    header, header_line = [normalise(c) for c in cells], line
                    continue
                before.append((line, cells))
                if len(before) >= HEADER_SEARCH_LINES:
                    break
                continue
            if len(values) > len(header) and not any(v.strip() for v in values[len(header) :]):
                rows.append((line, values[: len(header)]))  # empty cells right of the table
            else:
                rows.append((line, values))
    except csv.Error as exc:
        raise TableError(f"{name}:{last + 1}: cannot read this line as CSV ({exc})") from None
    if header is None:
        raise TableError(_no_header(name, before, columns, delimiter))
    not_titles = [line for line, cells in before if sum(1 for c in cells if c.strip()) > 1]
    if not_titles:
        raise TableError(
            f"{name}:{not_titles[0]}: a row above the header (line {header_line}); the inventory "
            f"starts with its header row, so delete lines {not_titles[0]} to {header_line - 1} or "
            "turn them into comments (#)"
        )
    return Table(header, header_line, rows, delimiter)


def _trim(values: list[str]) -> list[str]:
    end = len(values)
    while end and not values[end - 1].strip():
        end -= 1
    return values[:end]


def _no_header(
    name: str, before: list[tuple[int, list[str]]], columns: Collection[str], delimiter: str
) -> str:
    """Why no header was found, in terms of what the file looks like."""
    wanted = ",".join(columns)
    if not before:
        return f"{name}: the file is empty; it needs a header row ({wanted}) and one row per unit"
    one_column = all(len(cells) == 1 for _, cells in before)
    # Describe the first row with several cells: a title above another export says nothing.
    line, first = next(((n, cells) for n, cells in before if len(cells) > 1), before[0])
    if one_column and any(d in first[0] for d in DELIMITERS):
        return (
            f"{name}:{line}: everything is in one column (each line is one quoted cell); the sheet was "
            f"exported as text of a single column: split it into columns (Data > Text to columns) and "
            f"{_SAVE_AS}"
        )
    shown = ", ".join(repr(c[:30]) for c in first[:6]) + (", ..." if len(first) > 6 else "")
    return (
        f"{name}:{line}: no header row with the inventory's columns in the first {HEADER_SEARCH_LINES} "
        f"lines; the first line has {len(first)} column(s) ({_NAMES.get(delimiter, delimiter)}-separated): "
        f"{shown}. This looks like another export (a hospital register, a delivery list?); the inventory "
        f"needs one row per unit under the header {wanted}"
    )
