"""Read-only HTTP API of the health engine (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

It serves what the engine computed in its last cycle (live states) and what is stored (uptime, events),
so hospital systems and scripts can ask without learning InfluxQL:

- ``GET /api/units?state=&hospital=&province=``: the live fleet table, worst first;
- ``GET /api/units/{unit_id}``: one unit, its inventory facts and its recent transitions;
- ``GET /api/hospitals/{hospital}/uptime?since=30d``: availability per unit and for the hospital;
- ``GET /healthz``: 200 while cycles run on time, 503 otherwise;
- ``GET /metrics``: Prometheus exposition through prometheus_client (cycles, cycle duration, units per
  state, process metrics), from a registry of this app's own;
- ``GET /docs``, ``/redoc``: interactive docs, with their scripts served from here (no CDN).

Other routers (the monthly reports) are mounted by the caller. ``/api/...`` needs a token
(:mod:`health.tokens`) unless the API is bound to loopback; the fleet-wide routes need the programme's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from pydantic import BaseModel

from core.errors import SinkError
from core.metrics import registry
from core.timefmt import DurationError, iso_ms, parse_duration
from health.model import UnitStatus, select_units, state_counts
from health.status import stored_status
from health.tokens import require_programme
from health.uptime import uptime_report
from store.schema import STATES, Measurement, Tag, qualified

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fastapi import APIRouter
    from prometheus_client.metrics_core import Metric

    from health.engine import HealthEngine
    from health.tokens import TokenStore
    from store.reader import InfluxQL

__all__ = ["HealthCollector", "create_app"]


class HealthCollector(Collector):
    """The engine's numbers, read at scrape time (the engine never touches a metric object)."""

    def __init__(self, engine: HealthEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        """Cycles, the last cycle's duration and time, units per state."""
        engine = self.engine
        yield CounterMetricFamily(
            "oxyfleet_health_cycles", "Evaluation cycles completed.", value=engine.cycles
        )
        yield GaugeMetricFamily(
            "oxyfleet_health_last_cycle_seconds",
            "Duration of the last cycle.",
            value=engine.last_cycle_ms / 1000,
        )
        yield GaugeMetricFamily(
            "oxyfleet_health_last_cycle_timestamp_seconds",
            "When the last cycle ran (Unix time; 0 before the first).",
            value=engine.last_cycle_at,
        )
        units = GaugeMetricFamily(
            "oxyfleet_health_units", "Units per state after the last cycle.", labels=["state"]
        )
        counts = state_counts(engine.last_status.values())
        for state in STATES:  # every state, 0 included, so a query over a state never finds no series
            units.add_metric([state], counts.get(state, 0))
        yield units


class UnitOut(BaseModel):
    """A unit's live state."""

    unit_id: str
    kind: str
    model: str
    hospital: str
    province: str
    state: str
    reason: str
    severity: int
    since: str | None
    last_reading: str | None
    maintenance_due: bool
    pending_state: str | None = None
    pending_reason: str | None = None


class EventOut(BaseModel):
    """One state transition."""

    at: str
    from_state: str
    to_state: str
    reason: str


class UnitDetail(UnitOut):
    """A unit with its inventory facts and recent transitions."""

    serial: str
    source: str
    commissioned: str
    service_interval_h: float
    events: list[EventOut]


class UptimeRecord(BaseModel):
    """Availability and hours per state of one unit or of the whole hospital (``level``)."""

    level: str
    hospital: str
    province: str
    unit_id: str
    availability_pct: float | None
    in_spec_h: float
    underperforming_h: float
    power_failure_h: float
    no_data_h: float
    off_h: float
    never_connected_h: float = 0.0


def _since_s(text: str) -> float:
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise HTTPException(422, f"since: {exc}") from None


def _unit_out(s: UnitStatus, window_start_ms: int) -> dict[str, Any]:
    u = s.unit
    return {
        "unit_id": u.unit_id,
        "kind": u.kind,
        "model": u.model,
        "hospital": u.hospital,
        "province": u.province,
        "state": s.condition.state,
        "reason": s.condition.reason,
        "severity": s.condition.code,
        # A state that began before the evaluated window is reported as "since at least" that start.
        "since": iso_ms(max(s.since_ms, window_start_ms)),
        "last_reading": None if s.last_reading_ms is None else iso_ms(s.last_reading_ms),
        "maintenance_due": s.maintenance_due,
        "pending_state": s.pending.state if s.pending else None,
        "pending_reason": s.pending.reason if s.pending else None,
    }


def create_app(  # noqa: C901 - one nested function per route
    engine: HealthEngine,
    reader: InfluxQL,
    *,
    tokens: TokenStore | None = None,
    loopback: bool = True,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The API over ``engine``'s last cycle and ``reader``'s stored results, plus ``routers``.

    ``loopback``: the API listens on loopback only, so requests without a token are the operator's own.
    """
    # FastAPIOffline serves the Swagger UI and ReDoc assets from the installed package instead of a CDN:
    # hospital networks are often offline, and /docs must not be a blank page there.
    app = FastAPIOffline(
        title="oxyfleet health API",
        version="0.1.0",
        description="Live state and uptime of oxygen concentrators and DOCS plants. Read-only.",
    )
    app.state.tokens = tokens
    app.state.loopback = loopback
    guard = [Depends(require_programme)]
    for router in routers:
        app.include_router(router)

    def window_start() -> int:
        return int(engine.last_cycle_at * 1000) - engine.lookback_ms if engine.last_cycle_at else 0

    def live() -> dict[str, UnitStatus]:
        """The engine's last cycle; before its first cycle ends (minutes at 20,000 units), what it stored."""
        if engine.cycles or engine.last_status:
            return engine.last_status
        try:
            return stored_status(reader, engine.inventory, int(time.time() * 1000), engine.long_rp)
        except SinkError as exc:
            raise HTTPException(503, f"InfluxDB: {exc}") from exc

    @app.get(
        "/api/units",
        response_model=list[UnitOut],
        responses={400: {"description": "Unknown state"}},
        dependencies=guard,
    )
    def units(
        state: str | None = None, hospital: str | None = None, province: str | None = None
    ) -> list[dict[str, Any]]:
        """The fleet's live states, worst first (severity, then the longest-standing).

        Hospital and province match case-insensitively; an unknown state is a 400 that lists the states,
        not an empty answer that looks like a healthy fleet.
        """
        if state is not None and state not in STATES:
            raise HTTPException(400, f"unknown state {state!r}; one of {', '.join(STATES)}")
        rows = select_units(live().values(), state=state, hospital=hospital, province=province)
        start = window_start()
        return [_unit_out(s, start) for s in rows]

    @app.get(
        "/api/units/{unit_id}",
        response_model=UnitDetail,
        responses={404: {"description": "Unknown unit"}},
        dependencies=guard,
    )
    def unit(unit_id: str) -> dict[str, Any]:
        """One unit: live state, inventory facts and its transitions of the last 7 days."""
        status = live().get(unit_id)
        if status is None:
            raise HTTPException(404, f"unit {unit_id!r} is not in the inventory")
        since_ms = int(time.time() * 1000) - 7 * 86400_000
        try:
            # unit_id is an inventory id here, which matches ^[A-Za-z0-9][A-Za-z0-9_.-]*$: nothing to inject.
            rows = reader.rows(
                f"SELECT * FROM {qualified(Measurement.UNIT_EVENT, engine.long_rp)} "  # noqa: S608
                f"WHERE {Tag.UNIT_ID} = '{unit_id}' "
                f"AND time >= {since_ms}ms"
            )
        except SinkError as exc:
            raise HTTPException(503, f"InfluxDB: {exc}") from exc
        u = status.unit
        return {
            **_unit_out(status, window_start()),
            "serial": u.serial,
            "source": u.source,
            "commissioned": u.commissioned.isoformat(),
            "service_interval_h": u.spec.service_interval_h,
            "events": [
                {
                    "at": iso_ms(r["time"]),
                    "from_state": r["from"],
                    "to_state": r["to"],
                    "reason": r.get("reason") or "",
                }
                for r in rows
            ],
        }

    @app.get(
        "/api/hospitals/{hospital}/uptime",
        response_model=list[UptimeRecord],
        responses={404: {"description": "No unit of this hospital has state data in the range"}},
        dependencies=guard,
    )
    def hospital_uptime(
        hospital: str, since: Annotated[str, Query(description="e.g. 30d, 12h")] = "30d"
    ) -> list[dict[str, Any]]:
        """Availability per unit and for the hospital (last record, ``level: hospital``) over ``since``."""
        now_ms = int(time.time() * 1000)
        try:
            records = uptime_report(
                reader,
                now_ms - int(_since_s(since) * 1000),
                now_ms,
                hospital=hospital,
                retention_policy=engine.long_rp,
            )
        except SinkError as exc:
            raise HTTPException(503, f"InfluxDB: {exc}") from exc
        if not records:
            raise HTTPException(404, f"no state data for hospital {hospital!r} in the last {since}")
        return records

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 while the engine cycles on time; 503 when the last cycle is older than three periods."""
        age = time.time() - engine.last_cycle_at if engine.last_cycle_at else None
        ok = age is not None and age <= 3 * engine.cycle_s + engine.last_cycle_ms / 1000
        return JSONResponse(
            {
                "status": "ok" if ok else "stale",
                "last_cycle_age_s": age,
                "last_cycle_ms": engine.last_cycle_ms,
                "units": len(engine.last_status),
            },
            status_code=200 if ok else 503,
        )

    metrics_registry = registry(HealthCollector(engine))

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        """Prometheus exposition (text, or OpenMetrics when the scraper asks for it)."""
        encoder, ctype = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics_registry), media_type=ctype)

    return app
