"""Data lifecycle on InfluxDB 1.x: raw telemetry bounded, the health engine's results kept.

On by default (``OXYFLEET_INFLUX__LONG_RETENTION_POLICY`` = ``oxyfleet_long``; empty turns it off): every
reader of the health results, the Grafana dashboards and alert rules included, names that policy
(``store.schema.qualified``).

At 20,000 units every 10 s the raw stream is ~173 million readings a day, so raw telemetry cannot be kept
forever; monthly reports and year-long charts read ``unit_state`` and the per-minute aggregates
(``telemetry_1m``) instead, which the health engine writes to a retention policy kept forever
(``OXYFLEET_INFLUX__LONG_RETENTION_POLICY``, ``oxyfleet_long``). Raw telemetry stays in the database's
default policy, whose duration oxyfleet sets to ``OXYFLEET_INFLUX__RAW_RETENTION`` (90 days). The
aggregates are written by the engine rather than by a continuous query or a task because InfluxDB 1.x
(continuous queries), 2.x (Flux tasks) and 3 Core (neither) share no downsampling feature, while the
engine already reads every reading.

InfluxDB 2.x and 3 Core have no retention policies: the operator creates two buckets (or databases) with
these retentions and maps them for the v1 API (documented in docs/operations.md); oxyfleet does not
change them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import structlog

from core.errors import SinkError
from store.writer import V1Transport, classify_response

if TYPE_CHECKING:
    from core.settings import InfluxSettings
    from store.writer import Transport

__all__ = ["apply_retention", "results_policy", "shard_duration"]

log = structlog.get_logger("store.retention")

_HOURS: Final = {"h": 1, "d": 24, "w": 168}


def shard_duration(duration: str) -> str:
    """InfluxDB's own default shard group duration for a policy of ``duration`` (applies to new shards)."""
    if duration == "INF":
        return "7d"
    hours = int(duration[:-1]) * _HOURS[duration[-1]]
    return "1h" if hours < 48 else "1d" if hours <= 24 * 183 else "7d"  # InfluxDB's own rule


def results_policy(influx: InfluxSettings) -> str | None:
    """Where the health engine's results live: the long-term policy on the v1 API, else the default."""
    return influx.long_retention_policy or None if influx.api == "v1" else None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def apply_retention(transport: Transport, influx: InfluxSettings) -> None:
    """v1 with CREATE_DATABASE: bound the default policy to RAW_RETENTION, create the long-term policy.

    Idempotent: run at every start, it only changes what differs. A refusal (no admin rights) is a warning
    naming the statement, not a reason to stop: the data is still written, just not bounded.
    """
    if not isinstance(transport, V1Transport) or not influx.create_database:
        return
    db = _quote(influx.database)
    resp = transport.query(f"SHOW RETENTION POLICIES ON {db}")
    if resp.status in (401, 403):
        classify_response(resp.status, resp.data)
    statements: list[str] = []
    try:
        series = json.loads(resp.data)["results"][0].get("series", [])
        rows = [dict(zip(s["columns"], v, strict=True)) for s in series for v in s["values"]]
    except (ValueError, KeyError, IndexError):
        log.warning("store.retention_unreadable", body=resp.data[:200].decode(errors="replace"))
        return
    raw = influx.raw_retention
    long_rp = influx.long_retention_policy
    default = next((r for r in rows if r.get("default")), None)
    # Without a long-term policy the health results share the default one: bounding it would expire them.
    if long_rp and default is not None and _hours(default["duration"]) != _hours(raw):
        statements.append(
            f"ALTER RETENTION POLICY {_quote(default['name'])} ON {db} DURATION {raw} "
            f"SHARD DURATION {shard_duration(raw)}"
        )
    if long_rp and all(r["name"] != long_rp for r in rows):
        statements.append(f"CREATE RETENTION POLICY {_quote(long_rp)} ON {db} DURATION INF REPLICATION 1")
    for statement in statements:
        answer = transport.query(statement)
        if answer.status >= 300 or b'"error"' in answer.data:
            log.warning(
                "store.retention_not_applied",
                statement=statement,
                body=answer.data[:200].decode(errors="replace"),
            )
        else:
            log.info("store.retention_applied", statement=statement)


def _hours(duration: str) -> float:
    """Hours of an InfluxQL duration as written (``90d``) or as shown (``2160h0m0s``; ``0s`` = forever)."""
    if duration in ("INF", "0s"):
        return 0.0
    if duration[-1] in _HOURS and duration[:-1].isdigit():
        return float(int(duration[:-1]) * _HOURS[duration[-1]])
    hours, _, rest = duration.partition("h")
    try:
        return float(hours or 0) + (float(rest.partition("m")[0] or 0) / 60 if rest else 0.0)
    except ValueError as exc:
        raise SinkError(f"unexpected retention duration {duration!r}") from exc
