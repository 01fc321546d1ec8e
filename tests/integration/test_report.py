"""Monthly reports against the real InfluxDB, filled with a simulated month whose truth is known.

The month (October 2026) is written directly, compressed in time: per-minute ``unit_state`` and
``unit_event`` as the health engine writes them, and telemetry at each model's reporting interval. The
schedule below is the ground truth; every figure of the report (availability per unit and overall,
previous month, oxygen delivered, faults, never connected, maintenance due, local times) is checked against
it, in Indonesian and in English, through the ``oxyfleet report`` command as a user runs it, and through
the HTTP API with hospital tokens.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
import urllib3
import uvicorn
from babel.numbers import parse_decimal

from core.settings import InfluxSettings
from devices.inventory import COLUMNS, load_inventory
from health.aggregates import aggregate_lines
from health.api import create_app
from health.engine import HealthEngine
from health.tokens import TokenStore
from report.api import report_router
from report.i18n import Text
from store.lineproto import line, tag_set
from store.reader import InfluxQL
from store.retention import apply_retention
from store.schema import LONG_POLICY, UNIT_TAGS, EventField, Measurement, State, StateField, seconds_field
from store.writer import V1Transport
from tests.integration.conftest import run_oxyfleet

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devices.inventory import Unit

pytestmark = pytest.mark.integration

WITA = ZoneInfo("Asia/Makassar")
WIT = ZoneInfo("Asia/Jayapura")
MIN_MS = 60_000
H_MAKASSAR = "RS Uji Makassar"
H_JAYAPURA = "RS Uji Jayapura"


def ms(zone: ZoneInfo, *args: int) -> int:
    return int(datetime(*args, tzinfo=zone).timestamp() * 1000)  # type: ignore[arg-type,misc]


@dataclass(frozen=True)
class Seg:
    start: int
    end: int
    state: str
    reason: str
    flow: float | None  # None: no telemetry (power failure, no data)
    purity: float


@dataclass(frozen=True)
class U:
    uid: str
    kind: str
    model: str
    hospital: str
    province: str
    zone: ZoneInfo
    commissioned: str
    interval_s: int
    normal_flow: float
    segs: tuple[Seg, ...]  # exceptions to "in spec at normal flow, purity 93"
    due_from: int | None = None
    never: bool = False


def _units() -> list[U]:
    z, j = WITA, WIT
    return [
        U(
            "T-C1",
            "concentrator",
            "OC-5-DOMESTIC",
            H_MAKASSAR,
            "Sulawesi Selatan",
            z,
            "2026-01-05",
            10,
            5.0,
            (
                Seg(ms(z, 2026, 9, 12, 0, 0), ms(z, 2026, 9, 13, 0, 0), State.NO_DATA, "no_data", None, 0),
                Seg(
                    ms(z, 2026, 10, 10, 8, 0),
                    ms(z, 2026, 10, 11, 20, 0),
                    State.UNDERPERFORMING,
                    "purity_low",
                    5.0,
                    85.0,
                ),
                Seg(
                    ms(z, 2026, 10, 20, 14, 0),
                    ms(z, 2026, 10, 21, 2, 0),
                    State.POWER_FAILURE,
                    "power_failure",
                    None,
                    0,
                ),
                Seg(ms(z, 2026, 10, 25, 0, 0), ms(z, 2026, 10, 27, 0, 0), State.OFF, "off", 0.0, 21.0),
            ),
        ),
        U(
            "T-D1",
            "docs",
            "DOCS-PSA-500",
            H_MAKASSAR,
            "Sulawesi Selatan",
            z,
            "2026-10-15",
            5,
            400.0,
            (
                # Before commissioning the engine on main books no_data: the report must not count it.
                Seg(ms(z, 2026, 9, 1, 0, 0), ms(z, 2026, 10, 15, 0, 0), State.NO_DATA, "no_data", None, 0),
                Seg(ms(z, 2026, 10, 22, 6, 0), ms(z, 2026, 10, 22, 12, 0), State.NO_DATA, "no_data", None, 0),
                Seg(
                    ms(z, 2026, 10, 28, 9, 0),
                    ms(z, 2026, 10, 29, 9, 0),
                    State.UNDERPERFORMING,
                    "flow_low",
                    300.0,
                    93.0,
                ),
            ),
        ),
        U(
            "T-N1",
            "concentrator",
            "OC-5-DONOR",
            H_MAKASSAR,
            "Sulawesi Selatan",
            z,
            "2026-03-01",
            10,
            5.0,
            (Seg(ms(z, 2026, 9, 1, 0, 0), ms(z, 2026, 11, 2, 0, 0), State.NO_DATA, "no_data", None, 0),),
            never=True,
        ),
        U(
            "T-C2",
            "concentrator",
            "OC-10-DONOR",
            H_JAYAPURA,
            "Papua",
            j,
            "2025-06-01",
            10,
            8.0,
            (
                # Straddles the local month end: 8 h in October (WIT), 8 h in November.
                Seg(
                    ms(j, 2026, 10, 31, 16, 0),
                    ms(j, 2026, 11, 1, 8, 0),
                    State.POWER_FAILURE,
                    "power_failure",
                    None,
                    0,
                ),
            ),
            due_from=ms(j, 2026, 10, 20, 0, 0),
        ),
    ]


UNITS = _units()


def seg_at(u: U, t: int) -> Seg:
    for s in u.segs:
        if s.start <= t < s.end:
            return s
    return Seg(t, t + MIN_MS, State.IN_SPEC, "", u.normal_flow, 93.0 if u.kind == "concentrator" else 94.0)


def truth(u: U, year: int, month: int) -> tuple[float | None, float, list[tuple[int, int, str]]]:
    """(availability %, litres, faults (start, duration min, state)) of a month in the unit's zone."""
    avail, litres, faults, _ = truth_seconds(u, year, month)
    return avail, litres, faults


def truth_seconds(
    u: U, year: int, month: int
) -> tuple[float | None, float, list[tuple[int, int, str]], tuple[int, int]]:
    """``truth`` plus (in-spec seconds, accounted seconds)."""
    start = ms(u.zone, year, month, 1)
    end = ms(u.zone, year + month // 12, month % 12 + 1, 1)
    booked = max(start, ms(u.zone, *map(int, u.commissioned.split("-"))))
    secs: dict[str, int] = dict.fromkeys(
        [State.IN_SPEC, State.UNDERPERFORMING, State.POWER_FAILURE, State.NO_DATA, State.OFF], 0
    )
    litres = 0.0
    for t in range(booked, end, MIN_MS):
        s = seg_at(u, t)
        secs[s.state] += 60
        if s.flow is not None and s.purity >= 90:
            litres += s.flow
    accounted = sum(v for k, v in secs.items() if k != State.OFF)
    faults = [
        (s.start, (s.end - s.start) // MIN_MS, s.state)
        for s in u.segs
        if s.state != State.OFF and booked <= s.start < end
    ]
    avail = 100 * secs[State.IN_SPEC] / accounted if accounted else None
    return avail, litres, faults, (secs[State.IN_SPEC], accounted)


def _write(influx, lines: list[str], rp: str | None = None) -> None:
    pool = urllib3.PoolManager()
    url = f"{influx.url}/write?db={influx.database}&precision=ns" + (f"&rp={rp}" if rp else "")
    try:
        for i in range(0, len(lines), 20_000):
            resp = pool.request("POST", url, body="\n".join(lines[i : i + 20_000]).encode())
            assert resp.status == 204, resp.data[:300]
    finally:
        pool.clear()


def fill(influx) -> None:
    first = ms(WITA, 2026, 9, 1) - 12 * 3600_000
    last = ms(WITA, 2026, 11, 2)
    for u in UNITS:
        tags = tag_set(dict(zip(UNIT_TAGS, (u.hospital, u.kind, u.model, u.province, u.uid), strict=True)))
        lines: list[str] = []  # the health engine's results: in the long-term policy, as it writes them
        raw: list[str] = []  # readings: in the default policy
        prev: Seg | None = None
        for t in range(first, last, MIN_MS):
            s = seg_at(u, t)
            fields: dict[str, object] = {
                StateField.STATE: s.state,
                StateField.REASON: s.reason,
                StateField.CODE: 0 if s.state in (State.IN_SPEC, State.OFF) else 2,
                StateField.IN_SPEC: int(s.state == State.IN_SPEC),
                StateField.MAINTENANCE_DUE: u.due_from is not None and t >= u.due_from,
                **{
                    seconds_field(x): 60.0 if x == s.state else 0.0
                    for x in (
                        State.IN_SPEC,
                        State.UNDERPERFORMING,
                        State.POWER_FAILURE,
                        State.NO_DATA,
                        State.OFF,
                    )
                },
            }
            lines.append(line(Measurement.UNIT_STATE, tags, fields, t * 1_000_000))
            if prev is not None and (prev.state, prev.reason) != (s.state, s.reason):
                event: dict[str, object] = {
                    EventField.FROM: prev.state,
                    EventField.TO: s.state,
                    EventField.FROM_REASON: prev.reason,
                    EventField.REASON: s.reason,
                    EventField.CODE: fields[StateField.CODE],
                }
                lines.append(line(Measurement.UNIT_EVENT, tags, event, t * 1_000_000))
            prev = s
            if s.flow is None or not ms(u.zone, 2026, 9, 30) <= t < ms(u.zone, 2026, 11, 1, 12):
                continue
            running = "true" if s.flow else "false"
            raw.extend(
                f"{Measurement.TELEMETRY},{tags} flow_lpm={s.flow},purity_pct={s.purity},running={running} "
                f"{(t + k * 1000) * 1_000_000}"
                for k in range(0, 60, u.interval_s)
            )
        _write(influx, lines, LONG_POLICY)
        _write(influx, raw)


@pytest.fixture(scope="module")
def inventory_file(tmp_path_factory) -> Path:
    path: Path = tmp_path_factory.mktemp("inv") / "inventory.csv"
    rows = [",".join(COLUMNS)] + [
        f"{u.uid},{u.kind},{u.model},SN-{u.uid},{u.hospital},{u.province},donor-test,{u.commissioned},0"
        for u in UNITS
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def month_db(services, inventory_file) -> Iterator[InfluxQL]:
    """The simulated month stored as the product stores it, daily rollups included.

    The reader is closed at the end: tests share it with API threads, and an unclosed pool left sockets
    to the garbage collector (a ResourceWarning under filterwarnings=error).
    """
    url = f"http://127.0.0.1:{os.environ.get('OXYFLEET_SERVICES_INFLUX_PORT', '8086')}"
    reader = InfluxQL(os.environ.get("OXYFLEET_TEST_INFLUX_URL", url), f"oxytest_report_{os.getpid()}")
    try:
        reader.execute(f'CREATE DATABASE "{reader.database}"')
        # oxyfleet's own setup (as `oxyfleet health` runs it): the long-term policy for the health results.
        # Raw kept forever here, so that the fixed months of the test stay writable whatever today's date.
        influx = InfluxSettings(url=reader.url, database=reader.database, raw_retention="INF")
        transport = V1Transport(influx.url, influx.database)
        apply_retention(transport, influx)
        transport.close()
        fill(reader)
        # What the health service does as days complete: per-minute aggregates (oxygen included) with the
        # engine's own function, then the daily rollups, here through the operator's command.
        inventory = load_inventory(inventory_file)
        day = 86400_000
        for start in range(ms(WITA, 2026, 8, 31), ms(WITA, 2026, 11, 3), day):
            _write(reader, aggregate_lines(reader, inventory, _unit_tags, start, start + day), LONG_POLICY)
        env = {
            **os.environ,
            "OXYFLEET_INFLUX__URL": reader.url,
            "OXYFLEET_INFLUX__DATABASE": reader.database,
            "OXYFLEET_INFLUX__RAW_RETENTION": "INF",
            "OXYFLEET_INVENTORY_FILE": str(inventory_file),
        }
        for month in ("2026-09", "2026-10"):
            done = run_oxyfleet("health", "rollup", "--month", month, env=env, timeout=180)
            assert done.returncode == 0, done.stderr
            assert "days rolled up" in done.stdout
        yield reader
        reader.execute(f'DROP DATABASE "{reader.database}"')
    finally:
        reader.close()


def _unit_tags(unit: Unit) -> str:
    return tag_set(
        dict(zip(UNIT_TAGS, (unit.hospital, unit.kind, unit.model, unit.province, unit.unit_id), strict=True))
    )


def cli_env(month_db, inventory_file: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OXYFLEET_INFLUX__URL": month_db.url,
        "OXYFLEET_INFLUX__DATABASE": month_db.database,
        "OXYFLEET_INVENTORY_FILE": str(inventory_file),
        "OXYFLEET_HEALTH__API_TOKENS_FILE": str(tmp / "tokens.json"),
    }


def oxyfleet_180(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_oxyfleet(*args, env=env, timeout=180)


def test_csv_figures_match_ground_truth(month_db, inventory_file, tmp_path) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180(
        "report", "--month", "2026-10", "--by", "hospital", "--format", "csv", "--out", str(tmp_path), env=env
    )
    assert done.returncode == 0, done.stderr
    rows = {}
    for path in tmp_path.glob("*.csv"):
        rows.update({r["unit_id"]: r for r in csv.DictReader(io.StringIO(path.read_text()))})
    assert set(rows) == {u.uid for u in UNITS}
    for u in UNITS:
        r = rows[u.uid]
        if u.never:
            assert r["never_connected"] == "1" and r["availability_pct"] == ""
            continue
        avail, litres, faults = truth(u, 2026, 10)
        prev, _, _ = truth(u, 2026, 9)
        assert avail is not None
        assert abs(float(r["availability_pct"]) - avail) <= 0.5, (u.uid, r["availability_pct"], avail)
        if prev is None:
            assert r["prev_availability_pct"] == ""
        else:
            assert abs(float(r["prev_availability_pct"]) - prev) <= 0.5, (
                u.uid,
                r["prev_availability_pct"],
                prev,
            )
        assert abs(float(r["oxygen_litres"]) - litres) <= 0.01 * litres, (u.uid, r["oxygen_litres"], litres)
        assert int(r["faults"]) == len(faults)
        assert r["maintenance_due"] == ("1" if u.due_from else "0")
    # The DOCS plant: ~700 patients a day at rated flow (500 L/min); it delivered ~400 L/min when up.
    docs = float(rows["T-D1"]["patients_per_day_estimate"])
    assert 450 < docs < 600


def _cell(html: str, uid: str) -> str:
    match = re.search(rf"<td>{re.escape(uid)}</td><td>[^<]*</td>\s*<td class=\"n[^\"]*\">([^<]+)</td>", html)
    assert match, uid
    return match[1]


@pytest.mark.parametrize("lang", ["id", "en"])
def test_html_in_both_languages(month_db, inventory_file, tmp_path, lang) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180(
        "report",
        "--month",
        "2026-10",
        "--hospital",
        H_MAKASSAR,
        "--format",
        "html",
        "--lang",
        lang,
        "--out",
        str(tmp_path),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("*.html")
    html = path.read_text(encoding="utf-8")
    t = Text(lang, WITA)
    # Self-contained: nothing fetched (no linked images, styles, scripts or fonts).
    assert not re.search(r"(src|href)=\"(https?:|//)|url\((https?:|//)|@import|<script|<link", html)
    assert html.count("<svg") >= 3
    assert t("title") in html and t("never_connected") in html and "T-N1" in html
    locale = {"id": "id_ID", "en": "en_GB"}[lang]
    for u in UNITS[:2]:
        avail, _, faults = truth(u, 2026, 10)
        shown = float(parse_decimal(_cell(html, u.uid).replace("%", "").strip(), locale=locale))
        assert avail is not None and abs(shown - avail) <= 0.5
        for start, minutes, state in faults:
            assert t.datetime(start) in html, (u.uid, t.datetime(start))
            assert t.duration(minutes * 60) in html
            assert t(f"state.{state}") in html
    # Local time, local words: WITA, and the month in the language.
    assert "WITA" in html and t.month(2026, 10) in html
    assert ("Oktober 2026" if lang == "id" else "October 2026") in html
    overall = re.search(r'id="availability">([^<]+)<', html)
    assert overall
    # Overall: in-spec time over accounted time of the two reporting units (booked minutes, not a mean).
    booked = [truth_seconds(u, 2026, 10)[3] for u in UNITS[:2]]
    expected = 100 * sum(b[0] for b in booked) / sum(b[1] for b in booked)
    shown_overall = float(parse_decimal(overall[1].replace("%", "").strip(), locale=locale))
    assert abs(shown_overall - expected) <= 0.5, (shown_overall, expected)
    litres = re.search(r'id="litres">([^<]+)<', html)
    assert litres
    shown_litres = float(parse_decimal(litres[1].strip(), locale=locale))
    expected_litres = sum(truth(u, 2026, 10)[1] for u in UNITS[:2])
    assert abs(shown_litres - expected_litres) <= 0.01 * expected_litres, (shown_litres, expected_litres)


def test_month_is_local(month_db, inventory_file, tmp_path) -> None:
    """Jayapura (WIT): the power failure from 31 Oct 16:00 to 1 Nov 08:00 counts 8 h in October, not 16."""
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180(
        "report",
        "--month",
        "2026-10",
        "--hospital",
        H_JAYAPURA,
        "--format",
        "csv",
        "--out",
        str(tmp_path),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (row,) = csv.DictReader(io.StringIO(next(tmp_path.glob("*.csv")).read_text()))
    assert float(row["power_failure_h"]) == pytest.approx(8.0, abs=0.01)
    assert float(row["availability_pct"]) == pytest.approx(100 * (744 - 8) / 744, abs=0.01)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_pdf_in_headless_chromium(month_db, inventory_file, tmp_path) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180(
        "report",
        "--month",
        "2026-10",
        "--hospital",
        H_MAKASSAR,
        "--format",
        "pdf",
        "--lang",
        "id",
        "--out",
        str(tmp_path),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (pdf,) = tmp_path.glob("*.pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info)[1])  # type: ignore[index]
    assert 2 <= pages <= 6, info
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    font_rows = fonts.splitlines()[2:]
    assert font_rows and all(" yes " in r for r in font_rows), fonts  # every font embedded
    assert "DejaVu" in fonts
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for words in (
        "Laporan bulanan oksigen medis",
        "Ketersediaan",
        "Gangguan bulan ini",
        "T-N1",
        "WITA",
        "Perkiraan",
    ):
        assert words in text, words
    assert "\ufffd" not in text  # no replacement characters
    # Each page rendered to PNG: not blank (several colours, plots included).
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == pages
    from PIL import Image  # matplotlib's dependency

    for png in pngs:
        image = Image.open(png).convert("L")
        inked = sum(image.histogram()[:200])  # pixels darker than light grey
        assert inked > 0.002 * image.width * image.height, png  # not a blank page (a blank one has none)
    # The plots are there: the state strip's green and the availability bars' red on some page.
    seen: set[tuple[int, int, int]] = set()
    for png in pngs:
        seen |= {c for _, c in Image.open(png).convert("RGB").getcolors(maxcolors=1_000_000) or []}  # type: ignore[misc]

    def near(rgb: tuple[int, int, int]) -> bool:
        return any(all(abs(a - b) < 24 for a, b in zip(c, rgb, strict=True)) for c in seen)

    assert near((0x2E, 0x7D, 0x32)) and near((0xC6, 0x28, 0x28)) and near((0xF9, 0xA8, 0x25))


class _Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, thread, f"http://127.0.0.1:{port}"


def test_api_tokens(month_db, inventory_file, tmp_path) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    made = oxyfleet_180("tokens", "create", "--hospital", H_MAKASSAR, env=env)
    assert made.returncode == 0, made.stderr
    hospital_token = made.stdout.strip()
    programme_token = oxyfleet_180("tokens", "create", "--programme", env=env).stdout.strip()
    stored = (tmp_path / "tokens.json").read_text()
    assert hospital_token.split("_", 2)[2] not in stored and "scrypt" in stored  # hashed, never the token

    engine = HealthEngine(month_db, None, inventory_file, long_rp=LONG_POLICY)
    router = report_router(month_db, lambda: engine.inventory, retention_policy=engine.long_rp)
    # loopback=False: what serve_api sets for a non-loopback binding such as 0.0.0.0.
    app = create_app(
        engine, month_db, tokens=TokenStore(tmp_path / "tokens.json"), loopback=False, routers=[router]
    )
    server, thread, base = _serve(app)
    try:
        c = _Client(base)
        own = f"/api/reports/hospital/{urllib.parse.quote(H_MAKASSAR)}?month=2026-10&format=json"
        other = f"/api/reports/hospital/{urllib.parse.quote(H_JAYAPURA)}?month=2026-10&format=json"
        status, body = c.get(own, hospital_token)
        assert status == 200, body
        data = json.loads(body)
        assert data["never_connected"] == ["T-N1"] and data["zone"] == "Asia/Makassar"
        avail, litres, faults = truth(UNITS[0], 2026, 10)
        (c1,) = [x for x in data["units"] if x["unit_id"] == "T-C1"]
        assert (
            abs(c1["availability_pct"] - avail) <= 0.5 and abs(c1["oxygen_litres"] - litres) <= 0.01 * litres
        )
        got = sorted(
            (f["start_ms"], round(f["duration_s"] / 60), f["state"])
            for f in data["faults"]
            if f["unit_id"] == "T-C1"
        )
        assert got == sorted(faults)
        assert c.get(other, hospital_token)[0] == 403
        assert c.get(other)[0] == 401
        assert c.get(other, "oxy_deadbeef_wrong")[0] == 401
        assert c.get(other, programme_token)[0] == 200
        assert c.get("/api/units", hospital_token)[0] == 403
        assert c.get("/api/units")[0] == 401
        assert c.get("/healthz")[0] in (200, 503)  # probes need no token
        status, body = c.get(own.replace("format=json", "format=html&lang=en"), hospital_token)
        assert status == 200 and b"Monthly medical oxygen report" in body
    finally:
        server.should_exit = True
        thread.join(10)


def test_bad_month_is_a_usage_error(month_db, inventory_file, tmp_path) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180("report", "--month", "2026-13", env=env)
    assert done.returncode == 2 and "--month" in done.stderr


def test_by_province_and_source(month_db, inventory_file, tmp_path) -> None:
    env = cli_env(month_db, inventory_file, tmp_path)
    done = oxyfleet_180(
        "report", "--month", "2026-10", "--by", "province", "--province", "papua", "--format", "csv",
        "--out", str(tmp_path / "p"), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = csv.DictReader(io.StringIO(next((tmp_path / "p").glob("province-Papua-*.csv")).read_text()))
    assert row["unit_id"] == "T-C2" and float(row["power_failure_h"]) == pytest.approx(8.0, abs=0.01)
    done = oxyfleet_180(
        "report",
        "--month",
        "2026-10",
        "--by",
        "source",
        "--format",
        "csv",
        "--out",
        str(tmp_path / "s"),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "s").glob("*.csv")
    assert path.name == "source-donor-test-2026-10-id.csv"
    rows = {r["unit_id"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}
    assert set(rows) == {u.uid for u in UNITS} and rows["T-N1"]["never_connected"] == "1"
    # The programme's month is WIB: an hour off WITA's, well within the tolerance of the local figures.
    avail, litres, _ = truth(UNITS[0], 2026, 10)
    assert avail is not None and abs(float(rows["T-C1"]["availability_pct"]) - avail) <= 0.5
    assert abs(float(rows["T-C1"]["oxygen_litres"]) - litres) <= 0.01 * litres


def test_a_unit_that_reported_before_the_raw_period_is_not_never_connected(influx, inventory_file) -> None:
    """Raw readings expire (90 days); the per-minute aggregates the engine kept say the unit connected once."""
    from devices.inventory import load_inventory
    from report.data import Period, read_month
    from store.schema import aggregate_field

    settings = InfluxSettings(url=influx.url, database=influx.database)
    transport = V1Transport(influx.url, influx.database)
    apply_retention(transport, settings)
    transport.close()
    unit = load_inventory(inventory_file).units["T-N1"]
    period = Period.parse("2026-10", WITA)

    def reported() -> set[str]:
        data = read_month(
            influx, {unit.unit_id: unit}, period, now_ms=period.end_ms, retention_policy=LONG_POLICY
        )
        return data.ever_reported

    assert reported() == set()  # nothing stored: never connected
    tags = tag_set(
        dict(zip(UNIT_TAGS, (unit.hospital, unit.kind, unit.model, unit.province, unit.unit_id), strict=True))
    )
    minute = ms(WITA, 2026, 3, 2, 10, 0) * 1_000_000  # long before the raw period: only its aggregate is left
    _write(
        influx,
        [line(Measurement.TELEMETRY_1M, tags, {aggregate_field("purity_pct", "mean"): 93.0}, minute)],
        LONG_POLICY,
    )
    assert reported() == {unit.unit_id}


@pytest.mark.parametrize("month", ["2026-10", "2026-11"])
def test_rollups_and_minutes_give_the_same_figures(month_db, inventory_file, month) -> None:
    """Every scope, read from the daily rollups and again from the minutes alone: the same report.

    October is rolled up whole (a province's and a donor's month in another zone than some hospitals still
    read their edge hours from the minutes); November has no rollup yet (a current month), but its previous
    month has.
    """
    from report.build import BY, scopes
    from report.data import Period, read_month
    from report.figures import build_report
    from report.render import to_csv

    inventory = load_inventory(inventory_file)
    now = ms(WITA, 2026, 11, 2)
    for by in BY:
        for scope in scopes(inventory, by):
            period = Period.parse(month, scope.zone)
            first = next(iter(scope.units.values()))
            args = {
                "hospital": first.hospital if by == "hospital" else None,
                "province": first.province if by == "province" else None,
                "now_ms": now,
                "retention_policy": LONG_POLICY,
            }
            rolled = read_month(month_db, scope.units, period, **args)  # type: ignore[arg-type]
            minutes = read_month(month_db, scope.units, period, rollups=False, **args)  # type: ignore[arg-type]
            assert rolled.rolled_days > 0 and minutes.rolled_days == 0, (by, scope.name)
            assert rolled.seconds == minutes.seconds and rolled.prev_seconds == minutes.prev_seconds
            assert rolled.maintenance_due == minutes.maintenance_due and rolled.readings == minutes.readings
            assert rolled.litres.keys() == minutes.litres.keys()
            for uid, litres in rolled.litres.items():
                assert litres == pytest.approx(minutes.litres[uid], rel=1e-9)
            csvs = [
                to_csv(build_report(by, scope.name, scope.units, data, period, now_ms=now))
                for data in (rolled, minutes)
            ]
            assert csvs[0] == csvs[1], (by, scope.name)


def test_purity_chart_comes_from_the_minute_aggregates(month_db, inventory_file) -> None:
    """T-C1's October: 93 % while delivering, 85 % for 36 hours (10 Oct 08:00 to 11 Oct 20:00), not
    delivering while off or without power: exactly those 10-minute means, from the long-term aggregates
    (the raw readings of such a month may have expired)."""
    from report.data import Period, read_month

    unit = load_inventory(inventory_file).units["T-C1"]
    period = Period.parse("2026-10", WITA)
    data = read_month(
        month_db, {unit.unit_id: unit}, period, now_ms=period.end_ms, retention_policy=LONG_POLICY
    )
    values = [round(p, 6) for p in data.purity[unit.unit_id]]
    assert set(values) == {85.0, 93.0}
    assert values.count(85.0) == 36 * 6
    # 31 days of 10-minute buckets, less 12 h without power and 2 days off.
    assert len(values) == 31 * 144 - 12 * 6 - 2 * 144
