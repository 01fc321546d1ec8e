"""oxyfleet's four dashboards, each built to answer its question at first sight (issue 14).

- :mod:`dashboards.overview`: which units need someone now?
- :mod:`dashboards.unit_detail`: what is this one unit doing?
- :mod:`dashboards.uptime`: how available were the units, per unit, hospital and province?
- :mod:`dashboards.ingest_health`: is the pipeline itself keeping up?

Colours come from :mod:`dashboards.panels` (one per state), queries from :mod:`dashboards.queries`,
model thresholds from the device catalog, so no board repeats a number or a stored name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from dashboards.ingest_health import ingest_health
from dashboards.overview import fleet_overview
from dashboards.unit_detail import unit_detail
from dashboards.uptime import hospital_uptime

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DASHBOARDS"]

# File name under json/ -> builder.
DASHBOARDS: Final[dict[str, Callable[[], dict[str, Any]]]] = {
    "fleet-overview.json": fleet_overview,
    "unit-detail.json": unit_detail,
    "hospital-uptime.json": hospital_uptime,
    "ingest-health.json": ingest_health,
}
