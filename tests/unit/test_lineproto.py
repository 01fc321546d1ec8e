"""Line protocol: escaping and the impossibility of injecting a point through any string we store."""

from __future__ import annotations

from ingest.decode import Decoder, Inbound, Reason, Rejection
from store.lineproto import LineBuilder, StaticTags, UnitTags, escape_field_string, escape_tag

NOW_NS = 1764140400000 * 1_000_000


def test_tag_escaping() -> None:
    assert escape_tag("RSUD Dr. Soetomo, Surabaya=1") == "RSUD\\ Dr.\\ Soetomo\\,\\ Surabaya\\=1"
    assert escape_tag("a\nb") == "a\\nb"
    assert escape_tag("back\\slash") == "back\\\\slash"


def test_field_string_escaping() -> None:
    assert escape_field_string('say "hi"\\') == 'say \\"hi\\"\\\\'
    assert escape_field_string("line1\nline2\r") == "line1\\nline2\\r"


def test_inventory_tags_are_escaped_and_sorted() -> None:
    tags = StaticTags(
        {"U1": UnitTags(hospital="RS Kupang, NTT", model="OC 5", province="Nusa Tenggara Timur")}
    )
    decoded = Decoder().decode(
        Inbound("oxygen/concentrator/U1/telemetry", b'{"ts":1764140400000,"flow_lpm":5}', NOW_NS)
    )
    line = LineBuilder(tags).telemetry(decoded.readings[0])
    assert line.startswith(
        "telemetry,hospital=RS\\ Kupang\\,\\ NTT,kind=concentrator,model=OC\\ 5,province=Nusa\\ Tenggara\\ Timur,unit_id=U1 "
    )


def test_hostile_rejected_record_stays_one_line() -> None:
    hostile = b'{"ts": 1}\ntelemetry,unit_id=FAKE purity_pct=99 1\n" ,=\\'
    rej = Rejection(
        Reason.NOT_JSON, 'detail with "quotes"\nand newline', 'oxygen/x,y=z "q"\n/t', hostile, NOW_NS, "U1"
    )
    line = LineBuilder(instance="test").rejected(rej)
    assert "\n" not in line and "\r" not in line
    measurement_and_tags, rest = line.split(" ", 1)
    assert measurement_and_tags == "rejected,instance=test,reason=not_json"
    assert rest.endswith(f" {NOW_NS}")


def test_rejected_records_get_unique_timestamps() -> None:
    builder = LineBuilder()
    rej = Rejection(Reason.NOT_JSON, "x", "t", b"", NOW_NS)
    stamps = {builder.rejected(rej).rsplit(" ", 1)[1] for _ in range(5)}
    assert len(stamps) == 5


def test_numbers_are_always_float_fields() -> None:
    decoded = Decoder().decode(
        Inbound("oxygen/concentrator/U1/telemetry", b'{"ts":1764140400000,"flow_lpm":5,"seq":7}', NOW_NS)
    )
    line = LineBuilder().telemetry(decoded.readings[0])
    assert " flow_lpm=5.0,seq=7i " in line
