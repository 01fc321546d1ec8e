"""Ingest health: is the pipeline itself keeping up?

Throughput, rejections (count by reason and share of received, with thresholds), write latency,
backlog, reconnects, and the spool (fill against its limit, with thresholds; batches waiting, replay).
"""

from __future__ import annotations

from typing import Any, Final

from dashboards import queries as q
from dashboards.panels import (
    UIDS,
    Grid,
    Panel,
    Step,
    Target,
    Variable,
    dashboard,
    thresholds,
)
from store.schema import Measurement, StatsField, Tag

__all__ = ["REJECTED_STEPS", "SPOOL_STEPS", "ingest_health"]


# Rejected share of received messages: above 1 % something is misconfigured, above 5 % a fleet is broken.
REJECTED_STEPS: Final = (Step("green"), Step("orange", 1), Step("red", 5))
# Spool fill: at 80 % the "Spool filling" rule fires; when full the ingester stops acknowledging.
SPOOL_STEPS: Final = (Step("green"), Step("orange", 50), Step("red", 80))


def ingest_health() -> dict[str, Any]:
    """The ingester itself: throughput, rejections (count and share), write latency, backlog, spool."""

    def series(title: str, grid: Grid, *targets: Target, **defaults: Any) -> Panel:  # noqa: ANN401
        return Panel(title, "timeseries", grid, targets, defaults=defaults)

    g, r = q.ingest_gauge, q.ingest_rate
    banded = {"custom": {"thresholdsStyle": {"mode": "line+area"}}}
    panels = [
        series(
            "Messages per second",
            Grid(0, 0, 12, 8),
            Target(r(StatsField.MESSAGES_RECEIVED), alias="received $tag_instance"),
            Target(r(StatsField.POINTS_WRITTEN), alias="written $tag_instance"),
            Target(r(StatsField.POINTS_REJECTED), alias="rejected $tag_instance"),
        ),
        series("Rejected by reason", Grid(12, 0, 12, 8), Target(q.rejected_by_reason(), alias="$tag_reason")),
        series(
            "Rejected share (%)",
            Grid(0, 8, 8, 8),
            Target(q.rejection_pct(), alias="$tag_instance"),
            unit="percent",
            thresholds=thresholds(*REJECTED_STEPS),
            **banded,
        ),
        series(
            "Batch write time (ms)",
            Grid(8, 8, 8, 8),
            Target(g(StatsField.LAST_BATCH_MS), alias="$tag_instance"),
            unit="ms",
        ),
        series(
            "Backlog and oldest unwritten (s)",
            Grid(16, 8, 8, 8),
            Target(g(StatsField.BACKLOG), alias="backlog $tag_instance"),
            Target(g(StatsField.OLDEST_UNWRITTEN_AGE_S), alias="oldest $tag_instance"),
        ),
        series(
            "Reconnects and write retries",
            Grid(0, 16, 8, 8),
            Target(g(StatsField.RECONNECTS), alias="reconnects $tag_instance"),
            Target(g(StatsField.WRITE_RETRIES), alias="retries $tag_instance"),
        ),
        # Counters reach InfluxDB only while it takes writes: during an outage this panel shows the gap (and
        # "Ingester stalled" fires); afterwards it shows the spool draining. Live values: /metrics, `oxyfleet check`.
        series(
            "Spool fill (% of its limit)",
            Grid(8, 16, 8, 8),
            Target(q.spool_fill_pct(), alias="$tag_instance"),
            unit="percent",
            min=0,
            max=100,
            thresholds=thresholds(*SPOOL_STEPS),
            **banded,
        ),
        series(
            "Spool: batches waiting, oldest (s), replay (points/s)",
            Grid(16, 16, 8, 8),
            Target(g(StatsField.SPOOL_BATCHES), alias="batches $tag_instance"),
            Target(g(StatsField.SPOOL_OLDEST_AGE_S), alias="oldest $tag_instance"),
            Target(g(StatsField.SPOOL_REPLAY_POINTS_PER_S), alias="replay $tag_instance"),
        ),
    ]
    instance = Variable(
        "instance", "Ingester", f'SHOW TAG VALUES FROM "{Measurement.STATS}" WITH KEY = "{Tag.INSTANCE}"'
    )
    return dashboard(UIDS["ingest"], "oxyfleet - Ingest health", panels, [instance])
