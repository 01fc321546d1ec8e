"""``GET /api/reports/{by}/{name}``: the monthly reports over HTTP, each reader limited to its own.

Mounted into the health API by the shell (the health package does not know reports). A hospital's token
reads its hospital's reports, a province's token the province's and its hospitals', the programme's all
(:mod:`health.tokens`); another scope is 403, no token on a non-loopback binding 401.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from core.errors import SinkError
from health.tokens import Access, current_access
from report.build import BY, make_report, scopes
from report.render import ReportRenderError, to_csv, to_html, to_pdf

if TYPE_CHECKING:
    from collections.abc import Callable

    from devices.inventory import Inventory
    from report.figures import Report
    from store.reader import InfluxQL

__all__ = ["report_router", "summary"]

# matplotlib's pyplot state is per process: one report is drawn at a time.
_DRAW = threading.Lock()


def summary(report: Report) -> dict[str, Any]:
    """The report's figures as JSON (what the HTML shows, unformatted)."""
    return {
        "by": report.by,
        "name": report.name,
        "month": f"{report.period.year:04d}-{report.period.month:02d}",
        "zone": report.period.zone.key,
        "availability_pct": report.availability_pct,
        "prev_availability_pct": report.prev_availability_pct,
        "target_pct": report.target_pct,
        "oxygen_litres": report.litres,
        "patients_per_day_estimate": {
            "docs": report.patients_per_day_docs,
            "concentrators": report.patients_per_day_concentrators,
        },
        "hours": report.hours,
        "units": [
            {
                "unit_id": r.unit.unit_id,
                "hospital": r.unit.hospital,
                "model": r.unit.model,
                "availability_pct": r.availability_pct,
                "prev_availability_pct": r.prev_availability_pct,
                "hours": r.hours,
                "oxygen_litres": r.litres,
                "patients_per_day_estimate": r.patients_per_day,
                "maintenance_due": r.maintenance_due,
            }
            for r in report.units
        ],
        "never_connected": [u.unit_id for u in report.never_connected],
        "faults": [
            {
                "unit_id": f.unit_id,
                "state": f.state,
                "reason": f.reason,
                "start_ms": f.start_ms,
                "duration_s": f.duration_s,
            }
            for f in report.faults
        ],
    }


def report_router(
    reader: InfluxQL,
    inventory: Callable[[], Inventory],
    *,
    zones: dict[str, str] | None = None,
    programme_zone: str = "Asia/Jakarta",
    target_pct: float = 95.0,
    retention_policy: str | None = None,
) -> APIRouter:
    """The reports router over ``reader`` and the (live, reloadable) inventory.

    ``retention_policy``: where the health results live (the engine's ``long_rp``).
    """
    router = APIRouter(prefix="/api/reports", tags=["reports"])

    @router.get(
        "/{by}/{name}",
        responses={401: {"description": "No or unknown token"}, 403: {"description": "Another scope"}},
    )
    def report(
        by: Literal["hospital", "province", "source"],
        name: str,
        access: Annotated[Access, Depends(current_access)],
        month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="e.g. 2026-11")],
        lang: Literal["id", "en"] = "id",
        fmt: Annotated[Literal["html", "pdf", "csv", "json"], Query(alias="format")] = "html",
    ) -> Response:
        """One report of one month: HTML (default), PDF, CSV or JSON."""
        assert by in BY
        found = scopes(
            inventory(),
            by,
            hospital=name if by == "hospital" else None,
            province=name if by == "province" else None,
            source=name if by == "source" else None,
            zones=zones,
            programme_zone=programme_zone,
        )
        province = next(iter(found[0].units.values())).province if found else None
        if not access.allows(by, name, province):
            raise HTTPException(403, f"this token does not read the {by} {name!r}")
        if not found:
            raise HTTPException(404, f"no {by} {name!r} in the inventory")
        try:
            with _DRAW:
                rep = make_report(
                    reader, found[0], month, target_pct=target_pct, retention_policy=retention_policy
                )
                if fmt == "json":
                    return JSONResponse(summary(rep))
                if fmt == "csv":
                    return PlainTextResponse(to_csv(rep), media_type="text/csv; charset=utf-8")
                html = to_html(rep, lang, made_ms=int(time.time() * 1000))
        except SinkError as exc:
            raise HTTPException(503, f"InfluxDB: {exc}") from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        if fmt == "html":
            return HTMLResponse(html)
        with tempfile.TemporaryDirectory(prefix="oxyfleet-pdf-") as tmp:
            out = Path(tmp) / "report.pdf"
            try:
                to_pdf(html, out)
            except ReportRenderError as exc:
                raise HTTPException(503, str(exc)) from exc
            return Response(out.read_bytes(), media_type="application/pdf")

    return router
