"""Uptime from what the health engine stored: seconds per state per unit, summed over any range.

The sums run on ``unit_state`` in InfluxDB (what the Grafana uptime panels do too), so the CLI, the HTTP
API and the dashboards agree to the second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from health.rules import availability
from store.reader import quote_any_case
from store.schema import STATES, Measurement, Tag, qualified, seconds_field

if TYPE_CHECKING:
    from store.reader import InfluxQL

__all__ = ["uptime_report", "uptime_rows", "worst_first"]


def uptime_rows(
    reader: InfluxQL,
    since_ms: int,
    until_ms: int,
    *,
    hospital: str | None = None,
    province: str | None = None,
    retention_policy: str | None = None,
) -> list[dict[str, Any]]:
    """Seconds per state per unit over a range, summed from ``unit_state`` (what Grafana does too).

    ``hospital`` and ``province`` match case-insensitively, as everywhere people type names.
    """
    where = f"time >= {int(since_ms)}ms AND time < {int(until_ms)}ms"
    if hospital:
        where += f" AND {Tag.HOSPITAL} =~ {quote_any_case(hospital)}"
    if province:
        where += f" AND {Tag.PROVINCE} =~ {quote_any_case(province)}"
    sums = ", ".join(f"sum({seconds_field(s)}) AS {s}" for s in STATES)
    return reader.rows(
        f"SELECT {sums} FROM {qualified(Measurement.UNIT_STATE, retention_policy)} WHERE {where} "  # noqa: S608 - literals escaped
        f"GROUP BY {Tag.UNIT_ID}, {Tag.HOSPITAL}, {Tag.PROVINCE}"
    )


def uptime_report(
    reader: InfluxQL,
    since_ms: int,
    until_ms: int,
    *,
    hospital: str | None = None,
    province: str | None = None,
    retention_policy: str | None = None,
) -> list[dict[str, Any]]:
    """Availability per unit, then per hospital: the monthly report, for the CLI and the HTTP API.

    Each record: level (unit|hospital), hospital, province, unit_id ("" for hospitals), availability_pct
    (None when nothing was accounted), and hours per state (``<state>_h``).
    """
    units: list[dict[str, Any]] = []
    hospitals: dict[str, dict[str, Any]] = {}
    rows = uptime_rows(
        reader, since_ms, until_ms, hospital=hospital, province=province, retention_policy=retention_policy
    )
    for row in sorted(rows, key=lambda r: (r["hospital"], r["unit_id"])):
        seconds = {s: float(row.get(s) or 0.0) for s in STATES}
        units.append(
            {
                "level": "unit",
                "hospital": row["hospital"],
                "province": row["province"],
                "unit_id": row["unit_id"],
                **seconds,
            }
        )
        total = hospitals.setdefault(
            row["hospital"],
            {
                "level": "hospital",
                "hospital": row["hospital"],
                "province": row["province"],
                "unit_id": "",
                **dict.fromkeys(STATES, 0.0),
            },
        )
        for state in STATES:
            total[state] += seconds[state]
    records = []
    for rec in [*units, *hospitals.values()]:
        share = availability(rec)
        records.append(
            {
                **{k: rec[k] for k in ("level", "hospital", "province", "unit_id")},
                "availability_pct": None if share is None else round(share * 100, 2),
                **{f"{state}_h": round(rec[state] / 3600, 3) for state in STATES},
            }
        )
    return records


def worst_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Uptime records, units before hospitals, each lowest availability first (none accounted: last)."""
    return sorted(
        records,
        key=lambda r: (
            r["level"] != "unit",
            r["availability_pct"] is None,
            r["availability_pct"] or 0.0,
            r["hospital"],
            r["unit_id"],
        ),
    )
