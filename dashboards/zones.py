"""Indonesia's three time zones by province, so unit and hospital views can read in the unit's local time.

Dashboards open in the browser's time zone (Grafana's "browser"), which is what a technician in a
national operations room wants. A hospital reading its own report wants its wall clock: the Unit detail
and Hospital uptime dashboards carry links that reopen them in WIB, WITA or WIT, and their tables label
each province with its zone. Provinces as in the inventory (Indonesia's 38, 2022); a province missing
here simply shows no zone label.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["PROVINCE_ZONE", "ZONES", "zone_links", "zone_mappings"]

# Abbreviation -> (IANA zone, UTC offset).
ZONES: Final[dict[str, tuple[str, str]]] = {
    "WIB": ("Asia/Jakarta", "UTC+7"),
    "WITA": ("Asia/Makassar", "UTC+8"),
    "WIT": ("Asia/Jayapura", "UTC+9"),
}

_WIB: Final = (
    "Aceh", "Sumatera Utara", "Sumatera Barat", "Riau", "Kepulauan Riau", "Jambi", "Sumatera Selatan",
    "Kepulauan Bangka Belitung", "Bengkulu", "Lampung", "DKI Jakarta", "Banten", "Jawa Barat", "Jawa Tengah",
    "DI Yogyakarta", "Jawa Timur", "Kalimantan Barat", "Kalimantan Tengah",
)  # fmt: skip
_WITA: Final = (
    "Bali", "Nusa Tenggara Barat", "Nusa Tenggara Timur", "Kalimantan Selatan", "Kalimantan Timur",
    "Kalimantan Utara", "Sulawesi Utara", "Gorontalo", "Sulawesi Tengah", "Sulawesi Barat", "Sulawesi Selatan",
    "Sulawesi Tenggara",
)  # fmt: skip
_WIT: Final = (
    "Maluku", "Maluku Utara", "Papua", "Papua Barat", "Papua Barat Daya", "Papua Tengah", "Papua Pegunungan",
    "Papua Selatan",
)  # fmt: skip

PROVINCE_ZONE: Final[dict[str, str]] = {
    **dict.fromkeys(_WIB, "WIB"),
    **dict.fromkeys(_WITA, "WITA"),
    **dict.fromkeys(_WIT, "WIT"),
}


def zone_mappings() -> list[dict[str, Any]]:
    """Value mappings that label a province column with its zone: "Maluku (WIT, UTC+9)"."""
    return [
        {
            "type": "value",
            "options": {
                p: {"text": f"{p} ({z}, {ZONES[z][1]})", "index": i}
                for i, (p, z) in enumerate(PROVINCE_ZONE.items())
            },
        }
    ]


def zone_links() -> list[dict[str, Any]]:
    """Reopen the dashboard in a local zone (Grafana's ``timezone`` URL parameter), keeping range and variables."""
    return [
        {
            "title": f"Local time {abbr} ({zone}, {offset})",
            "type": "link",
            "url": f"?timezone={zone}",
            "keepTime": True,
            "includeVars": True,
            "targetBlank": False,
        }
        for abbr, (zone, offset) in ZONES.items()
    ]
