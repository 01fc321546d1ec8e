"""Tables and progress as people and scripts meet them.

On a terminal, tables are drawn by ``rich`` to the terminal's width: names (unit, hospital, province)
never wrap and are never cut, the other text columns wrap instead. Anywhere else (a pipe, a file, a test
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
    """A table column: its header, which side numbers align to, and whether it holds a name."""

    header: str
    justify: Literal["left", "right"] = "left"
    name: bool = False  # a name is never wrapped nor cut; other text wraps when the terminal is narrow


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


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, console: Console | None = None
) -> str:
    """The table as text: drawn for ``console`` (a terminal) or plain when ``console`` is None."""
    if console is None:
        return _plain(columns, rows)
    from rich.table import Table  # noqa: PLC0415 - rich loads only to draw on a terminal (~0.1 s)

    grid = Table(header_style="bold", pad_edge=False, box=None, show_edge=False)
    for col in columns:
        grid.add_column(
            col.header,
            justify=col.justify,
            no_wrap=col.name or col.justify == "right",
            overflow="fold",  # the last resort on a very narrow terminal: fold, never "…"
        )
    for row in rows:
        grid.add_row(*row)
    with console.capture() as captured:
        console.print(grid)
    return captured.get()


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
