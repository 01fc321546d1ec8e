"""Line protocol: escaping and the impossibility of injecting a point through any string we store."""

from __future__ import annotations

from ingest.decode import ConnectionChange, Decoder, Inbound, Reason, Rejection
from store.lineproto import KEY_WINDOW_NS, LineBuilder, StaticTags, UnitTags, escape_field_string, escape_tag

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
    assert 0 <= int(rest.rsplit(" ", 1)[1]) - (NOW_NS - NOW_NS % KEY_WINDOW_NS) < KEY_WINDOW_NS


def test_a_redelivered_record_keeps_its_time_and_distinct_records_do_not_collide() -> None:
    """Issue 19: rejected, late_data and unit_connection points are keyed by the message, not the clock."""
    builder = LineBuilder()
    minute = NOW_NS - NOW_NS % KEY_WINDOW_NS

    def stamp(line: str) -> int:
        return int(line.rsplit(" ", 1)[1])

    first = Rejection(Reason.NOT_JSON, "x", "t", b"abc", minute + 1_000_000_000)
    again = Rejection(Reason.NOT_JSON, "x", "t", b"abc", minute + 41_000_000_000)  # redelivered 40 s later
    assert stamp(builder.rejected(first)) == stamp(
        builder.rejected(again)
    )  # received_at differs, the time not
    assert minute <= stamp(builder.rejected(first)) < minute + KEY_WINDOW_NS  # in the minute received
    others = {
        stamp(builder.rejected(Rejection(Reason.NOT_JSON, f"x{i}", "t", b"abc", minute))) for i in range(500)
    }
    assert len(others) == 500
    late = [builder.late_data("concentrator", "U1", 1, 2, 2, minute + d) for d in (0, 30 * 10**9)]
    assert late[0] == late[1]  # keyed by the unit and its earliest late reading (issue 16)
    online = ConnectionChange("concentrator", "U1", True, minute + 5)
    online_again = ConnectionChange("concentrator", "U1", True, minute + 20 * 10**9)
    assert builder.connection(online) == builder.connection(online_again)
    assert stamp(builder.connection(online)) == minute + 1_000_000
    offline = ConnectionChange("concentrator", "U1", False, minute + 10 * 10**9)
    assert stamp(builder.connection(offline)) == minute  # a drop within the minute is kept beside it


def test_numbers_are_always_float_fields() -> None:
    decoded = Decoder().decode(
        Inbound("oxygen/concentrator/U1/telemetry", b'{"ts":1764140400000,"flow_lpm":5,"seq":7}', NOW_NS)
    )
    line = LineBuilder().telemetry(decoded.readings[0])
    assert " flow_lpm=5.0,seq=7i " in line
