"""Grafana alerting as typed data: one alert logic, system rules, contact points, notification policies.

**One alert logic** (issue 14). Whether a unit is out of spec is decided once, by the health engine,
with per-model thresholds, the sustain window and never-connected handling; it stores the verdict in
``unit_state`` (``code``: 0 fine, off or never connected, 1 warning, 2 critical). The unit rules here
only read that verdict, so Grafana and the engine's own alerts (MQTT, webhook) can never disagree, and a
threshold lives in one place (``devices/models.toml``). Grafana keeps the rules about the system itself,
which the engine cannot raise about itself: ingester stalled, spool filling, health engine late.

Every label a rule's annotations use exists on its series: unit rules group by the unit's tags, system
rules by ``instance`` (or none, for the engine). Notification policies route by severity and group by
province, so a province's on-call gets one message for its units.

**Contact points from ``.env``.** Grafana expands ``${VAR}`` in provisioning files but has no
conditionals, so the build writes one notification file per combination of configured integrations
(webhook, e-mail, both) and ``provisioning/grafana-start.sh`` installs the one that matches the
environment, or none: with nothing configured Grafana starts with the rules and no oxyfleet contact
point (it logs nothing about oxyfleet; nothing is sent), instead of failing on an empty URL or an SMTP
server nobody set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from dashboards.panels import DATASOURCE, UIDS, long_term
from store.schema import Measurement, StateField, StatsField, Tag

__all__ = ["NOTIFY_VARIANTS", "RULES", "Rule", "alert_rules", "notifications"]

Severity = Literal["critical", "warning"]
Evaluator = Literal["gt", "lt", "within_range"]
NoData = Literal["OK", "Alerting", "NoData"]

UNIT_TAGS: Final = (Tag.UNIT_ID, Tag.HOSPITAL, Tag.PROVINCE, Tag.KIND)
_UNIT_URL: Final = f"/d/{UIDS['unit']}/unit-detail?var-unit={{{{ $labels.unit_id }}}}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One Grafana-managed rule: query A over ``window_s``, reduced to its last value, compared."""

    uid: str
    title: str
    group: Literal["units", "system"]
    query: str
    window_s: int
    evaluator: Evaluator
    params: tuple[float, ...]
    severity: Severity
    summary: str
    check: str
    hold: str = "0s"
    no_data: NoData = "OK"
    extra: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        """The rule in Grafana's file-provisioning shape."""
        return {
            "uid": self.uid,
            "title": self.title,
            "condition": "C",
            "data": [
                {
                    "refId": "A",
                    "relativeTimeRange": {"from": self.window_s, "to": 0},
                    "datasourceUid": DATASOURCE["uid"],
                    "model": {
                        "refId": "A",
                        "rawQuery": True,
                        "query": self.query,
                        "resultFormat": "time_series",
                    },
                },
                {
                    "refId": "B",
                    "datasourceUid": "__expr__",
                    "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"},
                },
                {
                    "refId": "C",
                    "datasourceUid": "__expr__",
                    "model": {
                        "refId": "C",
                        "type": "threshold",
                        "expression": "B",
                        "conditions": [{"evaluator": {"type": self.evaluator, "params": list(self.params)}}],
                    },
                },
            ],
            "noDataState": self.no_data,
            "execErrState": "Error",
            "for": self.hold,
            "isPaused": False,
            "labels": {"severity": self.severity, "team": "oxyfleet", "source": self.group},
            "annotations": {"summary": self.summary, "description": self.check, **self.extra},
        }


def _verdict() -> str:
    group = ", ".join(f'"{t}"' for t in UNIT_TAGS)
    return (
        f'SELECT last("{StateField.CODE}") AS "{StateField.CODE}" FROM {long_term(Measurement.UNIT_STATE)} '
        f"WHERE $timeFilter GROUP BY {group}"
    )


_UNIT_SUMMARY: Final = "{{ $labels.unit_id }} at {{ $labels.hospital }} ({{ $labels.province }})"
_UNIT_LINKS: Final = {"unit_detail": _UNIT_URL, "__dashboardUid__": UIDS["unit"], "__panelId__": "5"}

RULES: Final = (
    Rule(
        "oxyfleet-unit-critical",
        "Unit critical (health engine)",
        "units",
        _verdict(),
        300,
        "gt",
        (1.5,),
        "critical",
        f"Critical: {_UNIT_SUMMARY}",
        (
            "The health engine rates this unit critical: purity below its model's critical level or a power "
            "failure. Patients may not be getting medical oxygen: switch them to another source, then open "
            "Unit detail for the reason and since when."
        ),
        extra=_UNIT_LINKS,
    ),
    Rule(
        "oxyfleet-unit-warning",
        "Unit underperforming or silent (health engine)",
        "units",
        _verdict(),
        300,
        "within_range",
        (0.5, 1.5),
        "warning",
        f"Warning: {_UNIT_SUMMARY}",
        (
            "The health engine rates this unit underperforming (low purity, low flow, pressure, temperature, "
            "a device alarm) or silent (no data: power, telemetry module or network). Unit detail says which."
        ),
        extra=_UNIT_LINKS,
    ),
    Rule(
        "oxyfleet-ingester-stalled",
        "Ingester stalled (no writes)",
        "system",
        # Points per minute, averaged over the last three minutes; fill(0) keeps a stopped instance's series
        # (seen within the hour) so it fires per instance; when no instance wrote at all, no data fires.
        f'SELECT moving_average(count("{StatsField.MESSAGES_RECEIVED}"), 3) AS writes FROM "{Measurement.STATS}" '
        f'WHERE $timeFilter GROUP BY time(1m), "{Tag.INSTANCE}" fill(0)',
        3600,
        "lt",
        (0.5,),
        "critical",
        "Ingester {{ $labels.instance }} has written nothing for three minutes",
        (
            "Not even its own counters reached InfluxDB: check `oxyfleet check`, the ingester's log, the broker "
            "and InfluxDB. Devices' messages wait in the broker (or the spool) meanwhile."
        ),
        hold="1m",
        no_data="Alerting",
    ),
    Rule(
        "oxyfleet-spool-filling",
        "Ingester spool filling",
        "system",
        f'SELECT 100 * max("{StatsField.SPOOL_BYTES}") / max("{StatsField.SPOOL_MAX_BYTES}") AS spool_pct '
        f'FROM "{Measurement.STATS}" WHERE $timeFilter GROUP BY "{Tag.INSTANCE}"',
        300,
        "gt",
        (80.0,),
        "warning",
        "Spool of ingester {{ $labels.instance }} is {{ $values.B }} % full",
        (
            "InfluxDB has not been taking this ingester's writes. When the spool is full the ingester stops "
            "acknowledging and the broker holds messages: restore InfluxDB or grow the spool."
        ),
    ),
    Rule(
        "oxyfleet-health-engine-late",
        "Health engine late (no verdicts)",
        "system",
        f'SELECT count("{StateField.CODE}") FROM {long_term(Measurement.UNIT_STATE)} WHERE $timeFilter',
        300,
        "lt",
        (1.0,),
        "critical",
        "The health engine has written no unit state for five minutes",
        (
            "Unit alerts and dashboards show stale verdicts: check `oxyfleet status`, the health process log "
            "and its InfluxDB access."
        ),
        hold="1m",
        no_data="Alerting",
    ),
)


def alert_rules() -> dict[str, Any]:
    """The rule groups: unit verdicts and the system's own health."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": f"oxyfleet-{group}",
                "folder": "oxyfleet",
                "interval": "1m",
                "rules": [r.json() for r in RULES if r.group == group],
            }
            for group in ("units", "system")
        ],
    }


# --- contact points and notification policies --------------------------------------------------------

RECEIVER: Final = "oxyfleet-oncall"
_INTEGRATIONS: Final = {
    "webhook": {
        "uid": "oxyfleet-webhook",
        "type": "webhook",
        "settings": {"url": "${OXYFLEET_ALERT_WEBHOOK_URL}", "httpMethod": "POST"},
    },
    "email": {
        "uid": "oxyfleet-email",
        "type": "email",
        "settings": {"addresses": "${OXYFLEET_ALERT_EMAILS}", "singleEmail": True},
    },
}
# File name -> integrations it configures; grafana-start.sh picks by which variables are set.
NOTIFY_VARIANTS: Final = {
    "notify-webhook.yaml": ("webhook",),
    "notify-email.yaml": ("email",),
    "notify-webhook-email.yaml": ("webhook", "email"),
}


def _route(severity: Severity, wait: str, interval: str, repeat: str) -> dict[str, Any]:
    return {
        "receiver": RECEIVER,
        "object_matchers": [["severity", "=", severity]],
        # One notification per rule and province (and ingester instance for system rules): a province's
        # on-call reads its own units; labels absent on a rule (instance on unit rules) group as empty.
        "group_by": ["alertname", Tag.PROVINCE.value, Tag.INSTANCE.value],
        "group_wait": wait,
        "group_interval": interval,
        "repeat_interval": repeat,
    }


def notifications(integrations: tuple[str, ...]) -> dict[str, Any]:
    """Contact point with ``integrations`` and the policy tree: critical fast and often, warnings daily."""
    return {
        "apiVersion": 1,
        "contactPoints": [
            {"orgId": 1, "name": RECEIVER, "receivers": [_INTEGRATIONS[i] for i in integrations]},
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": RECEIVER,
                "group_by": ["alertname", Tag.PROVINCE.value],
                "routes": [
                    _route("critical", "10s", "1m", "1h"),
                    _route("warning", "1m", "5m", "12h"),
                ],
            }
        ],
    }
