"""The health engine's HTTP API and `oxyfleet uptime --format csv`, on data written to the real InfluxDB.

Three units for the last 20 minutes: one in spec, one whose purity fell to 85 % ten minutes ago, one that
never reported. One engine cycle later the API and the CLI must say exactly that.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from click.testing import CliRunner

from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from health.api import create_app
from health.engine import HealthEngine
from health.service import build_engine
from ingest.decode import Decoder, Inbound
from oxyfleet.cli import cli
from store.lineproto import LineBuilder
from store.schema import LONG_POLICY
from store.writer import InfluxSink, make_transport

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

OK_UNIT, LOW_UNIT, SILENT_UNIT = "OC-JKT-00001", "OC-JKT-00002", "OC-JKT-00003"
NEVER_UNIT = "OC-JKT-00004"  # in the inventory, never reported: never_connected, not booked


@pytest.fixture
def engine(influx, settings_for, tmp_path: Path) -> Iterator[HealthEngine]:
    inventory = load_inventory(SAMPLE_INVENTORY)
    path = tmp_path / "inventory.csv"
    path.write_text(write_inventory(inventory.units[u] for u in (OK_UNIT, LOW_UNIT, SILENT_UNIT, NEVER_UNIT)))
    sink = InfluxSink(make_transport(settings_for("api").influx))
    now = time.time_ns() // 1_000_000
    builder = LineBuilder()
    decoder = Decoder(check_time=False)
    lines = []
    for unit in (OK_UNIT, LOW_UNIT, SILENT_UNIT):
        # The silent unit reported for three minutes, due for service (6,000 of 5,000 run hours), then
        # fell silent 17 minutes ago: before the evaluated window, so no reading of it is in the window.
        until = now - 17 * 60_000 if unit == SILENT_UNIT else now
        for t in range(now - 20 * 60_000, until, 10_000):
            purity = 85.0 if unit == LOW_UNIT and t >= now - 10 * 60_000 else 93.5
            reading = {"ts": t, "purity_pct": purity, "flow_lpm": 5.0, "setpoint_lpm": 5.0, "running": True}
            if unit == SILENT_UNIT:
                reading["run_hours"] = 6000.0
            payload = json.dumps(reading)
            lines += [
                builder.telemetry(r)
                for r in decoder.decode(
                    Inbound(f"oxygen/concentrator/{unit}/telemetry", payload.encode(), 0)
                ).readings
            ]
    assert sink.write(lines).rejected == {}
    sink.close()
    # Built the way `oxyfleet health` builds it: the lifecycle on, results in the long-term policy.
    engine = build_engine(settings_for("api-health", inventory_file=path), writing=True)
    assert engine.long_rp == LONG_POLICY
    engine.cycle()
    while engine.booking_older:  # a first start: `run` books the window's older minutes after its cycles
        engine.book_older()
    assert not influx.rows("SELECT count(code) FROM unit_state")  # not in the default policy: its own
    yield engine
    assert engine.sink is not None
    engine.sink.close()
    engine.reader.close()


class Client:
    """The API served by a real uvicorn on a free loopback port, asked with urllib."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, params: dict[str, str] | None = None) -> Response:
        url = self.base + urllib.parse.quote(path) + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return Response(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read())


class Response:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body
        self.text = body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.text)


@pytest.fixture
def client(engine, influx) -> Iterator[Client]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, influx), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield Client(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(10)


def test_api(engine, client) -> None:
    units = client.get("/api/units").json()
    # Worst first: severity, then the longest-standing (the silent unit has been silent all along).
    assert [(u["unit_id"], u["state"], u["reason"]) for u in units] == [
        (SILENT_UNIT, "no_data", "no_data"),
        (LOW_UNIT, "underperforming", "purity_low"),
        (OK_UNIT, "in_spec", ""),
        (NEVER_UNIT, "never_connected", "never_connected"),
    ]
    assert units[1]["hospital"] == "RS Umum Cempaka Raya" and units[1]["severity"] == 1
    # Silence keeps what is known: the maintenance flag and the time of the last reading.
    silent = units[0]
    assert silent["maintenance_due"] is True
    assert silent["last_reading"] is not None
    assert not units[3]["maintenance_due"] and units[3]["last_reading"] is None
    assert [u["unit_id"] for u in client.get("/api/units", params={"state": "no_data"}).json()] == [
        SILENT_UNIT
    ]

    detail = client.get(f"/api/units/{LOW_UNIT}").json()
    assert detail["model"] == "OC-10-DONOR" and detail["serial"] and detail["service_interval_h"] > 0
    assert [(e["from_state"], e["to_state"], e["reason"]) for e in detail["events"]] == [
        ("in_spec", "underperforming", "purity_low")
    ]
    assert client.get("/api/units/NOPE-1").status_code == 404

    uptime = client.get("/api/hospitals/RS Umum Cempaka Raya/uptime", params={"since": "1h"}).json()
    by_unit = {r["unit_id"]: r for r in uptime}
    assert by_unit[""]["level"] == "hospital"
    assert by_unit[OK_UNIT]["availability_pct"] == 100.0
    assert by_unit[SILENT_UNIT]["availability_pct"] == 0.0
    # Never connected: shown with its hours, but not booked (no availability), and the hospital's
    # availability is that of the three units that did report.
    assert by_unit[NEVER_UNIT]["availability_pct"] is None
    assert by_unit[NEVER_UNIT]["never_connected_h"] == pytest.approx(0.25, abs=0.02)
    assert by_unit[NEVER_UNIT]["no_data_h"] == 0.0
    hospital_in_spec = sum(by_unit[u]["in_spec_h"] for u in (OK_UNIT, LOW_UNIT, SILENT_UNIT))
    hospital_total = sum(
        by_unit[u][f"{s}_h"]
        for u in (OK_UNIT, LOW_UNIT, SILENT_UNIT)
        for s in ("in_spec", "underperforming", "power_failure", "no_data")
    )
    assert by_unit[""]["availability_pct"] == pytest.approx(100 * hospital_in_spec / hospital_total, abs=0.1)
    assert 30 < by_unit[LOW_UNIT]["availability_pct"] < 70  # about 5 of 15 evaluated minutes in spec
    assert client.get("/api/hospitals/RS Nowhere/uptime").status_code == 404
    assert (
        client.get("/api/hospitals/RS Umum Cempaka Raya/uptime", params={"since": "soon"}).status_code == 422
    )

    assert client.get("/healthz").status_code == 200
    assert 'oxyfleet_health_units{state="no_data"} 1.0' in client.get("/metrics").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/units",
        "/api/units/{unit_id}",
        "/api/hospitals/{hospital}/uptime",
        "/healthz",
        "/metrics",
    } <= set(paths)
    engine.last_cycle_at -= 3600
    assert client.get("/healthz").status_code == 503


def test_uptime_csv(engine, influx, monkeypatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__DATABASE", influx.database)
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", influx.url)
    result = CliRunner().invoke(
        cli, ["uptime", "--since", "1h", "--format", "csv", "--hospital", "RS Umum Cempaka Raya"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == [
        "level",
        "hospital",
        "province",
        "unit_id",
        "availability_pct",
        "in_spec_h",
        "underperforming_h",
        "power_failure_h",
        "no_data_h",
        "off_h",
        "never_connected_h",
    ]
    by_unit = {r["unit_id"]: r for r in rows}
    assert set(by_unit) == {OK_UNIT, LOW_UNIT, SILENT_UNIT, NEVER_UNIT, ""}
    assert by_unit[OK_UNIT]["availability_pct"] == "100.0"
    assert float(by_unit[SILENT_UNIT]["no_data_h"]) == pytest.approx(
        0.25, abs=0.02
    )  # the 15 evaluated minutes
    hospital = by_unit[""]
    assert hospital["level"] == "hospital"
    total = sum(
        float(hospital[f"{s}_h"])
        for s in ("in_spec", "underperforming", "power_failure", "no_data", "off", "never_connected")
    )
    assert total == pytest.approx(1.0, abs=0.05)  # four units x 15 minutes


def test_a_late_upload_is_reevaluated(
    start_ingester, publisher, influx, settings_for, tmp_path: Path, wait_for
) -> None:
    """A unit's link was down from 35 to 20 minutes ago; its buffered readings arrive now as a batch.

    Before the upload the engine booked that time as no_data; the ingester marks the upload in
    `late_data`, and the next cycle re-evaluates the unit's history, so the time is in spec after all.
    """
    inventory = load_inventory(SAMPLE_INVENTORY)
    path = tmp_path / "inventory.csv"
    path.write_text(write_inventory([inventory.units[OK_UNIT]]))
    start_ingester(inventory_file=path)
    now = time.time_ns() // 1_000_000
    now -= now % 60_000
    gap = range(now - 35 * 60_000, now - 20 * 60_000, 10_000)
    for t in range(now - 40 * 60_000, now, 10_000):
        if t not in gap:
            publisher.reading(OK_UNIT, {"ts": t, "purity_pct": 93.5, "running": True})
    wait_for(
        lambda: (
            influx.rows("SELECT count(purity_pct) FROM telemetry")
            and influx.rows("SELECT count(purity_pct) FROM telemetry")[0]["count"] == 240 - len(gap)
        )
    )
    sink = InfluxSink(make_transport(settings_for("late").influx))
    engine = HealthEngine(influx, sink, path)
    engine.evaluate_range(now - 40 * 60_000, now)

    def no_data_h() -> float:
        rows = influx.rows(
            f"SELECT sum(no_data_s) FROM unit_state WHERE time >= {now - 40 * 60_000}ms AND time < {now}ms"
        )
        return float(rows[0]["sum"]) / 3600

    assert no_data_h() == pytest.approx(15 / 60, abs=0.01)
    publisher.reading(
        OK_UNIT,
        json.dumps({"readings": [{"ts": t, "purity_pct": 93.5, "running": True} for t in gap]}).encode(),
    )
    # (The history above was published after the fact too, one old reading per message: also marked late.)
    wait_for(lambda: influx.rows("SELECT count(purity_pct) FROM telemetry")[0]["count"] == 240)
    marker = influx.rows("SELECT * FROM late_data WHERE count > 1")[-1]
    # One marker per unit and minute of arrival (issue 16): the late history published just before, in
    # the same minute, widens the same marker instead of adding one.
    assert marker["unit_id"] == OK_UNIT
    assert marker["from_ms"] <= gap[0] and marker["to_ms"] >= gap[-1] and marker["count"] >= len(gap)
    engine.cycle()
    sink.close()
    assert no_data_h() == pytest.approx(0.0, abs=0.01)


def test_status_cli(engine, influx, monkeypatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__DATABASE", influx.database)
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", influx.url)
    monkeypatch.setenv("OXYFLEET_INVENTORY_FILE", str(engine.inventory_path))
    # status answers from what the engine stored, not by evaluating readings again.
    influx.execute("DROP MEASUREMENT telemetry")
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:-1]]
    assert [r[0] for r in rows] == [SILENT_UNIT, LOW_UNIT, OK_UNIT, NEVER_UNIT]
    assert "purity_low" in result.output and result.output.strip().endswith("4 units")
    silent = result.output.splitlines()[1]
    assert silent.rstrip().endswith("due") and " - " not in silent  # last reading and maintenance kept
    assert "never_connected" in result.output.splitlines()[4]
    only = CliRunner().invoke(cli, ["status", "--state", "underperforming"])
    assert [line.split()[0] for line in only.output.splitlines()[1:-1]] == [LOW_UNIT]


def test_docs_pages_need_no_network(client) -> None:
    """/docs and /redoc load every script and stylesheet from the API itself (offline hospital networks)."""
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert assets, html.text
        external = [a for a in assets if re.match(r"^(https?:)?//", a)]
        assert external == [], f"{page} loads {external} from the network"
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.body) > 100, asset


def test_api_filters_ignore_case_and_refuse_unknown_states(engine, client) -> None:
    bogus = client.get("/api/units", params={"state": "bogus"})
    assert bogus.status_code == 400
    assert bogus.json()["detail"].startswith("unknown state 'bogus'; one of in_spec, underperforming")
    units = client.get("/api/units", params={"hospital": "rs umum cempaka raya", "province": "DKI JAKARTA"})
    # Worst first; the unit that never connected is listed last, apart.
    assert [u["unit_id"] for u in units.json()] == [SILENT_UNIT, LOW_UNIT, OK_UNIT, NEVER_UNIT]
    uptime = client.get("/api/hospitals/rs umum CEMPAKA raya/uptime", params={"since": "1h"})
    assert uptime.status_code == 200
    assert {r["unit_id"] for r in uptime.json()} == {OK_UNIT, LOW_UNIT, SILENT_UNIT, NEVER_UNIT, ""}


def test_uptime_table_is_worst_first_with_the_hospital_of_each_unit(engine, influx, monkeypatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", influx.url)
    monkeypatch.setenv("OXYFLEET_INFLUX__DATABASE", influx.database)
    result = CliRunner().invoke(cli, ["uptime", "--since", "1h", "--province", "dki jakarta"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "per unit, worst first (since 1h):"
    assert lines[1].split()[:4] == ["unit", "hospital", "avail", "%"]
    split = lines.index("per hospital, worst first (since 1h):")
    units = [line for line in lines[2:split] if line.strip()]
    # Worst first; the unit that never connected has no availability and comes last.
    assert [line.split()[0] for line in units] == [SILENT_UNIT, LOW_UNIT, OK_UNIT, NEVER_UNIT]
    assert all("RS Umum Cempaka Raya" in line for line in units)
    assert units[0].split()[5] == "0.00" and units[2].split()[5] == "100.00" and units[3].split()[5] == "-"
    assert lines[split + 2].startswith("RS Umum Cempaka Raya  DKI Jakarta")


def test_uptime_and_status_filters_that_match_nothing_exit_1(engine, influx, monkeypatch) -> None:
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", influx.url)
    monkeypatch.setenv("OXYFLEET_INFLUX__DATABASE", influx.database)
    monkeypatch.setenv("OXYFLEET_INVENTORY_FILE", str(engine.inventory_path))
    runner = CliRunner()
    nope = runner.invoke(cli, ["uptime", "--since", "1h", "--hospital", "nope"])
    assert nope.exit_code == 1
    assert nope.output.startswith(
        "oxyfleet: no unit with state data in the last 1h matches --hospital 'nope'"
    )
    typo = runner.invoke(cli, ["status", "--hospital", "rs umum cempaka rya"])
    assert typo.exit_code == 1
    assert "did you mean 'RS Umum Cempaka Raya'?" in typo.output
    lower = runner.invoke(cli, ["status", "--hospital", "rs umum cempaka raya", "--state", "no_data"])
    assert lower.exit_code == 0, lower.output
    assert [line.split()[0] for line in lower.output.splitlines()[1:-1]] == [SILENT_UNIT]
    none = runner.invoke(cli, ["status", "--state", "power_failure"])
    assert none.exit_code == 1
    assert "no unit matches --state 'power_failure'" in none.output


def test_uptime_names_match_as_written_whatever_they_contain(influx, settings_for) -> None:
    """Hospital names with regex and quoting characters: matched case-insensitively, never as a pattern."""
    from health.uptime import uptime_rows
    from store.lineproto import line, tag_set
    from store.schema import Measurement, Tag, seconds_field

    names = [
        "RS St. Carolus (Salemba)",
        "RSU Dr. Soetomo / Surabaya",
        "RS Ibu & Anak 'Bunda'",
        "RS St_ Carolus",
    ]
    sink = InfluxSink(make_transport(settings_for("names").influx))
    now = time.time_ns() // 1_000_000
    lines = [
        line(
            Measurement.UNIT_STATE,
            tag_set({Tag.HOSPITAL: name, Tag.PROVINCE: "Jawa Timur", Tag.UNIT_ID: f"U-{i}"}),
            {seconds_field("in_spec"): 60.0},
            (now - 60_000) * 1_000_000,
        )
        for i, name in enumerate(names)
    ]
    assert sink.write(lines).rejected == {}
    sink.close()
    for i, name in enumerate(names):
        rows = uptime_rows(influx, now - 3600_000, now, hospital=name.lower())
        assert [r["unit_id"] for r in rows] == [f"U-{i}"], name
    assert uptime_rows(influx, now - 3600_000, now, hospital="RS St. Carolus") == []
    assert uptime_rows(influx, now - 3600_000, now, hospital=".*") == []
    assert len(uptime_rows(influx, now - 3600_000, now, province="JAWA TIMUR")) == 4
