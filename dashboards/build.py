"""Build the Grafana dashboards of oxyfleet as JSON (``python -m dashboards.build``; ``--check`` to verify).

The committed files in ``dashboards/json/`` are what Grafana loads; a test fails when they differ from
what this script builds, and another runs every query in them against a real InfluxDB. Queries are
InfluxQL (InfluxDB 1.x, 2.x and 3 Core all serve it) and use only the measurement and field names the
ingester and the health engine write (see dashboards/README.md).

Template variables chain province -> hospital -> kind -> unit; every query filters on all four, so a
technician narrows the fleet down to one ward's units.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "influxdb", "uid": "oxyfleet-influxdb"}
FILTER = (
    "province =~ /^$province$/ AND hospital =~ /^$hospital$/ AND kind =~ /^$kind$/ AND unit_id =~ /^$unit$/"
)
# Current state = the last minute the engine wrote; 5 minutes covers its cycle and the minute boundary.
LIVE = "time > now() - 5m"
STATES = ("in_spec", "underperforming", "power_failure", "no_data", "off")


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value query variable with 'All' (Grafana turns it into a regex alternation)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def target(ref: str, query: str, alias: str = "", fmt: str = "time_series") -> dict[str, Any]:
    """One raw InfluxQL query of a panel."""
    out: dict[str, Any] = {
        "refId": ref,
        "datasource": DATASOURCE,
        "rawQuery": True,
        "query": query,
        "resultFormat": fmt,
    }
    if alias:
        out["alias"] = alias
    return out


def panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[dict[str, Any]],
    **extra: Any,  # noqa: ANN401 - Grafana panel options are free-form
) -> dict[str, Any]:
    """A panel at grid (x, y, w, h)."""
    x, y, w, h = grid
    return {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        **extra,
    }


def fleet_overview() -> dict[str, Any]:
    """Fleet overview: units by state, the worst units first, maintenance due, purity and flow spread."""
    current = (
        f"SELECT last(state) AS state, last(reason) AS reason, last(code) AS code, "
        f"last(maintenance_due) AS maintenance_due FROM unit_state WHERE {LIVE} AND {FILTER} "
        f"GROUP BY unit_id, hospital"
    )
    by_state = [
        target(chr(65 + i), f"SELECT count(code) FROM ({current}) WHERE state = '{state}'", alias=state)
        for i, state in enumerate(STATES)
    ]
    problems = target(
        "A",
        f"SELECT state, reason, code FROM ({current}) WHERE state != 'in_spec' AND state != 'off' "
        "GROUP BY unit_id, hospital",
        fmt="table",
    )
    last_values = target(
        "B",
        f"SELECT last(purity_pct) AS purity_pct, last(flow_lpm) AS flow_lpm FROM telemetry "
        f"WHERE $timeFilter AND {FILTER} GROUP BY unit_id, hospital",
        fmt="table",
    )
    maintenance = target(
        "A",
        f"SELECT maintenance_due FROM ({current}) WHERE maintenance_due = true GROUP BY unit_id, hospital",
        fmt="table",
    )
    purity = target(
        "A",
        f"SELECT last(purity_pct) FROM telemetry WHERE $timeFilter AND {FILTER} GROUP BY unit_id",
        fmt="table",
    )
    flow = target(
        "A",
        f"SELECT mean(flow_lpm) FROM telemetry WHERE $timeFilter AND {FILTER} "
        "GROUP BY time($__interval), unit_id fill(none)",
        alias="$tag_unit_id",
    )
    return {
        "uid": "oxyfleet-fleet-overview",
        "title": "oxyfleet - Fleet overview",
        "tags": ["oxyfleet"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables()},
        "panels": [
            panel(
                1,
                "Units by state (now)",
                "stat",
                (0, 0, 24, 4),
                by_state,
                options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
            ),
            panel(
                2,
                "Underperforming and silent units, worst first",
                "table",
                (0, 4, 16, 10),
                [problems, last_values],
                transformations=[
                    {"id": "merge"},
                    {
                        "id": "filterByValue",
                        "options": {
                            "filters": [{"fieldName": "state", "config": {"id": "isNotNull"}}],
                            "type": "include",
                            "match": "any",
                        },
                    },
                    {"id": "sortBy", "options": {"sort": [{"field": "code", "desc": True}]}},
                ],
            ),
            panel(3, "Maintenance due", "table", (16, 4, 8, 10), [maintenance]),
            panel(
                4,
                "Purity across the fleet (last reading per unit)",
                "histogram",
                (0, 14, 12, 8),
                [purity],
                options={"bucketSize": 1},
            ),
            panel(
                5,
                "Flow per unit",
                "timeseries",
                (12, 14, 12, 8),
                [flow],
                fieldConfig={"defaults": {"unit": "L/min"}, "overrides": []},
            ),
        ],
    }


def _variables() -> list[dict[str, Any]]:
    return [
        variable("province", "Province", 'SHOW TAG VALUES FROM unit_state WITH KEY = "province"'),
        variable(
            "hospital",
            "Hospital",
            'SHOW TAG VALUES FROM unit_state WITH KEY = "hospital" WHERE province =~ /^$province$/',
        ),
        variable(
            "kind",
            "Kind",
            'SHOW TAG VALUES FROM unit_state WITH KEY = "kind" '
            "WHERE province =~ /^$province$/ AND hospital =~ /^$hospital$/",
        ),
        variable(
            "unit",
            "Unit",
            'SHOW TAG VALUES FROM unit_state WITH KEY = "unit_id" WHERE '
            "province =~ /^$province$/ AND hospital =~ /^$hospital$/ AND kind =~ /^$kind$/",
        ),
    ]


def _dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    time_from: str = "now-6h",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["oxyfleet"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def _series(field: str) -> str:
    return (
        f"SELECT mean({field}) FROM telemetry WHERE $timeFilter AND {FILTER} "
        "GROUP BY time($__interval), unit_id fill(none)"
    )


def _bands(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "defaults": {
            "thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]},
            "custom": {"thresholdsStyle": {"mode": "line+area"}},
        },
        "overrides": [],
    }


def unit_detail() -> dict[str, Any]:
    """One unit (or a few): its readings against the 82 %/90 % bands, state timeline, events, rejections."""
    panels = [
        panel(
            1,
            "Purity (82 % critical, 90 % low)",
            "timeseries",
            (0, 0, 12, 8),
            [target("A", _series("purity_pct"), alias="$tag_unit_id")],
            fieldConfig=_bands(("red", None), ("orange", 82), ("green", 90)),
        ),
        panel(
            2,
            "Flow and setpoint",
            "timeseries",
            (12, 0, 12, 8),
            [
                target("A", _series("flow_lpm"), alias="$tag_unit_id flow"),
                target("B", _series("setpoint_lpm"), alias="$tag_unit_id setpoint"),
            ],
        ),
        panel(
            3,
            "Outlet pressure",
            "timeseries",
            (0, 8, 12, 8),
            [target("A", _series("outlet_kpa"), alias="$tag_unit_id")],
        ),
        panel(
            4,
            "Temperature",
            "timeseries",
            (12, 8, 12, 8),
            [target("A", _series("temp_c"), alias="$tag_unit_id")],
        ),
        panel(
            5,
            "State",
            "state-timeline",
            (0, 16, 24, 5),
            [
                target(
                    "A",
                    f"SELECT last(state) FROM unit_state WHERE $timeFilter AND {FILTER} "
                    "GROUP BY time(1m), unit_id fill(none)",
                    alias="$tag_unit_id",
                )
            ],
        ),
        panel(
            6,
            "State changes",
            "table",
            (0, 21, 12, 8),
            [
                target(
                    "A",
                    f'SELECT "from", "to", reason FROM unit_event WHERE $timeFilter AND {FILTER} '
                    "GROUP BY unit_id",
                    fmt="table",
                )
            ],
        ),
        panel(
            7,
            "Rejected messages from this unit",
            "table",
            (12, 21, 12, 8),
            [
                target(
                    "A",
                    "SELECT unit_id, detail, payload FROM rejected WHERE $timeFilter AND "
                    "unit_id =~ /^$unit$/ GROUP BY reason",
                    fmt="table",
                )
            ],
        ),
    ]
    return _dashboard("oxyfleet-unit-detail", "oxyfleet - Unit detail", panels, _variables())


_HOURS = ", ".join(f"sum({s}_s) / 3600 AS {s}_h" for s in STATES)
_AVAILABILITY = (
    "100 * sum(in_spec_s) / (sum(in_spec_s) + sum(underperforming_s) + sum(power_failure_s) "
    "+ sum(no_data_s)) AS availability_pct"
)


def hospital_uptime() -> dict[str, Any]:
    """Availability per unit and per hospital over the chosen range, with the time split by state."""
    panels = [
        panel(
            1,
            "Availability per hospital",
            "table",
            (0, 0, 24, 8),
            [
                target(
                    "A",
                    f"SELECT {_AVAILABILITY}, {_HOURS} FROM unit_state WHERE $timeFilter AND {FILTER} "
                    "GROUP BY hospital",
                    fmt="table",
                )
            ],
        ),
        panel(
            2,
            "Availability per unit",
            "table",
            (0, 8, 24, 12),
            [
                target(
                    "A",
                    f"SELECT {_AVAILABILITY}, {_HOURS} FROM unit_state WHERE $timeFilter AND {FILTER} "
                    "GROUP BY unit_id, hospital",
                    fmt="table",
                )
            ],
        ),
        panel(
            3,
            "Availability over time, per hospital",
            "timeseries",
            (0, 20, 24, 8),
            [
                target(
                    "A",
                    f"SELECT {_AVAILABILITY} FROM unit_state WHERE $timeFilter AND {FILTER} "
                    "GROUP BY time($__interval), hospital fill(none)",
                    alias="$tag_hospital",
                )
            ],
            fieldConfig={"defaults": {"unit": "percent", "min": 0, "max": 100}, "overrides": []},
        ),
    ]
    return _dashboard(
        "oxyfleet-hospital-uptime",
        "oxyfleet - Hospital uptime",
        panels,
        _variables()[:3],
        time_from="now-30d",
    )


def ingest_health() -> dict[str, Any]:
    """The ingester itself: throughput, rejections by reason, write latency, backlog, reconnects."""
    where = "WHERE $timeFilter AND instance =~ /^$instance$/"

    def rate(field: str) -> str:
        return (
            f"SELECT non_negative_derivative(last({field}), 1s) FROM oxyfleet_ingest {where} "
            "GROUP BY time($__interval), instance fill(none)"
        )

    def gauge(field: str) -> str:
        return f"SELECT max({field}) FROM oxyfleet_ingest {where} GROUP BY time($__interval), instance fill(none)"

    panels = [
        panel(
            1,
            "Messages per second",
            "timeseries",
            (0, 0, 12, 8),
            [
                target("A", rate("messages_received"), alias="received $tag_instance"),
                target("B", rate("points_written"), alias="written $tag_instance"),
                target("C", rate("points_rejected"), alias="rejected $tag_instance"),
            ],
        ),
        panel(
            2,
            "Rejected by reason",
            "timeseries",
            (12, 0, 12, 8),
            [
                target(
                    "A",
                    "SELECT count(payload_bytes) FROM rejected WHERE $timeFilter "
                    "GROUP BY time($__interval), reason fill(none)",
                    alias="$tag_reason",
                )
            ],
        ),
        panel(3, "Batch write time (ms)", "timeseries", (0, 8, 8, 8), [target("A", gauge("last_batch_ms"))]),
        panel(
            4,
            "Backlog and oldest unwritten (s)",
            "timeseries",
            (8, 8, 8, 8),
            [
                target("A", gauge("backlog"), alias="backlog $tag_instance"),
                target("B", gauge("oldest_unwritten_age_s"), alias="oldest $tag_instance"),
            ],
        ),
        panel(
            5,
            "Reconnects and write retries",
            "timeseries",
            (16, 8, 8, 8),
            [
                target("A", gauge("reconnects"), alias="reconnects $tag_instance"),
                target("B", gauge("write_retries"), alias="retries $tag_instance"),
            ],
        ),
        # Counters reach InfluxDB only while it takes writes: during an outage this panel shows the gap (and
        # the "Ingester stalled" rule fires); afterwards it shows the spool draining. Live values during an
        # outage are on the ingester's /metrics and in `oxyfleet check`.
        panel(
            6,
            "Spool: batches waiting, oldest (s), replay (points/s)",
            "timeseries",
            (0, 16, 24, 8),
            [
                target("A", gauge("spool_batches"), alias="batches $tag_instance"),
                target("B", gauge("spool_oldest_age_s"), alias="oldest $tag_instance"),
                target("C", gauge("spool_replay_points_per_s"), alias="replay $tag_instance"),
            ],
        ),
    ]
    instance = variable("instance", "Ingester", 'SHOW TAG VALUES FROM oxyfleet_ingest WITH KEY = "instance"')
    return _dashboard("oxyfleet-ingest-health", "oxyfleet - Ingest health", panels, [instance])


DASHBOARDS = {
    "fleet-overview.json": fleet_overview,
    "unit-detail.json": unit_detail,
    "hospital-uptime.json": hospital_uptime,
    "ingest-health.json": ingest_health,
}

# --- alert rules (Grafana file provisioning) ---------------------------------------------------------

PER_UNIT = "GROUP BY unit_id, hospital"


def _state_query(state: str) -> str:
    # A silent unit has no telemetry series, so unit state rules read the health engine's unit_state,
    # where "no_data" is a value like any other.
    return (
        f"SELECT count(code) FROM (SELECT last(state) AS state, last(code) AS code FROM unit_state "
        f"WHERE $timeFilter {PER_UNIT}) WHERE state = '{state}' {PER_UNIT}"
    )


# (uid, title, query, window s, reducer, comparison, threshold, for, severity, no-data state, what to check)
RULES: list[tuple[str, str, str, int, str, str, float, str, str, str, str]] = [
    (
        "oxyfleet-purity-critical",
        "Oxygen purity critical (below 82 %)",
        f"SELECT mean(purity_pct) FROM telemetry WHERE $timeFilter AND running = true {PER_UNIT}",
        180,
        "last",
        "lt",
        82.0,
        "2m",
        "critical",
        "OK",
        (
            "Purity below the 82 % alarm level: patients are not getting medical oxygen. Switch them to another "
            "source now, then check sieve beds, intake filter and compressor."
        ),
    ),
    (
        "oxyfleet-purity-low",
        "Oxygen purity low (below 90 %)",
        f"SELECT mean(purity_pct) FROM telemetry WHERE $timeFilter AND running = true {PER_UNIT}",
        180,
        "last",
        "lt",
        90.0,
        "5m",
        "warning",
        "OK",
        (
            "Purity below 90 %, the lower edge of medical oxygen: sieve beds wearing or a clogged intake filter. "
            "Plan service before it falls below 82 %."
        ),
    ),
    (
        "oxyfleet-low-flow",
        "Flow below 80 % of the setpoint",
        f"SELECT mean(flow_lpm) / mean(setpoint_lpm) FROM telemetry WHERE $timeFilter AND running = true {PER_UNIT}",
        180,
        "last",
        "lt",
        0.8,
        "2m",
        "warning",
        "OK",
        "Delivered flow well below the setpoint: check tubing for kinks, the humidifier bottle and the flow meter.",
    ),
    (
        "oxyfleet-unit-silent",
        "Unit silent (no data)",
        _state_query("no_data"),
        300,
        "last",
        "gt",
        0.0,
        "1m",
        "warning",
        "OK",
        (
            "Nothing received from the unit: check its power, the telemetry module and the site's network. "
            "A silent unit may still be delivering oxygen."
        ),
    ),
    (
        "oxyfleet-power-failure",
        "Unit power failure",
        _state_query("power_failure"),
        300,
        "last",
        "gt",
        0.0,
        "1m",
        "critical",
        "OK",
        "The unit lost mains power and is not producing oxygen: check the supply; patients may need cylinders.",
    ),
    (
        "oxyfleet-ingester-stalled",
        "Ingester stalled (no writes)",
        "SELECT count(messages_received) FROM oxyfleet_ingest WHERE $timeFilter",
        120,
        "last",
        "lt",
        1.0,
        "2m",
        "critical",
        "Alerting",
        (
            "The ingester has written nothing (not even its own counters) for two minutes: check `oxyfleet check`, "
            "the ingester's log, the broker and InfluxDB. Devices' messages wait in the broker meanwhile."
        ),
    ),
]


def _rule(
    uid: str,
    title: str,
    query: str,
    window: int,
    reducer: str,
    op: str,
    threshold: float,
    hold: str,
    severity: str,
    no_data: str,
    check: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": window, "to": 0},
                "datasourceUid": DATASOURCE["uid"],
                "model": {"refId": "A", "rawQuery": True, "query": query, "resultFormat": "time_series"},
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": reducer},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": op, "params": [threshold]}}],
                },
            },
        ],
        "noDataState": no_data,
        "execErrState": "Error",
        "for": hold,
        "labels": {"severity": severity, "team": "oxyfleet"},
        "annotations": {
            "summary": f"{title}: {{{{ $labels.unit_id }}}} at {{{{ $labels.hospital }}}}",
            "description": check,
        },
    }


def alert_rules() -> dict[str, Any]:
    """The alert rule group; per-unit rules fire one alert instance per unit (labels unit_id, hospital)."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "oxyfleet",
                "folder": "oxyfleet",
                "interval": "1m",
                "rules": [_rule(*r) for r in RULES],
            }
        ],
    }


def contact_points() -> dict[str, Any]:
    """Contact points and the notification policy, driven by environment variables of Grafana's container."""
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": 1,
                "name": "oxyfleet-oncall",
                "receivers": [
                    {
                        "uid": "oxyfleet-webhook",
                        "type": "webhook",
                        "settings": {"url": "${OXYFLEET_ALERT_WEBHOOK_URL}", "httpMethod": "POST"},
                    },
                    {
                        "uid": "oxyfleet-email",
                        "type": "email",
                        "settings": {"addresses": "${OXYFLEET_ALERT_EMAILS}"},
                    },
                ],
            }
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": "oxyfleet-oncall",
                "group_by": ["alertname", "hospital"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            }
        ],
    }


def render() -> dict[str, str]:
    """Path below dashboards/ -> text, as committed (JSON; provisioning YAML is JSON too, which YAML reads)."""
    files = {
        f"json/{name}": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }
    files["provisioning/alerting/rules.yaml"] = json.dumps(alert_rules(), indent=2) + "\n"
    files["provisioning/alerting/contact-points.yaml"] = json.dumps(contact_points(), indent=2) + "\n"
    return files


def main() -> None:
    """Write dashboards/json/*.json, or with --check fail when they are stale."""
    stale = []
    for name, text in render().items():
        path = HERE / name
        if "--check" in sys.argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.exit(f"stale dashboards (run python -m dashboards.build): {', '.join(stale)}")


if __name__ == "__main__":
    main()
