"""A report as one self-contained HTML file (plots inline as SVG), as CSV, and as PDF from that HTML.

The PDF is the HTML printed by headless Chromium (Debian's ``chromium``), so what a director prints and
what the browser shows are the same page; no second layout to keep in step.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from report.i18n import Text
from report.plots import SHOWN_STATES, availability_bars, purity_boxes, state_strip
from store.schema import STATES

if TYPE_CHECKING:
    from report.figures import Report
    from report.i18n import Lang

__all__ = ["BROWSERS", "ReportRenderError", "find_browser", "to_csv", "to_html", "to_pdf"]

BROWSERS: Final = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_ENV: Final = Environment(
    loader=PackageLoader("report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
)


class ReportRenderError(RuntimeError):
    """The PDF could not be produced (no browser, or the browser failed); the message says which."""


def to_html(report: Report, lang: Lang, *, made_ms: int | None = None) -> str:
    """The whole report as one HTML document."""
    t = Text(lang, report.period.zone)
    plots = {
        "availability": Markup(availability_bars(report, t)),  # noqa: S704 - SVG made by matplotlib here
        "strip": Markup(state_strip(report, t)),  # noqa: S704
        "purity": Markup(purity_boxes(report, t)),  # noqa: S704
    }
    shown = sum(1 for r in report.units if r.unit.unit_id in report.strips)
    return _ENV.get_template("report.html.j2").render(
        r=report,
        t=t,
        plots=plots,
        states=SHOWN_STATES,
        shown=shown,
        made_ms=made_ms if made_ms is not None else int(time.time() * 1000),
    )


def to_csv(report: Report) -> str:
    """One row per unit (never-connected units too), for spreadsheets; numbers unformatted."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "month", "by", "name", "unit_id", "hospital", "province", "source", "model", "never_connected",
            "availability_pct", "prev_availability_pct", *(f"{s}_h" for s in STATES),
            "oxygen_litres", "patients_per_day_estimate", "maintenance_due", "faults",
        ]
    )  # fmt: skip
    month = f"{report.period.year:04d}-{report.period.month:02d}"
    faults: dict[str, int] = {}
    for f in report.faults:
        faults[f.unit_id] = faults.get(f.unit_id, 0) + 1

    def num(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for r in report.units:
        u = r.unit
        w.writerow(
            [
                month, report.by, report.name, u.unit_id, u.hospital, u.province, u.source, u.model, 0,
                num(r.availability_pct, 3), num(r.prev_availability_pct, 3),
                *(num(r.hours[s], 3) for s in STATES),
                num(r.litres, 1), num(r.patients_per_day, 2), int(r.maintenance_due), faults.get(u.unit_id, 0),
            ]
        )  # fmt: skip
    for u in report.never_connected:
        w.writerow(
            [month, report.by, report.name, u.unit_id, u.hospital, u.province, u.source, u.model, 1]
            + [""] * (2 + len(STATES) + 2) + [0, 0]
        )  # fmt: skip
    return out.getvalue()


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def to_pdf(html: str, out: Path, *, browser: str | None = None, timeout_s: float = 120.0) -> None:
    """Print ``html`` to ``out`` with headless Chromium (A4, backgrounds on, no header/footer)."""
    exe = browser or find_browser()
    if exe is None:
        raise ReportRenderError(
            "PDF needs Chromium: install Debian's 'chromium' package (scripts/bootstrap does as root)"
        )
    with tempfile.TemporaryDirectory(prefix="oxyfleet-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer", "--print-to-pdf-no-header",
            f"--print-to-pdf={out.resolve()}", page.as_uri(),
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReportRenderError(f"{exe}: {exc}") from exc
    if done.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        tail = done.stderr.decode(errors="replace")[-500:]
        raise ReportRenderError(f"{exe} exited {done.returncode} without a PDF: {tail}")
