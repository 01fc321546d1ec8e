"""Which Indonesian time zone a province keeps: a bare commissioning date means local midnight there.

Indonesia has three zones fixed by Presidential Decree 41/1987 (no daylight saving): WIB (UTC+7) for
Sumatra, Java, West and Central Kalimantan; WITA (UTC+8) for Bali, Nusa Tenggara, South, East and North
Kalimantan and Sulawesi; WIT (UTC+9) for Maluku and Papua. A date in the inventory is what a technician
writes on the handover form, so "2024-03-01" at a hospital in Papua starts two hours before the same date
in Jakarta. Provinces not listed (or spelt differently) fall back to WIB, where most units are; an RFC
3339 timestamp in the inventory avoids the question.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Final

__all__ = ["DEFAULT_ZONE", "province_zone"]

WIB: Final = timezone(timedelta(hours=7), "WIB")
WITA: Final = timezone(timedelta(hours=8), "WITA")
WIT: Final = timezone(timedelta(hours=9), "WIT")
DEFAULT_ZONE: Final = WIB

_WITA: Final = (
    "Bali",
    "Nusa Tenggara Barat",
    "Nusa Tenggara Timur",
    "Kalimantan Selatan",
    "Kalimantan Timur",
    "Kalimantan Utara",
    "Sulawesi Utara",
    "Sulawesi Tengah",
    "Sulawesi Selatan",
    "Sulawesi Tenggara",
    "Sulawesi Barat",
    "Gorontalo",
)
_WIT: Final = (
    "Maluku",
    "Maluku Utara",
    "Papua",
    "Papua Barat",
    "Papua Barat Daya",
    "Papua Selatan",
    "Papua Tengah",
    "Papua Pegunungan",
)
_ZONES: Final = {p.casefold(): WITA for p in _WITA} | {p.casefold(): WIT for p in _WIT}


def province_zone(province: str) -> timezone:
    """The province's fixed UTC offset (WIB for every province not in the WITA and WIT lists)."""
    return _ZONES.get(province.strip().casefold(), DEFAULT_ZONE)
