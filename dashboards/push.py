"""``oxyfleet dashboards push``: install oxyfleet's dashboards and alert rules into an existing Grafana.

For Grafana servers that oxyfleet does not provision from files (a hospital group's own Grafana, Grafana
Cloud). Uses grafana-client (the maintained successor of grafana-api) and Grafana's documented HTTP API:
folders, ``POST /api/dashboards/db``, ``/api/datasources`` and ``/api/v1/provisioning/alert-rules``.
Everything is keyed by uid, so running it again changes nothing and says so; the report lists what was
created, updated or left unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from grafana_client.client import GrafanaClientError

if TYPE_CHECKING:
    from grafana_client.api import GrafanaApi

    from core.settings import InfluxSettings

__all__ = ["DASHBOARDS_DIR", "push"]

# The generated JSON/YAML ship as package data beside this module (wheel and Docker image alike).
DASHBOARDS_DIR: Final = Path(__file__).resolve().parent
FOLDER_UID: Final = "oxyfleet"
DATASOURCE_UID: Final = "oxyfleet-influxdb"
# Fields Grafana adds to what it stores; they do not make a dashboard or rule different.
_VOLATILE: Final = {"id", "version", "updated", "provenance", "orgID", "folderUID", "ruleGroup"}


def _missing(exc: GrafanaClientError) -> bool:
    return bool(exc.status_code == 404)


def _stored(fetch: Any, uid: str) -> dict[str, Any] | None:  # noqa: ANN401 - a grafana-client getter
    """What Grafana has under ``uid``, or None when it answers 404."""
    try:
        found: dict[str, Any] = fetch(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        return None
    return found


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(stored.get(k) == v for k, v in wanted.items() if k not in _VOLATILE)


def _datasource(influx: InfluxSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": DATASOURCE_UID,
        "name": "oxyfleet-influxdb",
        "type": "influxdb",
        "access": "proxy",
        "url": influx.url,
        "jsonData": {"dbName": influx.database, "httpMode": "GET"},
        "secureJsonData": {},
    }
    token = influx.token_value()
    if token:
        body["jsonData"]["httpHeaderName1"] = "Authorization"
        body["secureJsonData"]["httpHeaderValue1"] = f"Token {token}"
    elif influx.username:
        body["user"] = influx.username
        body["secureJsonData"]["password"] = influx.password_value() or ""
    return body


def _folder(api: GrafanaApi) -> str:
    if _stored(api.folder.get_folder, FOLDER_UID) is not None:
        return f"folder {FOLDER_UID}: unchanged"
    api.folder.create_folder("oxyfleet", uid=FOLDER_UID)
    return f"folder {FOLDER_UID}: created"


def _push_datasource(api: GrafanaApi, influx: InfluxSettings) -> str:
    body = _datasource(influx)
    stored = _stored(api.datasource.get_datasource_by_uid, DATASOURCE_UID)
    if stored is None:
        api.datasource.create_datasource(body)
        return f"datasource {DATASOURCE_UID}: created"
    # Secrets cannot be read back, so an existing datasource is always rewritten.
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, {**body, "id": stored.get("id")})
    return f"datasource {DATASOURCE_UID}: updated"


def _push_dashboard(api: GrafanaApi, wanted: dict[str, Any]) -> str:
    uid = wanted["uid"]
    stored = _stored(api.dashboard.get_dashboard, uid)
    if (
        stored is not None
        and _same(stored.get("dashboard", {}), wanted)
        and stored.get("meta", {}).get("folderUid") == FOLDER_UID
    ):
        return f"dashboard {uid}: unchanged"
    api.dashboard.update_dashboard(
        {
            "dashboard": {**wanted, "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "oxyfleet dashboards push",
        }
    )
    return f"dashboard {uid}: {'updated' if stored is not None else 'created'}"


def _push_rule(api: GrafanaApi, body: dict[str, Any]) -> str:
    uid = body["uid"]
    stored = _stored(api.alertingprovisioning.get_alertrule, uid)
    if stored is None:
        api.alertingprovisioning.create_alertrule(body)
        return f"alert rule {uid}: created"
    if _same(stored, body):
        return f"alert rule {uid}: unchanged"
    api.alertingprovisioning.update_alertrule(uid, body)
    return f"alert rule {uid}: updated"


def push(api: GrafanaApi, *, influx: InfluxSettings | None = None, root: Path = DASHBOARDS_DIR) -> list[str]:
    """Create or update folder, datasource (when ``influx`` is given), dashboards and alert rules."""
    report = [_folder(api)]
    if influx is not None:
        report.append(_push_datasource(api, influx))
    dashboards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / "json").glob("*.json"))]
    report.extend(_push_dashboard(api, d) for d in dashboards)
    rules = yaml.safe_load((root / "provisioning" / "alerting" / "rules.yaml").read_text(encoding="utf-8"))
    report.extend(
        _push_rule(
            api, {**rule, "folderUID": FOLDER_UID, "ruleGroup": group["name"], "orgID": group["orgId"]}
        )
        for group in rules["groups"]
        for rule in group["rules"]
    )
    return report
