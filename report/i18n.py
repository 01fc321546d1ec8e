"""Report text in Indonesian and English, and numbers and dates in each language's local format (Babel).

Every sentence a reader sees is here, keyed once, so a translation is one table and a missing key is a
``KeyError`` in the tests rather than a half-English PDF.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final, Literal

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal

from report.zones import abbreviation

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["LANGS", "Lang", "Text"]

Lang = Literal["id", "en"]
LANGS: Final[tuple[Lang, ...]] = ("id", "en")
_LOCALES: Final = {"id": "id_ID", "en": "en_GB"}

_TEXT: Final[dict[str, dict[str, str]]] = {
    "title": {"id": "Laporan bulanan oksigen medis", "en": "Monthly medical oxygen report"},
    "by.hospital": {"id": "Rumah sakit", "en": "Hospital"},
    "by.province": {"id": "Provinsi", "en": "Province"},
    "by.source": {"id": "Sumber / donor", "en": "Source / donor"},
    "month": {"id": "Bulan", "en": "Month"},
    "made": {"id": "Dibuat", "en": "Produced"},
    "times_in": {"id": "Semua waktu dalam", "en": "All times in"},
    "summary": {"id": "Ringkasan", "en": "Summary"},
    "availability": {"id": "Ketersediaan", "en": "Availability"},
    "availability_note": {
        "id": "waktu sesuai spesifikasi dibagi waktu yang dihitung (tidak termasuk mati/standby), sejak commissioning",
        "en": "in-spec time over accounted time (standby excluded), from commissioning on",
    },
    "prev_month": {"id": "bulan sebelumnya", "en": "previous month"},
    "target": {"id": "Target", "en": "Target"},
    "units": {"id": "Unit", "en": "Units"},
    "units_reporting": {"id": "unit melapor", "en": "units reporting"},
    "never_connected": {"id": "Belum pernah terhubung", "en": "Never connected"},
    "never_connected_note": {
        "id": "Unit dalam inventaris yang belum pernah mengirim data. Tidak dihitung dalam ketersediaan.",
        "en": "Inventory units that have never sent data. Not counted in availability.",
    },
    "oxygen": {"id": "Oksigen yang disalurkan", "en": "Oxygen delivered"},
    "oxygen_note": {
        "id": "liter dengan kemurnian di atas ambang rendah model (aliran x waktu)",
        "en": "litres at or above the model's low-purity threshold (flow x time)",
    },
    "litres": {"id": "liter", "en": "litres"},
    "patients": {"id": "Perkiraan pasien per hari", "en": "Estimated patients per day"},
    "patients_note": {
        "id": "PERKIRAAN: liter per hari dibandingkan keluaran model pada aliran nominal; DOCS: angka model (~700 pasien/hari), konsentrator: satu pasien",
        "en": "ESTIMATE: litres per day against the model's output at rated flow; DOCS: the model's figure (~700 patients/day), concentrator: one patient",
    },
    "docs": {"id": "DOCS", "en": "DOCS"},
    "concentrators": {"id": "Konsentrator", "en": "Concentrators"},
    "per_unit": {"id": "Per unit (terburuk lebih dulu)", "en": "Per unit (worst first)"},
    "unit": {"id": "Unit", "en": "Unit"},
    "hospital": {"id": "Rumah sakit", "en": "Hospital"},
    "model": {"id": "Model", "en": "Model"},
    "hours": {"id": "Jam per status", "en": "Hours per state"},
    "change": {"id": "Perubahan", "en": "Change"},
    "faults": {"id": "Gangguan bulan ini", "en": "Faults of the month"},
    "no_faults": {"id": "Tidak ada gangguan.", "en": "No faults."},
    "fault": {"id": "Gangguan", "en": "Fault"},
    "reason": {"id": "Alasan", "en": "Reason"},
    "start": {"id": "Mulai", "en": "Start"},
    "duration": {"id": "Durasi", "en": "Duration"},
    "ongoing": {"id": "masih berlangsung", "en": "ongoing"},
    "maintenance": {"id": "Perawatan jatuh tempo", "en": "Maintenance due"},
    "no_maintenance": {
        "id": "Tidak ada unit yang jatuh tempo perawatan.",
        "en": "No unit is due for maintenance.",
    },
    "plot.availability": {"id": "Ketersediaan per unit", "en": "Availability per unit"},
    "plot.strip": {"id": "Status sepanjang bulan", "en": "State through the month"},
    "plot.purity": {"id": "Sebaran kemurnian oksigen", "en": "Oxygen purity distribution"},
    "plot.shown": {
        "id": "{n} unit terburuk dari {total} ditampilkan",
        "en": "The {n} worst of {total} units shown",
    },
    "plot.day": {"id": "Tanggal", "en": "Day of month"},
    "plot.purity_axis": {"id": "Kemurnian O2 (%)", "en": "O2 purity (%)"},
    "plot.critical": {"id": "kritis 82 %", "en": "critical 82 %"},
    "plot.low": {"id": "rendah 90 %", "en": "low 90 %"},
    "plot.not_booked": {"id": "belum commissioning / tanpa catatan", "en": "not commissioned / no record"},
    "state.in_spec": {"id": "Sesuai spesifikasi", "en": "In spec"},
    "state.underperforming": {"id": "Kinerja kurang", "en": "Underperforming"},
    "state.power_failure": {"id": "Listrik padam", "en": "Power failure"},
    "state.no_data": {"id": "Tidak ada data", "en": "No data"},
    "state.off": {"id": "Mati / standby", "en": "Off / standby"},
    "state.never_connected": {"id": "Belum pernah terhubung", "en": "Never connected"},
    "none": {"id": "-", "en": "-"},
    "footer": {
        "id": "Dihasilkan oleh oxyfleet dari data yang tersimpan (status per menit dan telemetri).",
        "en": "Produced by oxyfleet from stored data (per-minute states and telemetry).",
    },
}


class Text:
    """Strings, numbers and dates of one language, in one zone."""

    def __init__(self, lang: Lang, zone: ZoneInfo) -> None:
        if lang not in LANGS:
            raise ValueError(f"language {lang!r}: use one of {', '.join(LANGS)}")
        self.lang = lang
        self.locale = _LOCALES[lang]
        self.zone = zone
        self.zone_name = abbreviation(zone)

    def __call__(self, key: str, **values: object) -> str:
        """The sentence ``key`` in this language, with ``{placeholders}`` filled."""
        text = _TEXT[key][self.lang]
        return text.format(**values) if values else text

    def number(self, value: float | None, digits: int = 0) -> str:
        """A number with the language's separators (1.234,5 / 1,234.5)."""
        if value is None:
            return "-"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def pct(self, value: float | None, digits: int = 1) -> str:
        """A percentage, '-' when there is none."""
        return "-" if value is None else f"{self.number(value, digits)} %"

    def month(self, year: int, month: int) -> str:
        """'Oktober 2026' / 'October 2026'."""
        return format_date(dt.date(year, month, 1), "MMMM y", locale=self.locale)

    def date(self, ms: int) -> str:
        """A local date in the language's medium format."""
        return format_date(self._local(ms).date(), "medium", locale=self.locale)

    def datetime(self, ms: int) -> str:
        """A local date and time with the zone's abbreviation (WIB/WITA/WIT)."""
        when = self._local(ms)
        return (
            f"{format_datetime(when, 'd MMM y HH:mm', tzinfo=self.zone, locale=self.locale)} {self.zone_name}"
        )

    def duration(self, seconds: float | None) -> str:
        """'1 d 2 h 5 min' / '1 h 2 j 5 m'; 'ongoing' for None."""
        if seconds is None:
            return self("ongoing")
        minutes = round(seconds / 60)
        days, rest = divmod(minutes, 1440)
        hours, mins = divmod(rest, 60)
        unit = {"id": ("h", "j", "m"), "en": ("d", "h", "min")}[self.lang]
        parts = [
            f"{days} {unit[0]}" if days else "",
            f"{hours} {unit[1]}" if hours else "",
            f"{mins} {unit[2]}",
        ]
        return " ".join(p for p in parts if p and not (p.startswith("0 ") and len(parts) > 1))

    def _local(self, ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(self.zone)
