"""The report's pure parts: zones, local formats, tokens, and figures from given stored sums."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from devices.catalog import load_catalog
from devices.inventory import Unit
from health.tokens import Access, TokenError, TokenStore
from report.data import Event, MonthData, Period
from report.figures import build_report
from report.i18n import Text
from report.zones import province_zone, zone_for
from store.schema import STATES, State

WITA = ZoneInfo("Asia/Makassar")


def unit(uid: str, model: str = "OC-5-DONOR", commissioned: date = date(2025, 1, 1)) -> Unit:
    spec = load_catalog()[model]
    return Unit(uid, spec.kind, model, "SN", "RS A", "Sulawesi Selatan", "donor-x", commissioned, 0.0, spec)


@pytest.mark.parametrize(
    ("province", "zone"),
    [
        ("DKI Jakarta", "Asia/Jakarta"),
        ("Kalimantan Barat", "Asia/Jakarta"),
        ("Kalimantan Timur", "Asia/Makassar"),
        ("Sulawesi Selatan", "Asia/Makassar"),
        ("Nusa Tenggara Timur", "Asia/Makassar"),
        ("Bali", "Asia/Makassar"),
        ("Maluku Utara", "Asia/Jayapura"),
        ("Papua Barat", "Asia/Jayapura"),
    ],
)
def test_province_zones(province: str, zone: str) -> None:
    assert province_zone(province) == zone


def test_hospital_zone_override() -> None:
    assert zone_for("RS X", "DKI Jakarta", {"RS X": "Asia/Jayapura"}).key == "Asia/Jayapura"
    assert zone_for("RS Y", "DKI Jakarta", {"RS X": "Asia/Jayapura"}).key == "Asia/Jakarta"


def test_local_formats() -> None:
    at = 1_791_000_000_000  # 2026-10-03 04:00 UTC
    id_, en = Text("id", WITA), Text("en", WITA)
    assert id_.number(1234567.5, 1) == "1.234.567,5" and en.number(1234567.5, 1) == "1,234,567.5"
    assert id_.month(2026, 10) == "Oktober 2026" and en.month(2026, 10) == "October 2026"
    assert id_.datetime(at) == "3 Okt 2026 12:00 WITA" and en.datetime(at) == "3 Oct 2026 12:00 WITA"
    assert en.duration(90_000) == "1 d 1 h" and en.duration(None) == "ongoing"
    with pytest.raises(ValueError, match="language"):
        Text("fr", WITA)  # type: ignore[arg-type]


def test_tokens_are_stored_hashed_and_scoped(tmp_path) -> None:
    store = TokenStore(tmp_path / "t.json")
    tid, token = store.create("hospital", "RS A")
    assert token.split("_", 2)[2] not in (tmp_path / "t.json").read_text()
    assert (tmp_path / "t.json").stat().st_mode & 0o077 == 0
    access = store.check(token)
    assert access == Access("hospital", "RS A", tid)
    assert access.allows("hospital", "rs a") and not access.allows("hospital", "RS B")
    assert not access.allows("province", "Sulawesi Selatan") and not access.allows("source", "donor-x")
    assert store.check(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert store.check("oxy_nothere_abc") is None and store.check("garbage") is None
    _, ptoken = store.create("province", "Papua")
    prov = store.check(ptoken)
    assert (
        prov is not None
        and prov.allows("hospital", "RS J", "Papua")
        and not prov.allows("hospital", "RS A", "Bali")
    )
    assert store.revoke(tid) and store.check(token) is None and not store.revoke(tid)
    with pytest.raises(TokenError):
        store.create("hospital", " ")
    (tmp_path / "t.json").write_text("[1]")
    with pytest.raises(TokenError):
        store.list()


def _secs(**kw: float) -> dict[str, float]:
    return {s: float(kw.get(s, 0.0)) for s in STATES}


def test_figures_worst_first_never_connected_and_faults() -> None:
    period = Period(2026, 10, WITA)
    units = {u.unit_id: u for u in (unit("A"), unit("B"), unit("N"), unit("D", "DOCS-PSA-500"))}
    start = period.start_ms
    data = MonthData(
        seconds={
            "A": _secs(in_spec=900, underperforming=100, off=500),
            "B": _secs(in_spec=500, power_failure=500),
            "N": _secs(no_data=1000),
            "D": _secs(in_spec=1000),
        },
        prev_seconds={"A": _secs(in_spec=1)},
        litres={"D": 500.0 * 1440 * 31},
        ever_reported={"A", "B", "D"},
        events=[
            Event("B", start + 3600_000, State.POWER_FAILURE, "power_failure"),
            Event("B", start + 7200_000, State.IN_SPEC, ""),
            Event("A", start + 60_000, State.UNDERPERFORMING, "purity_low"),
        ],
    )
    rep = build_report("hospital", "RS A", units, data, period)
    assert [r.unit.unit_id for r in rep.units] == ["B", "A", "D"]
    assert [u.unit_id for u in rep.never_connected] == ["N"]
    assert (
        rep.units[1].availability_pct == pytest.approx(90.0) and rep.units[1].prev_availability_pct == 100.0
    )
    assert rep.availability_pct == pytest.approx(100 * 2400 / 3000)  # booked time, not a mean of shares
    assert [(f.unit_id, f.duration_s) for f in rep.faults] == [("A", None), ("B", 3600.0)]
    # A DOCS plant at its rated flow all month: the model's 700 patients a day (an estimate).
    assert rep.patients_per_day_docs == pytest.approx(700.0)


def test_commissioned_mid_month_books_from_commissioning() -> None:
    period = Period(2026, 10, WITA)
    u = unit("C", commissioned=date(2026, 10, 16))
    rep = build_report(
        "hospital", "RS A", {"C": u}, MonthData(seconds={"C": _secs(in_spec=60)}, ever_reported={"C"}), period
    )
    assert rep.units[0].days_booked == pytest.approx(16.0)


def test_period_parse() -> None:
    p = Period.parse("2026-12", WITA)
    assert p.end.year == 2027 and p.previous().month == 11 and p.hours == 744
    with pytest.raises(ValueError, match="2026-11"):
        Period.parse("2026-13", WITA)


def test_a_unit_that_moved_is_in_the_report_of_each_hospital_it_belonged_to(tmp_path) -> None:
    import csv
    import io

    from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
    from report.build import scopes

    unit = load_inventory(SAMPLE_INVENTORY).units["OC-JKT-00001"]
    rows = list(csv.reader(io.StringIO(write_inventory([unit]))))
    header, row = rows[0], rows[1]
    moved = list(row)
    moved[header.index("hospital")] = "RSUD Tujuan Pindah"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [[*header, "valid_from"], [*row, ""], [*moved, "2026-11-15T00:00:00Z"]]
    )
    path = tmp_path / "inventory.csv"
    path.write_text(out.getvalue())
    names = {s.name: set(s.units) for s in scopes(load_inventory(path), "hospital")}
    assert names == {unit.hospital: {unit.unit_id}, "RSUD Tujuan Pindah": {unit.unit_id}}
