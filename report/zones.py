"""Local time zones of Indonesian provinces (WIB, WITA, WIT), overridable per hospital.

A hospital reads "03:10 WITA", not UTC; a month is the hospital's calendar month. The three zones follow
the provinces (Presidential Decree 41/1987): Sumatra, Java and West/Central Kalimantan keep WIB; Bali,
Nusa Tenggara, South/East/North Kalimantan and Sulawesi keep WITA; Maluku and Papua keep WIT.
"""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["ABBREVIATIONS", "DEFAULT_ZONE", "abbreviation", "province_zone", "zone_for"]

WIB: Final = "Asia/Jakarta"
WITA: Final = "Asia/Makassar"
WIT: Final = "Asia/Jayapura"
DEFAULT_ZONE: Final = WIB
ABBREVIATIONS: Final = {WIB: "WIB", WITA: "WITA", WIT: "WIT"}

_WITA_WORDS: Final = (
    "bali",
    "nusa tenggara",
    "kalimantan selatan",
    "kalimantan timur",
    "kalimantan utara",
    "sulawesi",
    "gorontalo",
)
_WIT_WORDS: Final = ("maluku", "papua")


def province_zone(province: str) -> str:
    """The IANA zone of a province by its Indonesian name; WIB for names it does not know."""
    name = province.casefold()
    if any(word in name for word in _WIT_WORDS):
        return WIT
    if any(word in name for word in _WITA_WORDS):
        return WITA
    return WIB


def zone_for(hospital: str | None, province: str, overrides: dict[str, str]) -> ZoneInfo:
    """The zone of a hospital: its own setting when configured, else its province's."""
    name = overrides.get(hospital or "") or province_zone(province)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} for hospital {hospital!r}") from exc


def abbreviation(zone: ZoneInfo) -> str:
    """WIB/WITA/WIT for Indonesia's zones, the IANA name otherwise."""
    return ABBREVIATIONS.get(zone.key, zone.key)
