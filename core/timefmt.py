"""Durations and timestamps as operators type and read them: ``30d``, ``12h``; ISO 8601 in UTC.

The CLI (``--since 7d``), the health API (``?since=30d``) and the alerts all speak these forms, so they
are parsed and printed here once: a duration the CLI accepts is one the API accepts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

__all__ = ["DurationError", "iso_ms", "parse_duration"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    """Not a duration; the message shows what one looks like (the CLI and the API show it as it is)."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``s``, ``m``, ``h`` or ``d`` (``90m``, ``7d``).

    Raises:
        DurationError: ``text`` is not such a duration, or is negative, NaN or infinite.
    """
    stripped = text.strip()
    try:
        unit = _UNITS.get(stripped[-1:])
        seconds = float(stripped) if unit is None else float(stripped[:-1]) * unit
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(f"{text!r} is not a duration like 60s, 90m, 12h, 30d")
    return seconds


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 in UTC to the second, e.g. ``2026-11-30T00:34:38+00:00``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
