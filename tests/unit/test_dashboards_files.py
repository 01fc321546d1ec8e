"""The committed Grafana files: parseable by grafana-foundation-sdk, stable uids, one datasource uid,
and a compose file that mounts them (no Docker engine here, so the compose file is parsed, not run)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

ROOT = Path(__file__).resolve().parent.parent.parent
JSON = ROOT / "dashboards" / "json"
UIDS = {
    "fleet-overview.json": "oxyfleet-fleet-overview",
    "unit-detail.json": "oxyfleet-unit-detail",
    "hospital-uptime.json": "oxyfleet-hospital-uptime",
    "ingest-health.json": "oxyfleet-ingest-health",
}


def datasource_refs(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        found += [node["datasourceUid"]] if "datasourceUid" in node else []
        return found + [r for v in node.values() for r in datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in datasource_refs(v)]
    return []


@pytest.mark.parametrize(("name", "uid"), sorted(UIDS.items()))
def test_dashboard_round_trips_through_the_foundation_sdk(name: str, uid: str) -> None:
    data = json.loads((JSON / name).read_text())
    dashboard = Dashboard.from_json(data)
    assert dashboard.uid == uid == data["uid"]
    assert len(dashboard.panels or []) == len(data["panels"])
    again = Dashboard.from_json(json.loads(json.dumps(dashboard, cls=JSONEncoder)))
    assert again.uid == uid and [p.title for p in again.panels or []] == [p["title"] for p in data["panels"]]


def test_every_datasource_reference_is_the_provisioned_one() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "datasources" / "oxyfleet.yaml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    assert sorted(p.name for p in JSON.glob("*.json")) == sorted(UIDS)
    refs = [r for name in UIDS for r in datasource_refs(json.loads((JSON / name).read_text()))]
    rules = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text())
    refs += [r for r in datasource_refs(rules) if r != "__expr__"]
    assert refs and all((r["uid"] if isinstance(r, dict) else r) == uid for r in refs)


def test_compose_runs_grafana_with_the_provisioning_mounted() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "ingester", "health", "grafana"} <= set(services)
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts == {
        "/etc/oxyfleet/provisioning": "./dashboards/provisioning",
        # The shared datasource as the read-only InfluxDB user (tests/unit/test_docker_files.py).
        "/etc/oxyfleet/provisioning/datasources": "./docker/grafana/datasources",
        "/var/lib/grafana/dashboards/oxyfleet": "./dashboards/json",
    }
    # grafana-start.sh assembles Grafana's provisioning directory from the mount, then starts Grafana.
    assert grafana["entrypoint"] == ["/bin/sh", "/etc/oxyfleet/provisioning/grafana-start.sh"]
    assert grafana["environment"]["GF_PATHS_PROVISIONING"].startswith("/var/lib/grafana/")
    provider = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "dashboards" / "oxyfleet.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/oxyfleet"
    for source in mounts.values():
        assert (ROOT / source).is_dir()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]


# --- issue 14: variables, colours, alert logic, contact points -----------------------------------------


def _board(name: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads((JSON / name).read_text())
    return board


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_query_uses_only_variables_its_dashboard_defines(name: str) -> None:
    from dashboards.lint import problems

    assert problems(_board(name)) == []


def test_the_variable_check_catches_an_undefined_variable() -> None:
    """The bug issue 14 found: Hospital uptime filtered on $unit without defining it."""
    from dashboards.lint import problems

    board = _board("hospital-uptime.json")
    board["templating"]["list"] = [v for v in board["templating"]["list"] if v["name"] != "unit"]
    found = problems(board)
    assert found and all("undefined variable $unit" in p for p in found)
    board = _board("unit-detail.json")
    board["panels"][0]["targets"][0]["alias"] = "$tag_hospital"
    assert any("does not group by hospital" in p for p in problems(board))


def test_variables_expand_the_way_grafana_does_for_influxql() -> None:
    from dashboards.lint import UndefinedVariableError, expand

    variables = _board("fleet-overview.json")["templating"]["list"]
    query = 'SELECT x FROM m WHERE "unit_id" =~ /^$unit$/ AND "hospital" =~ /^$hospital$/ AND $timeFilter'
    out = expand(query, variables, {"unit": ["OC-1.a", "OC/2"], "hospital": ["RS (Umum)"]}, 1000, 2000)
    assert out == (
        'SELECT x FROM m WHERE "unit_id" =~ /^(OC\\-1\\.a|OC\\/2)$/ AND "hospital" =~ /^RS \\(Umum\\)$/ '
        "AND time >= 1000ms and time <= 2000ms"
    )
    assert "/^.*$/" in expand('"kind" =~ /^$kind$/', variables, {}, 0, 1)  # "All" is the allValue
    with pytest.raises(UndefinedVariableError):
        expand('"x" =~ /^$nonesuch$/', variables, {}, 0, 1)
    single = _board("unit-detail.json")["templating"]["list"]
    unit = next(v for v in single if v["name"] == "unit")
    assert not unit["multi"] and not unit["includeAll"]  # Unit detail shows one unit
    with pytest.raises(UndefinedVariableError):
        expand('"unit_id" =~ /^$unit$/', single, {}, 0, 1)  # no "All" to fall back on


def test_alert_rules_use_no_dashboard_variables() -> None:
    from dashboards.lint import BUILTINS, used_variables

    rules = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert used_variables(rule["data"][0]["model"]["query"]) <= BUILTINS, rule["uid"]


def test_every_state_has_one_colour_everywhere_a_state_is_shown() -> None:
    from dashboards.panels import STATE_COLOURS, state_mappings
    from store.schema import STATES

    assert set(STATE_COLOURS) == set(STATES)
    assert len({STATE_COLOURS[s] for s in STATES}) == len(STATES)  # no two states look alike
    mapping = state_mappings()[0]["options"]
    assert {s: m["color"] for s, m in mapping.items()} == STATE_COLOURS
    overview = {p["title"]: p for p in _board("fleet-overview.json")["panels"]}
    counts = overview["Units by state (now)"]
    assert counts["fieldConfig"]["defaults"]["noValue"] == "0"  # zero units in a state shows 0
    aliases = {t["alias"] for t in counts["targets"]}
    assert set(STATES) <= aliases
    for override in counts["fieldConfig"]["overrides"]:
        alias = override["matcher"]["options"]
        colour = next(p["value"]["fixedColor"] for p in override["properties"] if p["id"] == "color")
        assert colour == ("red" if alias.endswith("_critical") else STATE_COLOURS[alias])
    timeline = next(p for p in _board("unit-detail.json")["panels"] if p["type"] == "state-timeline")
    assert timeline["fieldConfig"]["defaults"]["mappings"] == state_mappings()


def test_problem_rows_link_to_unit_detail_for_that_unit() -> None:
    overview = {p["title"]: p for p in _board("fleet-overview.json")["panels"]}
    table = overview["Units to chase, worst first"]
    links = [
        prop["value"][0]["url"]
        for o in table["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "links"
    ]
    assert links == ["/d/oxyfleet-unit-detail/unit-detail?var-unit=${__value.raw}&${__url_time_range}"]
    unit_detail = _board("unit-detail.json")
    assert "unit" in {v["name"] for v in unit_detail["templating"]["list"]}
    renamed = next(t for t in table["transformations"] if t["id"] == "organize")["options"]["renameByName"]
    shown = set(renamed.values())
    assert {
        "unit",
        "state",
        "reason",
        "since",
        "severity",
        "maintenance due",
        "purity_pct",
        "flow_lpm",
    } <= shown
    overridden = {o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]}
    assert overridden <= shown | {
        "hospital"
    }  # overrides name the fields as Grafana shows them after renaming


def test_dashboards_default_to_the_browser_zone_and_offer_local_zones() -> None:
    from dashboards.zones import PROVINCE_ZONE
    from devices.inventory import SAMPLE_INVENTORY, load_inventory

    for name in UIDS:
        assert _board(name)["timezone"] == "browser"
    for name in ("unit-detail.json", "hospital-uptime.json"):
        urls = {link["url"] for link in _board(name)["links"]}
        assert urls == {"?timezone=Asia/Jakarta", "?timezone=Asia/Makassar", "?timezone=Asia/Jayapura"}
    provinces = {u.province for u in load_inventory(SAMPLE_INVENTORY).units.values()}
    assert provinces <= set(PROVINCE_ZONE)
    assert len(PROVINCE_ZONE) == 38


def test_dashboards_take_thresholds_from_the_model_catalog_and_the_health_rules() -> None:
    from dashboards.unit_detail import LOW_FLOW_RATIO
    from devices.catalog import load_catalog
    from health.rules import LOW_FLOW_RATIO as ENGINE_RATIO

    assert LOW_FLOW_RATIO == ENGINE_RATIO
    purity = next(p for p in _board("unit-detail.json")["panels"] if p["title"].startswith("Purity"))
    by_model = {
        o["matcher"]["options"]: o["properties"][0]["value"]["steps"]
        for o in purity["fieldConfig"]["overrides"]
    }
    for name, spec in load_catalog().items():
        steps = next(s for pattern, s in by_model.items() if re.fullmatch(pattern, f"UNIT-1 ({name})"))
        assert [s["value"] for s in steps] == [None, spec.purity_critical_pct, spec.purity_low_pct]


def test_stats_fields_the_dashboards_read_are_written_by_the_ingester() -> None:
    from store.schema import StatsField

    source = (ROOT / "ingest" / "stats.py").read_text() + (ROOT / "ingest" / "pipeline.py").read_text()
    assert all(f'"{f.value}"' in source for f in StatsField), [
        f for f in StatsField if f'"{f}"' not in source
    ]


def test_one_alert_logic_units_from_the_engine_verdict_system_rules_in_grafana() -> None:
    from store.schema import Measurement

    rules = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text())
    by_uid = {r["uid"]: (g["name"], r) for g in rules["groups"] for r in g["rules"]}
    assert set(by_uid) == {
        "oxyfleet-unit-critical",
        "oxyfleet-unit-warning",
        "oxyfleet-ingester-stalled",
        "oxyfleet-spool-filling",
        "oxyfleet-health-engine-late",
    }
    for uid, (group, rule) in by_uid.items():
        query = rule["data"][0]["model"]["query"]
        assert f'"{Measurement.TELEMETRY}"' not in query, uid  # no second classification of raw readings
        labels = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        grouped = (
            set(re.findall(r'"(\w+)"', query.rsplit("GROUP BY", 1)[1])) if "GROUP BY" in query else set()
        )
        assert labels <= grouped, (uid, labels, grouped)  # every label an annotation uses exists
        assert group == ("oxyfleet-units" if uid.startswith("oxyfleet-unit-") else "oxyfleet-system")
        if "__panelId__" in rule["annotations"]:  # the alert links to the unit's state timeline
            detail = _board("unit-detail.json")
            assert rule["annotations"]["__dashboardUid__"] == detail["uid"]
            panel = next(p for p in detail["panels"] if str(p["id"]) == rule["annotations"]["__panelId__"])
            assert panel["type"] == "state-timeline"


def _start(tmp_path: Path, **env: str) -> tuple[set[str], str, str]:
    import os
    import subprocess

    dst = tmp_path / "provisioning"
    script = ROOT / "dashboards" / "provisioning" / "grafana-start.sh"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OXYFLEET_ALERT", "GF_SMTP"))}
    result = subprocess.run(
        ["/bin/sh", str(script), "echo", "started"],
        env={**clean, "OXYFLEET_PROVISIONING_SRC": str(ROOT / "dashboards" / "provisioning"),
             "GF_PATHS_PROVISIONING": str(dst), **env},
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    files = {str(p.relative_to(dst)) for p in dst.rglob("*.yaml")}
    notify = (
        (dst / "alerting" / "notify.yaml").read_text() if (dst / "alerting" / "notify.yaml").exists() else ""
    )
    return files, notify, result.stdout + result.stderr


def test_contact_points_come_from_the_environment_and_are_off_when_unset(tmp_path: Path) -> None:
    base = {"alerting/rules.yaml", "datasources/oxyfleet.yaml", "dashboards/oxyfleet.yaml"}
    files, notify, out = _start(tmp_path / "none")
    assert files == base and "nothing is sent" in out and "started" in out
    files, notify, _ = _start(tmp_path / "hook", OXYFLEET_ALERT_WEBHOOK_URL="https://example.org/hook")
    assert files == base | {"alerting/notify.yaml"}
    receivers = yaml.safe_load(notify)["contactPoints"][0]["receivers"]
    assert [r["type"] for r in receivers] == ["webhook"]
    assert (
        receivers[0]["settings"]["url"] == "${OXYFLEET_ALERT_WEBHOOK_URL}"
    )  # Grafana expands it; no secret here
    _, notify, out = _start(tmp_path / "nosmtp", OXYFLEET_ALERT_EMAILS="a@example.org")
    assert notify == "" and "e-mail alerts off" in out
    _, notify, _ = _start(
        tmp_path / "both",
        OXYFLEET_ALERT_WEBHOOK_URL="https://example.org/hook",
        OXYFLEET_ALERT_EMAILS="a@example.org",
        GF_SMTP_ENABLED="true",
        GF_SMTP_HOST="smtp.example.org:587",
    )
    policy = yaml.safe_load(notify)["policies"][0]
    assert [r["type"] for r in yaml.safe_load(notify)["contactPoints"][0]["receivers"]] == [
        "webhook",
        "email",
    ]
    assert [r["object_matchers"] for r in policy["routes"]] == [
        [["severity", "=", "critical"]],
        [["severity", "=", "warning"]],
    ]
    assert all("province" in r["group_by"] for r in policy["routes"])
