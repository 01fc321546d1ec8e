"""Every Grafana query in dashboards/, run against the real InfluxDB the way Grafana would run it.

No Grafana server can run on these machines, so this test does Grafana's part: it expands the InfluxQL
macros and the template variables with :func:`dashboards.lint.expand` (a variable the dashboard does not
define fails; multi-value variables become ``(a|b)``, regex-escaped), runs each query on a database
filled by the simulator (with faults scheduled by the test and still active at the end) and classified
by the health engine, checks that each panel gets data of the shape its type draws, and reads each
faulted unit's colour out of the panel's own thresholds and value mappings. The problem table's
transformations (merge, groupBy, filter, sort) are replayed in Python as Grafana documents them. Alert
rules are evaluated as Grafana does: query A over its range, reduce to the last value, apply the
threshold; no data counts as the rule's ``noDataState``.
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
import yaml

from dashboards.lint import expand
from dashboards.panels import SEVERITY_COLOURS, STATE_COLOURS
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from fleetsim.faults import Fault, FaultKind
from fleetsim.simulator import FleetPublisher, Simulator, units_from_inventory
from health.service import build_engine
from ingest.spool import Spool
from store.lineproto import LineBuilder
from store.schema import LONG_POLICY, STATES
from store.writer import InfluxSink, make_transport
from tests.integration.conftest import wait_until_stored

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from store.reader import InfluxQL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
BOARDS = ROOT / "dashboards" / "json"
RULES = ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml"
FAULTS = [
    FaultKind.SIEVE_WEAR,
    FaultKind.FLOW_RESTRICTION,
    FaultKind.POWER_FAILURE,
    FaultKind.SILENT,
    FaultKind.SWITCHED_OFF,
]
# What the health engine says about each fault at the end (state, severity code).
VERDICT = {
    "sieve_wear": ("underperforming", 2),  # purity below the critical level
    "flow_restriction": ("underperforming", 1),
    "power_failure": ("power_failure", 2),
    "silent": ("no_data", 1),
    "switched_off": ("off", 0),
}


@pytest.fixture
def fleet(start_ingester, influx, prefix, settings_for, tmp_path: Path, wait_for) -> Iterator[dict[str, Any]]:
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
    wait_until_stored(influx, summary.readings_published)
    # What the ingester does every 10 s in production, for the last five minutes: its real snapshot through
    # a line builder of the same instance (the ingester's own one has handed out later timestamps already).
    pipeline = running.ingester.pipeline
    stats = LineBuilder(instance=pipeline.builder.instance_tag)
    now_ns = time.time_ns()
    pipeline.sink.write([stats.stats(pipeline.snapshot(), now_ns - k * 10**10) for k in range(30, -1, -1)])
    sink = InfluxSink(make_transport(settings.influx))
    # Built the way `oxyfleet health` builds it: the lifecycle on, results in the long-term policy.
    engine = build_engine(settings_for("dash-health", inventory_file=path), writing=True)
    assert engine.long_rp == LONG_POLICY
    now = int(time.time() * 1000)
    engine.evaluate_range(sim.sim_start_ms, now)
    assert not influx.rows("SELECT count(code) FROM unit_state")  # not in the default policy: its own
    yield {
        "units": units,
        "faulted": faulted,
        "start": sim.sim_start_ms,
        "fault_begin": sim.sim_start_ms + (sim.sim_end_ms - sim.sim_start_ms) // 3,
        "end": now,
        "inventory": inventory,
        "running": running,
        "sink": sink,
        "tmp": tmp_path,
    }
    sink.close()
    assert engine.sink is not None
    engine.sink.close()
    engine.reader.close()


def board(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((BOARDS / name).read_text())
    return loaded


def series(
    influx: InfluxQL, dashboard: dict[str, Any], query: str, fleet: dict[str, Any], **selected: list[str]
):
    """The series InfluxDB answers for ``query`` as Grafana would send it (variables not given: All)."""
    text = expand(query, dashboard["templating"]["list"], selected, fleet["start"], fleet["end"])
    result = influx.raw(text)["results"][0]
    assert "error" not in result, (text, result)
    return result.get("series", [])


def rows(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table format: one dict per row, the series' tags as columns."""
    return [
        {**dict(zip(s["columns"], v, strict=True)), **s.get("tags", {})} for s in found for v in s["values"]
    ]


def step_colour(thresholds: dict[str, Any], value: float) -> str:
    """Grafana's threshold rule: the colour of the highest step whose value is at most ``value``."""
    colour: str = thresholds["steps"][0]["color"]
    for step in thresholds["steps"][1:]:
        if value >= step["value"]:
            colour = step["color"]
    return colour


def mapped(mappings: list[dict[str, Any]], value: Any) -> dict[str, Any]:
    return next((m["options"][str(value)] for m in mappings if str(value) in m["options"]), {})


def override(panel: dict[str, Any], name: str, prop: str) -> Any:
    for o in panel["fieldConfig"]["overrides"]:
        if o["matcher"]["options"] == name or (
            o["matcher"]["id"] == "byRegexp" and re.fullmatch(o["matcher"]["options"], name)
        ):
            for p in o["properties"]:
                if p["id"] == prop:
                    return p["value"]
    return panel["fieldConfig"]["defaults"].get(prop)


def check_shape(panel: dict[str, Any], found: list[dict[str, Any]]) -> None:
    """The data a panel of this type can draw."""
    kind = panel["type"]
    for s in found:
        values = [v for row in s["values"] for v in row[1:] if v is not None]
        if kind == "stat":
            assert (
                len(found) == 1 and len(s["values"]) == 1 and all(isinstance(v, int | float) for v in values)
            )
        elif kind in ("timeseries", "histogram"):
            assert values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values), s
        elif kind == "state-timeline":
            assert set(values) <= set(STATES), s
        elif kind == "table":
            assert len(s["columns"]) >= 2


def test_dashboards_are_built_from_code() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dashboards.build", "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# Panels that may be empty on this fleet, and why.
MAY_BE_EMPTY = {
    "Rejected by reason",  # the simulator sent no malformed messages
    "Rejected messages from this unit",
    "Maintenance due",  # depends on the random run hours
    "DOCS: product flow (80 % of rating)",  # concentrators have no plant measurements
    "DOCS: product, tank and feed pressure",
    "DOCS: compressor temperature and dew point",
}


def test_every_panel_gets_data_of_its_shape(fleet, influx) -> None:
    by_kind = {kind: unit for unit, kind in fleet["faulted"].items()}
    docs = [u.unit_id for u in fleet["units"] if u.kind == "docs"]
    selections: dict[str, list[dict[str, list[str]]]] = {
        "fleet-overview.json": [{}],
        "hospital-uptime.json": [{}],
        "ingest-health.json": [{}],
        # One unit at a time (the selector is single-value), and a DOCS plant for its own panels.
        "unit-detail.json": [{"unit": [by_kind["sieve_wear"]]}, *({"unit": [d]} for d in docs[:1])],
    }
    for name, choices in selections.items():
        dashboard = board(name)
        for variable in dashboard["templating"]["list"]:
            assert series(influx, dashboard, variable["query"], fleet), (name, variable["name"])
        for panel in dashboard["panels"]:
            answered = False
            for selected in choices:
                for target in panel["targets"]:
                    found = series(influx, dashboard, target["query"], fleet, **selected)
                    check_shape(panel, found)
                    answered = answered or bool(found)
            optional = panel["title"] in MAY_BE_EMPTY or (panel["type"] == "stat")
            assert answered or optional, (name, panel["title"])
    assert docs, "the sample fleet has a DOCS plant (units_from_inventory picks one)"


def test_each_faulted_unit_shows_in_the_colour_of_its_state(fleet, influx) -> None:
    overview_colours(fleet, influx)
    unit_detail_colours(fleet, influx)
    uptime_colours(fleet, influx)


def overview_colours(fleet: dict[str, Any], influx: InfluxQL) -> None:
    overview = board("fleet-overview.json")
    panels = {p["title"]: p for p in overview["panels"]}

    # Counts per state: each in its fixed colour, zeros as 0 (noValue).
    counts_panel = panels["Units by state (now)"]
    counts = {}
    for target in counts_panel["targets"]:
        found = series(influx, overview, target["query"], fleet)
        counts[target["alias"]] = (
            found[0]["values"][0][1] if found else int(counts_panel["fieldConfig"]["defaults"]["noValue"])
        )
    expected = dict.fromkeys(counts, 0)
    for kind in fleet["faulted"].values():
        state, code = VERDICT[kind]
        expected[f"{state}_critical" if state == "underperforming" and code == 2 else state] += 1
    expected["in_spec"] = 12 - len(fleet["faulted"])
    assert counts == expected
    for alias in counts:
        colour = override(counts_panel, alias, "color")["fixedColor"]
        assert colour == (SEVERITY_COLOURS[2] if alias.endswith("_critical") else STATE_COLOURS[alias])

    # The problem table, through Grafana's merge -> groupBy -> filter -> sort.
    table = panels["Units to chase, worst first"]
    merged = [r for t in table["targets"] for r in rows(series(influx, overview, t["query"], fleet))]
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in merged:
        g = groups.setdefault((r["unit_id"], r["hospital"]), {"since": r["time"]})
        g["since"] = max(g["since"], r["time"])
        g.update({k: v for k, v in r.items() if v is not None and k != "time"})
    shown = sorted((g for g in groups.values() if "state" in g), key=lambda g: -g["code"])
    assert [g["code"] for g in shown] == sorted((g["code"] for g in shown), reverse=True)
    assert {g["unit_id"] for g in shown} == {u for u, k in fleet["faulted"].items() if VERDICT[k][1] > 0}
    state_mappings = override(table, "state", "mappings")
    severity = override(table, "severity", "thresholds")
    for g in shown:
        state, code = VERDICT[fleet["faulted"][g["unit_id"]]]
        assert (g["state"], g["code"]) == (state, code), g
        assert mapped(state_mappings, g["state"])["color"] == STATE_COLOURS[state]
        assert step_colour(severity, g["code"]) == SEVERITY_COLOURS[code]
        assert g["since"] >= fleet["fault_begin"], g  # the change into the fault, not the range start
        if fleet["faulted"][g["unit_id"]] in ("sieve_wear", "flow_restriction"):
            assert g["purity_pct"] > 0 and g["flow_lpm"] >= 0, g  # telemetry columns filled in the same row
    sieve = next(g for g in shown if fleet["faulted"][g["unit_id"]] == "sieve_wear")
    assert sieve["reason"] == "purity_critical"

    # Narrowed to one hospital (one value, regex-escaped) and to two units (several values as (a|b)).
    problems = table["targets"][0]["query"]
    some = next(u for u, k in fleet["faulted"].items() if k == "flow_restriction")
    hospital = fleet["inventory"].units[some].hospital
    found = rows(series(influx, overview, problems, fleet, hospital=[hospital]))
    assert {r["unit_id"] for r in found} == {g["unit_id"] for g in shown if g["hospital"] == hospital}
    pair = sorted(g["unit_id"] for g in shown)[:2]
    assert sorted(r["unit_id"] for r in rows(series(influx, overview, problems, fleet, unit=pair))) == pair


def unit_detail_colours(fleet: dict[str, Any], influx: InfluxQL) -> None:
    """The unit's purity falls in its own model's red band; the timeline maps its state to its colour."""
    detail = board("unit-detail.json")
    dpanels = {p["title"]: p for p in detail["panels"]}
    by_kind = {kind: unit for unit, kind in fleet["faulted"].items()}
    purity = next(p for t, p in dpanels.items() if t.startswith("Purity"))
    found = series(influx, detail, purity["targets"][0]["query"], fleet, unit=[by_kind["sieve_wear"]])
    assert len(found) == 1
    name = f"{found[0]['tags']['unit_id']} ({found[0]['tags']['model']})"  # the alias "$tag_unit_id ($tag_model)"
    last = next(v for _, v in reversed(found[0]["values"]) if v is not None)
    assert step_colour(override(purity, name, "thresholds"), last) == "red"
    timeline = dpanels["State"]
    for kind, unit in by_kind.items():
        found = series(influx, detail, timeline["targets"][0]["query"], fleet, unit=[unit])
        last_state = next(v for _, v in reversed(found[0]["values"]) if v is not None)
        assert last_state == VERDICT[kind][0]
        assert (
            mapped(timeline["fieldConfig"]["defaults"]["mappings"], last_state)["color"]
            == STATE_COLOURS[last_state]
        )


def uptime_colours(fleet: dict[str, Any], influx: InfluxQL) -> None:
    """A silent unit is red (< 90 %), healthy ones green (>= 98 %), off shown as hours."""
    by_kind = {kind: unit for unit, kind in fleet["faulted"].items()}
    uptime = board("hospital-uptime.json")
    upanels = {p["title"]: p for p in uptime["panels"]}
    per_unit = upanels["Availability per unit, worst first"]
    found = {r["unit_id"]: r for r in rows(series(influx, uptime, per_unit["targets"][0]["query"], fleet))}
    steps = override(per_unit, "availability_pct", "thresholds")
    healthy = [u.unit_id for u in fleet["units"] if u.unit_id not in fleet["faulted"]]
    assert all(step_colour(steps, found[u]["availability_pct"]) == "green" for u in healthy)
    assert step_colour(steps, found[by_kind["silent"]]["availability_pct"]) == "red"
    assert found[by_kind["switched_off"]]["off_h"] > 0
    hospitals = rows(
        series(
            influx, uptime, upanels["Availability per hospital, worst first"]["targets"][0]["query"], fleet
        )
    )
    assert {r["hospital"] for r in hospitals} == {
        fleet["inventory"].units[u.unit_id].hospital for u in fleet["units"]
    }
    provinces = rows(
        series(influx, uptime, upanels["Availability per province"]["targets"][0]["query"], fleet)
    )
    assert {r["province"] for r in provinces} == {
        fleet["inventory"].units[u.unit_id].province for u in fleet["units"]
    }
    zones = override(upanels["Availability per province"], "province", "mappings")
    assert all(
        re.search(r"\((WIB|WITA|WIT), UTC\+\d\)$", mapped(zones, r["province"])["text"]) for r in provinces
    )


def firing(influx: InfluxQL, rule: dict[str, Any], end_ms: int) -> set[str]:
    """Evaluate a rule as Grafana does: query A over its range, reduce each series to its last value,
    apply the threshold; no series at all is the rule's noDataState."""
    query, reduce_, threshold = (d["model"] for d in rule["data"])
    window_ms = rule["data"][0]["relativeTimeRange"]["from"] * 1000
    assert reduce_["reducer"] == "last"
    result = influx.raw(expand(query["query"], [], {}, end_ms - window_ms, end_ms))["results"][0]
    assert "error" not in result, result
    last: dict[str, float] = {}
    for s in result.get("series", []):
        tags = s.get("tags", {})
        value = next((row[1] for row in reversed(s["values"]) if row[1] is not None), None)
        if value is not None:
            last[tags.get("unit_id") or tags.get("instance") or "fleet"] = value
    evaluator = threshold["conditions"][0]["evaluator"]
    params = evaluator["params"]
    tests: dict[str, Callable[[float], bool]] = {
        "gt": lambda v: v > params[0],
        "lt": lambda v: v < params[0],
        "within_range": lambda v: params[0] < v < params[1],
    }
    test = tests[evaluator["type"]]
    if not last:
        return {"no data"} if rule["noDataState"] == "Alerting" else set()
    return {key for key, value in last.items() if test(value)}


def test_alert_rules_fire_for_the_faulted_units_only(fleet, influx) -> None:
    rules = {r["uid"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    by_state: dict[int, set[str]] = {1: set(), 2: set()}
    for unit, kind in fleet["faulted"].items():
        if VERDICT[kind][1]:
            by_state[VERDICT[kind][1]].add(unit)
    expected = {
        "oxyfleet-unit-critical": by_state[2],  # sieve wear (purity critical), power failure
        "oxyfleet-unit-warning": by_state[1],  # low flow, silent
        "oxyfleet-ingester-stalled": set(),
        "oxyfleet-spool-filling": set(),
        "oxyfleet-health-engine-late": set(),
    }
    assert set(rules) == set(expected)
    for uid, rule in rules.items():
        assert rule["data"][0]["datasourceUid"] == "oxyfleet-influxdb"
        assert firing(influx, rule, fleet["end"]) == expected[uid], uid

    # The ingester stops: three minutes later Grafana sees no writes from its instance.
    running = fleet["running"]
    instance = running.ingester.pipeline.builder.instance_tag
    running.shutdown()
    stalled = rules["oxyfleet-ingester-stalled"]
    assert firing(influx, stalled, int(time.time() * 1000) + 240_000) == {instance}
    assert firing(influx, stalled, fleet["start"] - 7200_000) == {"no data"}  # no ingester ever wrote

    # The spool fills past 80 %: the ingester's next counters (its real snapshot, with a real spool
    # filled here) make the rule fire for that instance.
    pipeline = running.ingester.pipeline
    spool = Spool(fleet["tmp"] / "spool", max_bytes=64 * 1024, fsync=False)
    while spool.bytes < 0.85 * spool.max_bytes:
        assert spool.put([f"telemetry,unit_id=x v=1 {len(spool.directory.name)}" * 40], 1)
    pipeline.spool = spool
    fleet["sink"].write([pipeline.builder.stats(pipeline.snapshot())])
    assert firing(influx, rules["oxyfleet-spool-filling"], int(time.time() * 1000) + 1000) == {instance}
    spool.close()

    # The health engine stops writing: five minutes on, the late rule fires.
    assert firing(influx, rules["oxyfleet-health-engine-late"], int(time.time() * 1000) + 600_000) == {
        "no data"
    }
