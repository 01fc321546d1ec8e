"""`oxyfleet dashboards push` against a local stand-in for Grafana's HTTP API.

No Grafana server can run on these machines, so this stand-in enforces the documented contract of the
endpoints the command uses: bearer-token auth (401 otherwise); ``GET/POST /api/folders``;
``GET /api/dashboards/uid/{uid}`` and ``POST /api/dashboards/db`` (a dashboard with uid and title, an
existing ``folderUid``, ``overwrite``); ``GET/POST/PUT /api/datasources``; and
``GET/POST/PUT /api/v1/provisioning/alert-rules`` (title, condition, data, folderUID of an existing
folder, ruleGroup, for, noDataState, execErrState). Anything else is recorded as a contract violation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from oxyfleet.cli import cli

ROOT = Path(__file__).resolve().parents[2]
# Every rule the build provisions (unit verdicts and system rules, in their groups).
RULE_UIDS = {
    rule["uid"]
    for group in json.loads((ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text())[
        "groups"
    ]
    for rule in group["rules"]
}

if TYPE_CHECKING:
    from collections.abc import Iterator

TOKEN = "glsa_test_token_not_a_secret"
RULE_FIELDS = {"title", "condition", "data", "folderUID", "ruleGroup", "for", "noDataState", "execErrState"}


@dataclass
class Grafana:
    url: str = ""
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def handler(g: Grafana) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - the stand-in API, endpoint by endpoint
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.reply(401, {"message": "Unauthorized"})
                return False
            return True

        def body(self) -> Any:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")

        def do_GET(self) -> None:
            if not self.authorized():
                return
            for prefix, store in (
                ("/api/folders/", g.folders),
                ("/api/dashboards/uid/", g.dashboards),
                ("/api/datasources/uid/", g.datasources),
                ("/api/v1/provisioning/alert-rules/", g.rules),
            ):
                if self.path.startswith(prefix):
                    uid = self.path[len(prefix) :]
                    if uid in store:
                        self.reply(200, store[uid])
                    else:
                        self.reply(404, {"message": "not found"})
                    return
            g.violations.append(f"GET {self.path}")
            self.reply(404, {"message": "not found"})

        def do_POST(self) -> None:  # noqa: PLR0911 - one branch per documented endpoint
            if not self.authorized():
                return None
            body = self.body()
            g.writes.append(f"POST {self.path}")
            if self.path == "/api/folders":
                if not body.get("title"):
                    g.violations.append("folder without title")
                    return self.reply(400, {"message": "title required"})
                g.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
                return self.reply(200, g.folders[body["uid"]])
            if self.path == "/api/dashboards/db":
                dash = body.get("dashboard", {})
                if (
                    not dash.get("uid")
                    or not dash.get("title")
                    or body.get("folderUid") not in g.folders
                    or "overwrite" not in body
                ):
                    g.violations.append(f"bad dashboard save {sorted(body)}")
                    return self.reply(400, {"message": "bad request"})
                version = g.dashboards.get(dash["uid"], {}).get("dashboard", {}).get("version", 0) + 1
                g.dashboards[dash["uid"]] = {
                    "dashboard": {**dash, "id": 7, "version": version},
                    "meta": {"folderUid": body["folderUid"]},
                }
                return self.reply(200, {"id": 7, "uid": dash["uid"], "status": "success", "version": version})
            if self.path == "/api/datasources":
                if not {"name", "type", "url", "access"} <= set(body):
                    g.violations.append("bad datasource")
                    return self.reply(400, {"message": "bad request"})
                g.datasources[body["uid"]] = {**body, "id": 3}
                return self.reply(200, {"datasource": g.datasources[body["uid"]]})
            if self.path == "/api/v1/provisioning/alert-rules":
                return self.save_rule(body, created=True)
            g.violations.append(f"POST {self.path}")
            return self.reply(404, {"message": "not found"})

        def do_PUT(self) -> None:
            if not self.authorized():
                return None
            body = self.body()
            g.writes.append(f"PUT {self.path}")
            if self.path.startswith("/api/v1/provisioning/alert-rules/"):
                return self.save_rule(body, created=False)
            if self.path.startswith("/api/datasources/uid/"):
                g.datasources[self.path.rsplit("/", 1)[1]] = body
                return self.reply(200, {"datasource": body})
            g.violations.append(f"PUT {self.path}")
            return self.reply(404, {"message": "not found"})

        def save_rule(self, body: dict[str, Any], *, created: bool) -> None:
            missing = RULE_FIELDS - set(body)
            data_ok = all({"refId", "datasourceUid", "model"} <= set(d) for d in body.get("data", []))
            if missing or not data_ok or body.get("folderUID") not in g.folders:
                g.violations.append(f"bad rule {body.get('uid')}: missing {sorted(missing)}")
                return self.reply(400, {"message": "invalid rule"})
            g.rules[body["uid"]] = {**body, "id": len(g.rules) + 1, "provenance": "api"}
            return self.reply(201 if created else 200, g.rules[body["uid"]])

        def log_message(self, *_args: object) -> None:
            return

    return Handler


@pytest.fixture
def grafana() -> Iterator[Grafana]:
    state = Grafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()
    assert state.violations == []


def test_push_creates_everything_then_changes_nothing(
    grafana: Grafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    first = CliRunner().invoke(cli, ["dashboards", "push", "--url", grafana.url])
    assert first.exit_code == 0, first.output
    assert "folder oxyfleet: created" in first.output
    assert set(grafana.dashboards) == {
        "oxyfleet-fleet-overview",
        "oxyfleet-unit-detail",
        "oxyfleet-hospital-uptime",
        "oxyfleet-ingest-health",
    }
    assert set(grafana.rules) == RULE_UIDS and all(
        r["folderUID"] == "oxyfleet" for r in grafana.rules.values()
    )
    assert all(d["meta"]["folderUid"] == "oxyfleet" for d in grafana.dashboards.values())
    writes = len(grafana.writes)

    second = CliRunner().invoke(cli, ["dashboards", "push", "--url", grafana.url])
    assert second.exit_code == 0, second.output
    assert second.output.strip().endswith(f"0 change(s), {1 + 4 + len(RULE_UIDS)} unchanged")
    assert len(grafana.writes) == writes  # idempotent: nothing written again

    grafana.rules["oxyfleet-spool-filling"]["for"] = "30m"  # someone edited a rule in the UI
    third = CliRunner().invoke(cli, ["dashboards", "push", "--url", grafana.url])
    assert "alert rule oxyfleet-spool-filling: updated" in third.output
    assert grafana.rules["oxyfleet-spool-filling"]["for"] == "0s"


def test_push_with_datasource(grafana: Grafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", "http://influxdb:8086")
    monkeypatch.setenv("OXYFLEET_INFLUX__TOKEN", "influx-token-not-a-secret")
    result = CliRunner().invoke(
        cli, ["dashboards", "push", "--url", grafana.url, "--token", TOKEN, "--with-datasource"]
    )
    assert result.exit_code == 0, result.output
    stored = grafana.datasources["oxyfleet-influxdb"]
    assert stored["url"] == "http://influxdb:8086" and stored["jsonData"]["dbName"] == "oxyfleet"
    assert stored["secureJsonData"]["httpHeaderValue1"] == "Token influx-token-not-a-secret"
    assert "influx-token-not-a-secret" not in result.output


def test_wrong_token_exits_3_and_says_so(grafana: Grafana) -> None:
    result = CliRunner().invoke(cli, ["dashboards", "push", "--url", grafana.url, "--token", "wrong"])
    assert result.exit_code == 3
    assert "answered 401" in result.output
    assert grafana.writes == []


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """oxyfleet as a user installs it: the built wheel in an empty virtualenv (no source tree on the path)."""
    root = Path(__file__).resolve().parents[2]
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (work / "dist").glob("oxyfleet-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv / "bin" / "oxyfleet"


def test_push_from_the_installed_wheel(grafana: Grafana, installed_wheel: Path, tmp_path: Path) -> None:
    """The wheel carries the dashboards: the command works from any directory, far from the source tree."""
    env = {"PATH": os.environ.get("PATH", ""), "GRAFANA_TOKEN": TOKEN, "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(installed_wheel), "dashboards", "push", "--url", grafana.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(grafana.dashboards) == 4 and set(grafana.rules) == RULE_UIDS
    assert f"{1 + 4 + len(RULE_UIDS)} change(s), 0 unchanged" in result.stdout
