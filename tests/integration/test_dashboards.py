"""Every Grafana query in dashboards/json, run against the real InfluxDB the way Grafana would run it.

No Grafana server can run on these machines, so this test does Grafana's part: it expands the InfluxQL
macros (``$timeFilter``, ``$__interval``/``$interval``) and the template variables (``/^$var$/`` with
"All" as ``.*``, one value regex-escaped, several values as ``(a|b)``) as Grafana's InfluxDB datasource
does, runs each query on a database filled by the simulator (with faults scheduled by the test and still
active at the end) and classified by the health engine, and checks what the panels would show.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from fleetsim.faults import Fault, FaultKind
from fleetsim.simulator import FleetPublisher, Simulator, units_from_inventory
from health.engine import HealthEngine
from store.writer import InfluxSink, make_transport

if TYPE_CHECKING:
    from store.reader import InfluxQL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))
FAULTS = [
    FaultKind.SIEVE_WEAR,
    FaultKind.FLOW_RESTRICTION,
    FaultKind.POWER_FAILURE,
    FaultKind.SILENT,
    FaultKind.SWITCHED_OFF,
]


def regex_escape(value: str) -> str:
    # Grafana's InfluxDB datasource escapes regex metacharacters of variable values used in /.../.
    return re.sub(r"([\\^$*+?.()|{}\[\]/-])", r"\\\1", value)


def expand(
    query: str, variables: dict[str, list[str]], start_ms: int, end_ms: int, interval: str = "1m"
) -> str:
    def value(name: str) -> str:
        values = variables.get(name, ["$__all"])
        if values == ["$__all"]:
            return ".*"
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$__interval", interval).replace("$interval", interval)
    return re.sub(r"\$(\w+)", lambda m: value(m.group(1)), query)


@pytest.fixture
def fleet(start_ingester, influx, prefix, settings_for, tmp_path: Path, wait_for) -> dict[str, Any]:
    """12 sample units for 30 simulated minutes; five of them with a fault still going on at the end."""
    inventory = load_inventory(SAMPLE_INVENTORY)
    units = units_from_inventory(inventory, 12, random.Random(4))
    path = tmp_path / "inventory.csv"
    path.write_text(write_inventory(inventory.units[u.unit_id] for u in units))
    running = start_ingester(inventory_file=path)
    settings = settings_for("dash-pub")
    publisher = FleetPublisher(settings.mqtt.host, settings.mqtt.port)
    sim = Simulator(
        units, publisher, seed=4, duration_s=20, speed=90, fault_share=0.0, malformed_share=0.0, prefix=prefix
    )
    faulted = {}
    for unit, kind in zip(units[1:], FAULTS, strict=False):  # units[0] may be a DOCS plant; keep it healthy
        begin = sim.sim_start_ms + (sim.sim_end_ms - sim.sim_start_ms) // 3
        params = {"flow_factor": 0.5} if kind is FaultKind.FLOW_RESTRICTION else {}
        # Still going on at the end; sieve wear is near its 75 % floor by then (purity critical).
        end = sim.sim_end_ms + (60_000 if kind is FaultKind.SIEVE_WEAR else 3600_000)
        unit.faults.append(Fault(unit.unit_id, kind, begin, end, params))
        faulted[unit.unit_id] = kind.value
    summary = sim.run(threading.Event())
    publisher.close()
    wait_for(
        lambda: (
            (influx.rows("SELECT count(seq) FROM telemetry") or [{"count": 0}])[0]["count"]
            == summary.readings_published
        ),
        timeout=60,
    )
    # What the ingester does every 10 s in production: here two points, minutes apart, so rates exist.
    pipeline = running.ingester.pipeline
    now_ns = time.time_ns()
    pipeline.sink.write([pipeline.builder.stats(pipeline.snapshot(), now_ns - 180 * 10**9)])
    pipeline.write_stats()
    sink = InfluxSink(make_transport(settings.influx))
    engine = HealthEngine(influx, sink, path)
    now = int(time.time() * 1000)
    engine.evaluate_range(sim.sim_start_ms, now)
    sink.close()
    return {"units": units, "faulted": faulted, "start": sim.sim_start_ms, "end": now, "inventory": inventory}


def run(
    influx: InfluxQL, query: str, fleet: dict[str, Any], variables: dict[str, list[str]] | None = None
) -> list[dict[str, Any]]:
    return influx.rows(expand(query, variables or {}, fleet["start"], fleet["end"]))


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboards_are_built_from_code() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dashboards.build", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert DASHBOARDS


def test_every_query_runs_and_the_overview_shows_the_faulted_units(fleet, influx) -> None:
    overview = json.loads((ROOT / "dashboards" / "json" / "fleet-overview.json").read_text())
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            assert run(influx, variable["query"], fleet), (path.name, variable["name"])
        for _title, t in targets(dashboard):
            assert t["datasource"]["uid"] == "oxyfleet-influxdb"
            run(influx, t["query"], fleet)  # raises on any InfluxQL error

    panels = {p["title"]: p for p in overview["panels"]}
    counts = {}
    for t in panels["Units by state (now)"]["targets"]:
        rows = run(influx, t["query"], fleet)
        counts[t["alias"]] = int(rows[0]["count"]) if rows else 0
    expected = {"in_spec": 12 - 5, "underperforming": 2, "power_failure": 1, "no_data": 1, "off": 1}
    assert counts == expected

    problems = panels["Underperforming and silent units, worst first"]["targets"][0]
    rows = run(influx, problems["query"], fleet)
    shown = {r["unit_id"]: r["state"] for r in rows}
    assert set(shown) == {u for u, kind in fleet["faulted"].items() if kind != "switched_off"}
    assert {shown[u] for u, k in fleet["faulted"].items() if k == "silent"} == {"no_data"}

    # Narrowed to one hospital (one value, regex-escaped) and to two units (several values as (a|b)).
    some = next(u for u in fleet["faulted"] if fleet["faulted"][u] == "flow_restriction")
    hospital = fleet["inventory"].units[some].hospital
    rows = run(influx, problems["query"], fleet, {"hospital": [hospital]})
    assert {r["unit_id"] for r in rows} == {
        u for u in shown if fleet["inventory"].units[u].hospital == hospital
    }
    pair = sorted(shown)[:2]
    rows = run(influx, problems["query"], fleet, {"unit": pair})
    assert sorted(r["unit_id"] for r in rows) == pair
    units_var = overview["templating"]["list"][3]
    listed = {r["value"] for r in run(influx, units_var["query"], fleet, {"hospital": [hospital]})}
    assert listed == {
        u.unit_id for u in fleet["units"] if fleet["inventory"].units[u.unit_id].hospital == hospital
    }


def firing(influx: InfluxQL, rule: dict[str, Any], fleet: dict[str, Any]) -> set[str]:
    """Evaluate a rule as Grafana does: query A over its range, reduce each series, apply the threshold."""
    query, reduce_, threshold = (d["model"] for d in rule["data"])
    window_ms = rule["data"][0]["relativeTimeRange"]["from"] * 1000
    rows = influx.rows(expand(query["query"], {}, fleet["end"] - window_ms, fleet["end"]))
    assert reduce_["reducer"] == "last"
    last: dict[str, float] = {}
    for row in rows:  # rows are time-ordered per series
        value = next(v for k, v in row.items() if k not in ("time", "unit_id", "hospital"))
        if value is not None:
            last[row.get("unit_id", "fleet")] = value
    evaluator = threshold["conditions"][0]["evaluator"]
    limit = evaluator["params"][0]
    above = evaluator["type"] == "gt"
    fired = {unit for unit, value in last.items() if (value > limit if above else value < limit)}
    if not last and rule["noDataState"] == "Alerting":
        fired = {"fleet"}
    return fired


def test_alert_rules_fire_for_the_faulted_units_only(fleet, influx) -> None:
    import yaml

    rules = {
        r["uid"]: r
        for g in yaml.safe_load(
            (ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text()
        )["groups"]
        for r in g["rules"]
    }
    by_kind = {kind: unit for unit, kind in fleet["faulted"].items()}
    expected = {
        "oxyfleet-purity-critical": {by_kind["sieve_wear"]},
        "oxyfleet-purity-low": {by_kind["sieve_wear"]},
        "oxyfleet-low-flow": {by_kind["flow_restriction"]},
        "oxyfleet-unit-silent": {by_kind["silent"]},
        "oxyfleet-power-failure": {by_kind["power_failure"]},
        "oxyfleet-ingester-stalled": set(),
    }
    assert set(rules) == set(expected)
    for uid, rule in rules.items():
        assert rule["data"][0]["datasourceUid"] == "oxyfleet-influxdb"
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["description"]
        assert firing(influx, rule, fleet) == expected[uid], uid
    # With nothing written by the ingester, the stalled rule fires (no data is the alert).
    stalled = rules["oxyfleet-ingester-stalled"]
    assert firing(influx, stalled, {**fleet, "end": fleet["start"] - 3600_000}) == {"fleet"}


def test_unit_detail_and_hospital_uptime_show_the_faults(fleet, influx) -> None:
    def panel_targets(name: str) -> dict[str, list[dict[str, Any]]]:
        dashboard = json.loads((ROOT / "dashboards" / "json" / name).read_text())
        return {p["title"]: p["targets"] for p in dashboard["panels"]}

    detail = panel_targets("unit-detail.json")
    by_kind = {kind: unit for unit, kind in fleet["faulted"].items()}
    sieve = by_kind["sieve_wear"]
    purity = run(influx, detail["Purity (82 % critical, 90 % low)"][0]["query"], fleet, {"unit": [sieve]})
    assert {r["unit_id"] for r in purity} == {sieve}
    assert purity[-1]["mean"] < 82 < purity[0]["mean"]
    changes = run(influx, detail["State changes"][0]["query"], fleet, {"unit": [by_kind["flow_restriction"]]})
    assert [(r["from"], r["to"], r["reason"]) for r in changes][-1] == (
        "in_spec",
        "underperforming",
        "low_flow",
    )
    timeline = run(influx, detail["State"][0]["query"], fleet, {"unit": [by_kind["silent"]]})
    assert timeline[-1]["last"] == "no_data"

    uptime = panel_targets("hospital-uptime.json")
    rows = {r["unit_id"]: r for r in run(influx, uptime["Availability per unit"][0]["query"], fleet)}
    healthy = [u.unit_id for u in fleet["units"] if u.unit_id not in fleet["faulted"]]
    assert all(rows[u]["availability_pct"] > 99 for u in healthy), {
        u: rows[u]["availability_pct"] for u in healthy
    }
    assert rows[by_kind["silent"]]["availability_pct"] < 90
    assert rows[by_kind["switched_off"]]["off_h"] > 0
    hospitals = run(influx, uptime["Availability per hospital"][0]["query"], fleet)
    assert {r["hospital"] for r in hospitals} == {
        fleet["inventory"].units[u.unit_id].hospital for u in fleet["units"]
    }
