"""Tables and progress as people and scripts meet them.

On a terminal, tables are drawn by ``rich`` to the terminal's width. Names (unit, hospital, province)
are never wrapped nor cut: when the table is wider than the terminal, the columns a command marks as
optional are hidden first (and the table says which), then free text such as a reason wraps, and only on
an absurdly narrow terminal does anything fold. Anywhere else (a pipe, a file, a test
runner) the same columns come out plain: one line per row, columns separated by at least two spaces,
nothing cut and no colour, so ``grep`` and ``awk`` keep working when a hospital's name grows.
Progress bars go to stderr and only when stderr is a terminal, so logs and captured output stay quiet.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

import click

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from rich.console import Console

__all__ = ["Column", "is_terminal", "progress", "render_table", "table"]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column and how it gives way on a narrow terminal.

    ``drop``: 0 for a column always shown; otherwise hidden when the table does not fit, highest first.
    ``wrap``: free text that may wrap onto more lines (a reason); names and codes never do.
    """

    header: str
    justify: Literal["left", "right"] = "left"
    drop: int = 0
    wrap: bool = False


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (not a pipe, a file or a test runner's buffer)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream is no terminal
        return False


def _plain(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = []
    for cells in [[c.header for c in columns], *rows]:
        parts = [
            cell.rjust(w) if col.justify == "right" else cell.ljust(w)
            for col, cell, w in zip(columns, cells, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _fitting(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> tuple[list[int], bool]:
    """The columns to show within ``width`` (optional ones hidden first), and whether even names must wrap.

    Names wrap only when the columns that cannot be hidden still do not fit: onto more lines, whole words.
    """
    natural = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))

    def needed() -> int:
        return sum(natural[i] for i in shown if not columns[i].wrap) + 2 * (len(shown) - 1)

    for index in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if needed() <= width:
            break
        shown.remove(index)
    return shown, needed() > width


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, console: Console | None = None
) -> str:
    """The table as text: drawn for ``console`` (a terminal) or plain when ``console`` is None."""
    if console is None:
        return _plain(columns, rows)
    from rich.table import Table  # noqa: PLC0415 - rich loads only to draw on a terminal (~0.1 s)

    shown, squeezed = _fitting(columns, rows, console.width)
    grid = Table(header_style="bold", pad_edge=False, box=None, show_edge=False)
    for i in shown:
        col = columns[i]
        # Wrapping at spaces, then folding a word longer than its cell: text moves, nothing is cut.
        wrap = col.wrap or squeezed
        grid.add_column(col.header, justify=col.justify, no_wrap=not wrap, overflow="fold")
    for row in rows:
        grid.add_row(*(row[i] for i in shown))
    with console.capture() as captured:
        console.print(grid)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    note = (
        f"({', '.join(hidden)} hidden to fit the terminal; widen it, or pipe the output)\n" if hidden else ""
    )
    return captured.get() + note


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print a table on stdout: drawn to the terminal's width on a terminal, plain otherwise."""
    stdout = sys.stdout
    console = None
    if is_terminal(stdout):
        import rich.console  # noqa: PLC0415 - rich loads only to draw on a terminal

        console = rich.console.Console(file=stdout, force_terminal=True)
    click.echo(render_table(columns, rows, console=console), nl=False)


@contextlib.contextmanager
def progress(description: str, total: float | None) -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr while the block runs; yields ``update(completed)``.

    Quiet (``update`` does nothing) when stderr is not a terminal, so services' logs and scripts' captured
    output never fill with bar redraws.
    """
    stderr: TextIO = sys.stderr
    if not is_terminal(stderr):
        yield lambda _completed: None
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if total is not None and float(total).is_integer() else TextColumn(""),
        TimeElapsedColumn(),
        console=Console(file=stderr),
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda completed: bar.update(task, completed=completed)
